"""The neural codec's public interface: ``encode`` an image or volume at one lambda into
bytes, ``decode`` bytes alone back into the array.

Output dtype policy: an integer input (e.g. int16 HU) decodes to the same integer dtype,
rounded to the nearest integer and clipped to the dtype's range; a float input decodes to
float32. Either way ``decode(encode(x).data)`` is bit for bit ``encode(x).reconstruction``:
the encoder computes its reconstruction by the very function the decoder runs, on the same
dequantised tensors and latents (same machine and thread count; across platforms the
synthesis is float arithmetic and may differ in the last bits, while the entropy decoding,
which must not, is integer: see ``latent_coding``).

Spacing does not change the coding (the grids are per-voxel); it is checked and recorded.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import constriction
import numpy as np
import torch

from volinr import limits
from volinr.errors import InputError
from volinr.neural_codec.architecture import (
    architecture_of,
    coded_tensor_count,
    integer_entropy_model,
    settings_of,
)
from volinr.neural_codec.bitstream import (
    MAX_AXIS,
    MAX_VOXELS,
    OUTPUT_DTYPES,
    Header,
    TensorCoding,
    frame,
    pack_header,
    payload_to_words,
    unframe,
    unpack_header,
    words_to_payload,
)
from volinr.neural_codec.block_training import memory_plan
from volinr.neural_codec.geometry import latent_count
from volinr.neural_codec.latent_coding import (
    LatentRangeError,
    decode_latents,
    encode_latents,
    half_width,
    latent_symbols,
    level_indices,
)
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.network_quantisation import measured_mse, quantise_network
from volinr.neural_codec.parameter_coding import (
    QuantisedParameter,
    decode_parameter,
    encode_parameters,
    parameter_bits,
)
from volinr.neural_codec.regions import (
    decoding_bytes,
    decoding_plans,
    latent_bits_in_blocks,
    quantisation_sample,
    refinement_sample,
    synthesise_block,
)
from volinr.neural_codec.settings import CodecSettings
from volinr.neural_codec.training import train

log = logging.getLogger(__name__)

MIN_AXIS = 2


@dataclass(frozen=True)
class Encoded:
    data: bytes
    reconstruction: np.ndarray
    record: dict[str, Any]


# --- checks --------------------------------------------------------------------------------


def check_image(image: Any) -> tuple[np.ndarray, str]:
    """The image as an array and its output dtype, or a ValueError saying what is wrong."""
    array = np.asarray(image)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"expected an integer or float image, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"expected a 2D slice or a 3D volume, got {array.ndim} dimensions")
    if min(array.shape) < MIN_AXIS or max(array.shape) > MAX_AXIS or array.size > MAX_VOXELS:
        raise ValueError(
            f"image shape {array.shape}: every axis needs {MIN_AXIS} to {MAX_AXIS} samples "
            f"and at most {MAX_VOXELS} voxels in all"
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("the image holds NaN or Inf values")
    output = "float32" if array.dtype.kind == "f" else array.dtype.name
    if output not in OUTPUT_DTYPES:
        raise ValueError(f"cannot code dtype {array.dtype}; supported: {', '.join(OUTPUT_DTYPES)}")
    return array, output


def _check_arguments(spacing_mm, lam, seed, settings, ndim) -> list[float] | None:
    if not isinstance(settings, CodecSettings):
        raise TypeError(f"settings must be a CodecSettings, got {type(settings).__name__}")
    if not isinstance(lam, int | float) or not 0 < lam < math.inf:
        raise ValueError(f"lambda must be a positive number, got {lam!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if spacing_mm is None:
        return None
    spacing = [float(v) for v in spacing_mm]
    if len(spacing) != ndim or not all(0 < v < math.inf for v in spacing):
        raise ValueError(f"spacing_mm must be {ndim} positive numbers, got {spacing_mm!r}")
    return spacing


# --- shared by encoder and decoder ---------------------------------------------------------


def _empty_model(shape: tuple[int, ...], settings: CodecSettings) -> LatentCodecModel:
    """The networks to decode with: their values come from the file, the latents too (as
    integer grids), so the float latents are dropped (0.36 GB for a 300x512x512 volume)."""
    with torch.random.fork_rng():  # the initial values are all replaced; leave the RNG alone
        model = LatentCodecModel(shape, settings)
    _drop_float_latents(model)
    return model


def _drop_float_latents(model: LatentCodecModel) -> None:
    for theta in model.latents:
        theta.data = theta.data.new_empty(0)


@torch.no_grad()
def reconstruct(
    model: LatentCodecModel,
    parameters: list[QuantisedParameter],
    grids: list[np.ndarray],
    value_range: tuple[float, float],
    output_dtype: str,
) -> np.ndarray:
    """The decoded array from dequantised tensors and integer latents (both ends run this)."""
    for parameter, tensor in zip(parameters, model.coded_parameters().values(), strict=True):
        tensor.copy_(parameter.values())
    low, high = value_range
    plans = decoding_plans(model)
    if plans is None:
        latents = [torch.from_numpy(grid.astype(np.float32)) for grid in grids]
        normalised = model.synthesise(latents).numpy().astype(np.float64)
        return to_output_dtype(low + normalised * (high - low), output_dtype)
    output = np.empty(model.shape, dtype=output_dtype)
    for plan in plans:
        crops = [
            torch.from_numpy(grid[box.slices].astype(np.float32))
            for grid, box in zip(grids, plan.crops, strict=True)
        ]
        normalised = synthesise_block(model, crops, plan).numpy().astype(np.float64)
        output[plan.block.slices] = to_output_dtype(low + normalised * (high - low), output_dtype)
    return output


def normalised_float32(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """(array - low) / (high - low) in float64, stored as float32, a slice at a time (no
    float64 copy of a whole volume)."""
    out = np.empty(array.shape, np.float32)
    for index in range(array.shape[0]):
        out[index] = (array[index].astype(np.float64) - low) / (high - low)
    return out


class NonFiniteSynthesis(ValueError):
    """The networks gave NaN or Inf for some voxel: never cast (NaN would become 0)."""


def to_output_dtype(values: np.ndarray, output_dtype: str) -> np.ndarray:
    if not np.all(finite := np.isfinite(values)):
        raise NonFiniteSynthesis(f"{finite.size - finite.sum()} voxel(s) NaN or Inf")
    if output_dtype == "float32":
        return values.astype(np.float32)
    info = np.iinfo(output_dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(output_dtype)


# --- encoder -------------------------------------------------------------------------------


def encode(
    image: np.ndarray,
    spacing_mm: Sequence[float] | None,
    settings: CodecSettings,
    lam: float,
    seed: int = 0,
    verify: bool = True,
    device: torch.device | str = "cpu",
) -> Encoded:
    """Fit the codec to ``image`` at rate-distortion weight ``lam`` and write its file.

    ``verify`` decodes the bytes once more and fails if they do not give the reconstruction.
    ``device`` is where the training runs; everything after it runs on the CPU.
    """
    start = time.perf_counter()
    array, output_dtype = check_image(image)
    spacing = _check_arguments(spacing_mm, lam, seed, settings, array.ndim)
    shape = tuple(array.shape)
    low, high = (float(np.float32(v)) for v in (array.min(), array.max()))
    record: dict[str, Any] = {
        "shape": list(shape),
        "spacing_mm": spacing,
        "lambda": lam,
        "seed": seed,
        "settings": settings.as_dict(),
        "value_range": [low, high],
        "output_dtype": output_dtype,
    }
    if low == high:
        data = frame(pack_header(Header(shape, output_dtype, (low, high), None)), b"")
        reconstruction = to_output_dtype(np.full(shape, low), output_dtype)
        record.update(constant=True, bytes=len(data), iterations=0, curve=[])
        record["seconds"] = {"total": time.perf_counter() - start}
        return Encoded(data, reconstruction, record)

    target = torch.from_numpy(normalised_float32(array, low, high))
    output_bias, target = float(target.mean()), target.to(device)
    block_edge = memory_plan(
        shape, latent_count(shape, settings.levels), array.dtype.itemsize, settings.memory_gb
    )
    record["training_block_edge"] = block_edge

    def make_model(model_seed: int) -> LatentCodecModel:
        with torch.random.fork_rng():
            torch.manual_seed(model_seed)
            return LatentCodecModel(shape, settings, output_bias=output_bias).to(device)

    model, training = train(make_model, target, lam, settings, seed, block_edge)
    # Quantisation and coding run on the CPU whatever the training device: the file, and the
    # reconstruction it decodes to, must not depend on where the encoder trained.
    model, target = model.cpu(), target.cpu()

    quantise_start = time.perf_counter()
    with torch.no_grad():
        latents = [torch.round(y) for y in model.scaled_latents()]
    plans = decoding_plans(model)
    sample = None if plans is None else quantisation_sample(plans)
    float_mse = measured_mse(model, latents, target, sample)
    passes = settings.network_refinement_passes
    refinement = refinement_sample(model) if passes else None
    parameters = quantise_network(model, latents, target, lam, sample, passes, refinement)
    quantised_mse = measured_mse(model, latents, target, sample)
    if plans is None:
        with torch.no_grad():
            bits_by_level = [bits.item() for bits in model.latent_bits_by_level(latents)]
    else:
        bits_by_level = latent_bits_in_blocks(model, latents, plans)
    estimated_latent_bits = sum(bits_by_level)
    quantise_seconds = time.perf_counter() - quantise_start

    coding_start = time.perf_counter()
    # int32 grids (every latent lies within +-MAX_LATENT); the float copies, the target and
    # the trained latents are no longer needed: a volume's coding then holds one copy
    grids = [latent.numpy().astype(np.int32) for latent in latents]
    del latents, target
    _drop_float_latents(model)
    payload, width, parameter_bits_actual, coded_bits = _code(grids, parameters, model)
    header = Header(
        shape,
        output_dtype,
        (low, high),
        architecture_of(settings),
        tuple(TensorCoding(p.exponent, p.scale_index, p.width_bits) for p in parameters),
        width,
    )
    header_bytes = pack_header(header)
    data = frame(header_bytes, payload)
    coding_seconds = time.perf_counter() - coding_start

    try:
        reconstruction = reconstruct(
            _empty_model(shape, settings), parameters, grids, (low, high), output_dtype
        )
    except NonFiniteSynthesis as err:  # the training diverged: a numerical failure (exit 3)
        raise FloatingPointError(f"the trained neural codec is not finite: {err}") from None
    latent_total = int(sum(g.size for g in grids))
    nonzero = int(sum(np.count_nonzero(g) for g in grids))
    del grids  # the verifying decode builds its own
    if verify and not np.array_equal(decode(data, "the encoder's own output"), reconstruction):
        raise RuntimeError("the neural codec's file does not decode to its reconstruction")

    voxels = math.prod(shape)
    estimated_parameter_bits = sum(parameter_bits(p) for p in parameters)
    payload_bits = 8 * len(payload)
    record.update(
        constant=False,
        bytes=len(data),
        bits_per_voxel=8 * len(data) / voxels,
        iterations=training.iterations,
        curve=training.curve,
        training=training.as_dict(),
        training_device=str(torch.device(device)),
        # the synthesis's MSE (normalised image; on the quantisation's sample of a large
        # volume) with float networks and with the coded ones: what quantising them cost
        network_quantisation={"float_mse": float_mse, "quantised_mse": quantised_mse},
        macs_per_voxel=model.macs_per_voxel(),
        latent_count=latent_total,
        nonzero_latents=nonzero,
        latent_half_width=width,
        parameter_exponents={p.name: p.exponent for p in parameters},
        parameter_count=int(sum(p.integers.size for p in parameters)),
        bits={
            "estimated": {
                "latents": estimated_latent_bits,
                "latents_by_level": bits_by_level,  # finest grid first
                "parameters": estimated_parameter_bits,
                "total": estimated_latent_bits + estimated_parameter_bits,
            },
            "actual": {
                # as coded (whole 32-bit words); the file drops the stream's trailing zero
                # bytes, which the decoder reads back as zeros: a run of the likeliest
                # symbol (d = 0 is the first of every table row) at the end is then free
                "parameters": parameter_bits_actual,
                "latents": coded_bits - parameter_bits_actual,
                "coded": coded_bits,
                "trailing_zero_bits_dropped": coded_bits - payload_bits,
                "payload": payload_bits,
                "header": 8 * len(header_bytes),
                "framing": 8 * (len(data) - len(payload) - len(header_bytes)),
                "total": 8 * len(data),
            },
        },
        seconds={
            "training": training.seconds,
            "quantisation": quantise_seconds,
            "coding": coding_seconds,
            "total": time.perf_counter() - start,
        },
    )
    return Encoded(data, reconstruction, record)


def _code(grids, parameters, model: LatentCodecModel) -> tuple[bytes, int, int, int]:
    """The range-coded payload of the parameters and the latents; the latents' half width,
    the parameters' coded bits, all coded bits. Its tables and symbols are freed on return."""
    settings = model.settings
    arm = integer_entropy_model(parameters, settings)
    indices = level_indices(model.grid_shapes, model.context_offsets, settings.coarser_levels())
    rows, deltas = latent_symbols(grids, indices, arm)
    width = half_width(deltas)
    encoder = constriction.stream.queue.RangeEncoder()
    encode_parameters(encoder, parameters)
    parameter_bits_actual = encoder.num_bits()
    encode_latents(encoder, rows, deltas, width, indices)
    payload = words_to_payload(encoder.get_compressed())
    return payload, width, parameter_bits_actual, encoder.num_bits()


