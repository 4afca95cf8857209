"""Quantised network parameters and their range coding.

A tensor quantised with step 2^-e is stored as integers q = round(w 2^e); its integers are
coded i.i.d. under a zero-mean Laplace whose scale the encoder picks from
``laplace.parameter_log_scale``'s grid (the one giving the fewest bits), with the same
integer tables as the latents, over the symbols [-(2^k - 1), 2^k - 1] for the smallest k that
holds them. Its header entry is (e, scale index, k); k = 0 means an all-zero tensor and codes
nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np
import torch

from volinr.neural_codec.laplace import (
    PARAMETER_LOG_SCALE_MIN,
    PARAMETER_LOG_SCALE_STEP,
    PARAMETER_LOG_SCALE_STEPS,
    parameter_pmf,
    table_bits,
)

MAX_EXPONENT = 24
MAX_WIDTH_BITS = 14  # |q| < 2^14


@dataclass(frozen=True)
class QuantisedParameter:
    """One coded tensor: integers with step 2^-exponent, and the scale index they are coded
    under."""

    name: str
    shape: tuple[int, ...]
    exponent: int
    integers: np.ndarray  # int64, flat
    scale_index: int = 0

    @property
    def width_bits(self) -> int:
        return int(np.abs(self.integers).max(initial=0)).bit_length()

    @property
    def half_width(self) -> int:
        """The coded symbol range is [-half_width, half_width]."""
        return (1 << self.width_bits) - 1

    def values(self) -> torch.Tensor:
        """The dequantised tensor (exact in float32: |q| < 2^24 and a power-of-two step)."""
        step = 2.0**-self.exponent
        return torch.from_numpy((self.integers * step).astype(np.float32)).reshape(self.shape)


def quantise(name: str, tensor: torch.Tensor, exponent: int) -> QuantisedParameter | None:
    """The tensor on the 2^-exponent grid, or None when some integer would exceed the coder's
    range."""
    values = tensor.detach().to(torch.float64).cpu().numpy().reshape(-1)
    integers = np.rint(values * 2.0**exponent)
    if not np.all(np.abs(integers) < 1 << MAX_WIDTH_BITS):
        return None
    integers = integers.astype(np.int64)
    quantised = QuantisedParameter(name, tuple(tensor.shape), exponent, integers)
    return with_best_scale(quantised)


def with_best_scale(parameter: QuantisedParameter) -> QuantisedParameter:
    if parameter.half_width == 0:
        return parameter
    mean_abs = float(np.abs(parameter.integers).mean())
    guess = (math.log(max(mean_abs, 1e-3)) - PARAMETER_LOG_SCALE_MIN) / PARAMETER_LOG_SCALE_STEP
    centre = int(np.clip(round(guess), 0, PARAMETER_LOG_SCALE_STEPS - 1))
    candidates = range(max(0, centre - 1), min(PARAMETER_LOG_SCALE_STEPS, centre + 2))
    best = min(candidates, key=lambda index: _bits(parameter, index))
    return QuantisedParameter(
        parameter.name, parameter.shape, parameter.exponent, parameter.integers, best
    )


def _bits(parameter: QuantisedParameter, scale_index: int) -> float:
    width = parameter.half_width
    pmf = parameter_pmf(scale_index, width)
    return table_bits(pmf, parameter.integers + width)


def parameter_bits(parameter: QuantisedParameter) -> float:
    """Ideal code length in bits of the tensor's integers under its coding model."""
    if parameter.half_width == 0:
        return 0.0
    return _bits(parameter, parameter.scale_index)


def encode_parameters(
    encoder: constriction.stream.queue.RangeEncoder, parameters: list[QuantisedParameter]
) -> None:
    for parameter in parameters:
        width = parameter.half_width
        if width == 0:
            continue
        model = constriction.stream.model.Categorical(
            parameter_pmf(parameter.scale_index, width), perfect=False
        )
        encoder.encode((parameter.integers + width).astype(np.int32), model)


def decode_parameter(
    decoder: constriction.stream.queue.RangeDecoder,
    name: str,
    shape: tuple[int, ...],
    exponent: int,
    scale_index: int,
    width_bits: int,
) -> QuantisedParameter:
    count = math.prod(shape)
    width = (1 << width_bits) - 1
    if width == 0:
        integers = np.zeros(count, dtype=np.int64)
    else:
        model = constriction.stream.model.Categorical(
            parameter_pmf(scale_index, width), perfect=False
        )
        integers = decoder.decode(model, count).astype(np.int64) - width
    return QuantisedParameter(name, shape, exponent, integers, scale_index)
