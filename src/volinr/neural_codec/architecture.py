"""The architecture a file's header names, the codec settings it stands for, and the integer
entropy model its decoded parameters make (both ends)."""

from __future__ import annotations

import numpy as np

from volinr.neural_codec.bitstream import Architecture
from volinr.neural_codec.latent_coding import IntegerEntropyModel, IntegerLayer
from volinr.neural_codec.parameter_coding import QuantisedParameter
from volinr.neural_codec.settings import CodecSettings


def architecture_of(settings: CodecSettings) -> Architecture:
    return Architecture(
        settings.levels,
        settings.context_size,
        settings.arm_layers,
        settings.arm_width,
        settings.residual_channels,
        settings.residual_layers,
        settings.synthesis_widths,
        settings.context_coarser,
        settings.learned_upsampling,
        settings.activation,
        settings.synthesis_stabiliser,
        settings.upsampling_per_level,
        settings.context_coarser_levels if settings.context_coarser else 1,  # as the file holds it
        settings.arm_stabiliser,
    )


def settings_of(architecture: Architecture) -> CodecSettings:
    a = architecture
    return CodecSettings.make(
        levels=a.levels,
        synthesis_widths=a.synthesis_widths,
        residual_channels=a.residual_channels,
        residual_layers=a.residual_layers,
        activation=a.activation,
        context_size=a.context_size,
        context_coarser=a.context_coarser,
        arm_layers=a.arm_layers,
        arm_width=a.arm_width,
        learned_upsampling=a.learned_upsampling,
        synthesis_stabiliser=a.synthesis_stabiliser,
        upsampling_per_level=a.upsampling_per_level,
        context_coarser_levels=a.context_coarser_levels,
        arm_stabiliser=a.arm_stabiliser,
    )


def coded_tensor_count(architecture: Architecture, ndim: int) -> int:
    """How many tensors the file codes for this architecture (``coded_parameters``' length)."""
    a = architecture
    synthesis = 2 * (len(a.synthesis_widths) + 1) + int(a.synthesis_stabiliser)
    synthesis += 2 * a.residual_layers + 2
    entropy_model = 2 * (a.arm_layers + 1) + int(a.arm_stabiliser)
    return int(a.learned_upsampling) + synthesis + entropy_model


def integer_entropy_model(
    parameters: list[QuantisedParameter], settings: CodecSettings
) -> IntegerEntropyModel:
    arm = {p.name: p for p in parameters if p.name.startswith("arm.")}

    def layer(name: str, bias: QuantisedParameter | None) -> IntegerLayer:
        w = arm[f"{name}.weight"]
        if bias is None:  # the stabiliser has none
            return IntegerLayer(w.integers.reshape(w.shape), w.exponent, np.zeros(2, np.int64), 0)
        return IntegerLayer(w.integers.reshape(w.shape), w.exponent, bias.integers, bias.exponent)

    layers = [layer(f"arm.{i}", arm[f"arm.{i}.bias"]) for i in range(settings.arm_layers + 1)]
    stabiliser = layer("arm.stabiliser", None) if settings.arm_stabiliser else None
    return IntegerEntropyModel(layers, settings.context_size, stabiliser)
