"""The neural codec's settings: architecture and training, one frozen, validated record.

Everything the decoder needs from here (the architecture fields) is written into each file's
header; the training fields only shape the encoder's search. Defaults and documentation live
in the config schema's ``neural_codec`` section; this record checks the limits the file
format and the decoder rely on, whoever builds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

ACTIVATIONS = ("relu", "gelu")
NOISES = ("uniform", "gaussian")
FINAL_ROUNDINGS = ("ste", "hard")
OPTIMISERS = ("adam", "soap")
MAX_LEVELS = 12
MAX_CONTEXT_SIZE = 32
MAX_WIDTH = 64
MAX_LAYERS = 4


@dataclass(frozen=True)
class CodecSettings:
    """Architecture and training of one overfitted latent-grid codec (Cool-chic / C3 family)."""

    # Every field's type, range, default and meaning: the config schema's neural_codec section
    # (workflow/schemas/config.schema.yaml); ``make`` fills in its defaults.
    # --- architecture (written into the file) ---
    levels: int
    synthesis_widths: tuple[int, ...]
    residual_channels: int
    residual_layers: int
    activation: str
    context_size: int
    context_coarser: bool
    context_coarser_levels: int
    arm_layers: int
    arm_stabiliser: bool
    arm_width: int
    learned_upsampling: bool
    upsampling_per_level: bool
    synthesis_stabiliser: bool
    # --- training (encoder only) ---
    iterations: int
    learning_rate: float
    noise_fraction: float
    soft_round_fraction: float
    soft_round_start: float
    soft_round_end: float
    soft_round_noise: str
    gaussian_noise_start: float
    gaussian_noise_end: float
    final_rounding: str
    network_optimiser: str
    ste_learning_rate_factor: float
    latent_gain: float
    log_every: int
    warmup_candidates: int
    warmup_iterations: int
    restart_factor: float
    warmup_distortion_only: bool
    latent_learning_rate_factor: float
    memory_gb: float
    network_refinement_passes: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "synthesis_widths", tuple(int(w) for w in self.synthesis_widths))
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid neural codec settings: " + "; ".join(problems))

    def _problems(self):
        def integer(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{name} must be an integer in [{low}, {high}], got {value!r}")

        problems: list[str] = []
        integer("levels", 1, MAX_LEVELS)
        integer("residual_channels", 1, MAX_WIDTH)
        integer("residual_layers", 0, MAX_LAYERS)
        integer("context_size", 0, MAX_CONTEXT_SIZE)
        integer("context_coarser_levels", 1, MAX_LEVELS - 1)
        integer("arm_layers", 0, MAX_LAYERS)
        integer("arm_width", 1, MAX_WIDTH)
        integer("iterations", 1, 10_000_000)
        integer("log_every", 1, 10_000_000)
        integer("warmup_candidates", 1, 16)
        integer("warmup_iterations", 0, 10_000_000)
        integer("network_refinement_passes", 0, 8)
        value = self.restart_factor
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 1 < value < float("inf")
        ):
            problems.append(f"restart_factor must be a number above 1, got {value!r}")
        if not 1 <= len(self.synthesis_widths) <= MAX_LAYERS or not all(
            1 <= w <= MAX_WIDTH for w in self.synthesis_widths
        ):
            problems.append(
                f"synthesis_widths must be 1 to {MAX_LAYERS} widths in [1, {MAX_WIDTH}], "
                f"got {self.synthesis_widths!r}"
            )
        if self.soft_round_noise not in NOISES:
            problems.append(
                f"soft_round_noise must be one of {NOISES}, got {self.soft_round_noise!r}"
            )
        if self.final_rounding not in FINAL_ROUNDINGS:
            problems.append(
                f"final_rounding must be one of {FINAL_ROUNDINGS}, got {self.final_rounding!r}"
            )
        if self.network_optimiser not in OPTIMISERS:
            problems.append(
                f"network_optimiser must be one of {OPTIMISERS}, got {self.network_optimiser!r}"
            )
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in (
            "context_coarser",
            "learned_upsampling",
            "upsampling_per_level",
            "synthesis_stabiliser",
            "arm_stabiliser",
            "warmup_distortion_only",
        ):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.upsampling_per_level is True and self.learned_upsampling is False:
            problems.append("upsampling_per_level needs learned_upsampling: true")
        for name in (
            "learning_rate",
            "soft_round_start",
            "soft_round_end",
            "latent_gain",
            "latent_learning_rate_factor",
            "memory_gb",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < float("inf")
            ):
                problems.append(f"{name} must be a positive number, got {value!r}")
        for name in (
            "noise_fraction",
            "soft_round_fraction",
            "ste_learning_rate_factor",
            "gaussian_noise_start",
            "gaussian_noise_end",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                problems.append(f"{name} must be in [0, 1], got {value!r}")
        if not problems and self.noise_fraction + self.soft_round_fraction > 1:
            problems.append("noise_fraction + soft_round_fraction must not exceed 1")
        return problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["synthesis_widths"] = list(self.synthesis_widths)
        return data

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> CodecSettings:
        """The settings of the validated ``neural_codec`` section (its other keys, such as the
        lambdas, are the workflow's)."""
        return cls(**{f.name: section[f.name] for f in fields(cls)})

    @classmethod
    def make(cls, **changes: Any) -> CodecSettings:
        """The schema's defaults for every setting not in ``changes`` (checked here)."""
        from volinr.settings import section

        unknown = sorted(set(changes) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown neural codec settings: {', '.join(unknown)}")
        schema_defaults = section("neural_codec")  # validates the schema: once, not per field
        defaults = {f.name: schema_defaults[f.name] for f in fields(cls)}
        return cls(**(defaults | changes))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecSettings:
        return cls.make(**data)

    def coarser_levels(self) -> int:
        """How many coarser grids a grid's entropy model reads (fewer near the coarsest)."""
        return self.context_coarser_levels if self.context_coarser else 0

    def phase_iterations(self) -> tuple[int, int, int]:
        """Iterations with noise, with soft rounding, and with hard rounding (final_rounding)."""
        noise = round(self.iterations * self.noise_fraction)
        soft = round(self.iterations * self.soft_round_fraction)
        soft = min(soft, self.iterations - noise)
        return noise, soft, self.iterations - noise - soft
