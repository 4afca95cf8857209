"""The neural codec's settings: architecture and training, one frozen, validated record.

Everything the decoder needs from here (the architecture fields) is written into each file's
header; the training fields only shape the encoder's search. Each field's comment is the
documentation the workflow's schema entry is built from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

ACTIVATIONS = ("relu", "gelu")
MAX_LEVELS = 12
MAX_CONTEXT_SIZE = 32
MAX_WIDTH = 64
MAX_LAYERS = 4


@dataclass(frozen=True)
class CodecSettings:
    """Architecture and training of one overfitted latent-grid codec (Cool-chic / C3 family)."""

    # --- architecture (written into the file) ---
    # Latent grids, one channel each; grid i has ceil(N / 2^i) samples per axis (fewer when the
    # image is too small for them: the codec stops at a 1-sample grid).
    levels: int = 7
    # Widths of the synthesis network's 1x1 (1x1x1) hidden layers, input = the upsampled grids.
    synthesis_widths: tuple[int, ...] = (16, 16)
    # Channels of the synthesis network's residual 3x3 (3x3x3) stage, and how many such layers.
    residual_channels: int = 2
    residual_layers: int = 2
    # Activation of the synthesis network's hidden layers.
    activation: str = "relu"
    # Causal neighbours of each latent (nearest first) that the autoregressive entropy model
    # sees; 12 is the causal half of a 5x5 window in 2D; 0 (with context_coarser false) is a
    # plain factorised Laplace, the ablation without context.
    context_size: int = 12
    # Whether the entropy model also sees the co-located latent of the next coarser grid.
    context_coarser: bool = True
    # Hidden layers and width of the entropy model's MLP (residual, ReLU).
    arm_layers: int = 2
    arm_width: int = 12
    # Learned 2x upsampling filter (8 taps, symmetric, initialised to bicubic) instead of
    # fixed bicubic.
    learned_upsampling: bool = True

    # --- training (encoder only) ---
    # Defaults tuned on the phantom and SR-training frames: benchmarks/results/
    # neural_codec_tuning.md. More iterations always helped there (the CPU is the limit).
    iterations: int = 2000
    learning_rate: float = 0.01
    # Fraction of the iterations with additive uniform noise as the quantisation proxy, then
    # with soft rounding (temperature annealed from soft_round_start to soft_round_end);
    # the rest use hard rounding with a straight-through gradient at ste_learning_rate_factor
    # times the learning rate.
    noise_fraction: float = 0.4
    soft_round_fraction: float = 0.5
    soft_round_start: float = 0.3
    soft_round_end: float = 0.1
    ste_learning_rate_factor: float = 0.1
    # Each grid's latents are stored divided by gain^level, so that coarse grids (few samples,
    # each used by many voxels) move faster under Adam (Cool-chic's and C3's gains).
    latent_gain: float = 4.0
    # Log the training curve every this many iterations (the only host syncs of the loop).
    log_every: int = 50

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
        integer("arm_layers", 0, MAX_LAYERS)
        integer("arm_width", 1, MAX_WIDTH)
        integer("iterations", 1, 10_000_000)
        integer("log_every", 1, 10_000_000)
        if not 1 <= len(self.synthesis_widths) <= MAX_LAYERS or not all(
            1 <= w <= MAX_WIDTH for w in self.synthesis_widths
        ):
            problems.append(
                f"synthesis_widths must be 1 to {MAX_LAYERS} widths in [1, {MAX_WIDTH}], "
                f"got {self.synthesis_widths!r}"
            )
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("context_coarser", "learned_upsampling"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("learning_rate", "soft_round_start", "soft_round_end", "latent_gain"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < float("inf"):
                problems.append(f"{name} must be a positive number, got {value!r}")
        for name in ("noise_fraction", "soft_round_fraction", "ste_learning_rate_factor"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                problems.append(f"{name} must be in [0, 1], got {value!r}")
        if not problems and self.noise_fraction + self.soft_round_fraction > 1:
            problems.append("noise_fraction + soft_round_fraction must not exceed 1")
        return problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["synthesis_widths"] = list(self.synthesis_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown neural codec settings: {', '.join(unknown)}")
        return cls(**data)

    def phase_iterations(self) -> tuple[int, int, int]:
        """Iterations with noise, with soft rounding, and with straight-through rounding."""
        noise = round(self.iterations * self.noise_fraction)
        soft = round(self.iterations * self.soft_round_fraction)
        soft = min(soft, self.iterations - noise)
        return noise, soft, self.iterations - noise - soft