# --- decoder -------------------------------------------------------------------------------


def decode(data: bytes, source: str) -> np.ndarray:
    """The array a neural codec file holds; ``source`` names the file in error messages."""
    header_bytes, payload = unframe(data, source)
    header = unpack_header(header_bytes, source, coded_tensor_count)
    low, high = header.value_range
    if header.architecture is None:
        return to_output_dtype(np.full(header.shape, low), header.output_dtype)
    settings = settings_of(header.architecture)
    limits.check_memory(
        f"{source}: decoding a {'x'.join(map(str, header.shape))} {header.output_dtype} image",
        decoding_bytes(header.shape, settings.levels, header.output_dtype),
        "decode it on a machine with more memory",
    )
    model = _empty_model(header.shape, settings)
    decoder = constriction.stream.queue.RangeDecoder(payload_to_words(payload))
    try:
        parameters = []
        for (name, tensor), t in zip(model.coded_parameters().items(), header.tensors, strict=True):
            shape = tuple(tensor.shape)
            coding = (t.exponent, t.scale_index, t.width_bits)
            parameters.append(decode_parameter(decoder, name, shape, *coding))
        arm = integer_entropy_model(parameters, settings)
        indices = level_indices(model.grid_shapes, model.context_offsets, settings.coarser_levels())
        grids = decode_latents(decoder, model.grid_shapes, indices, arm, header.latent_half_width)
    except (LatentRangeError, ValueError, RuntimeError, AssertionError) as err:
        # constriction reports a stream that contradicts the model with an AssertionError
        raise InputError(f"{source}: the coded data cannot be decoded ({err})") from None
    try:
        return reconstruct(model, parameters, grids, (low, high), header.output_dtype)
    except NonFiniteSynthesis as err:  # an encoder never writes such a file: crafted or damaged
        raise InputError(f"{source}: not a decodable image: {err}") from None
