"""What a SIREN fit is given (``FitSettings``, from the config's validated ``siren`` section)
and what it returns (``FitResult``), apart from the loop that does it (``training.siren``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from volinr.models.siren import Siren

STEP_KINDS = ("auto", "blocked", "autograd")


PRECISIONS = ("float32", "tf32", "bfloat16")


@dataclass
class FitSettings:
    """One fit's settings: the layer count, iterations and seed of this fit, and the rest of
    the config's ``siren`` section (each key documented, with its range and default, in the
    config schema; ``make`` takes the schema's defaults)."""

    sine_layers: int
    iterations: int
    seed: int
    width: int
    omega0: float
    learning_rate: float
    batch_size: int
    eval_every: int
    compile: bool
    step: str
    precision: str
    checkpoint_every: int
    divergence_retries: int
    divergence_lr_factor: float
    snapshot_voxels: int

    @classmethod
    def from_section(
        cls, section: Mapping[str, Any], sine_layers: int, seed: int, iterations: int
    ) -> FitSettings:
        """A fit of the validated ``siren`` section."""
        own = {"sine_layers", "seed", "iterations"}
        names = [f.name for f in dataclasses.fields(cls) if f.name not in own]
        return cls(
            sine_layers=sine_layers,
            iterations=iterations,
            seed=seed,
            **{name: section[name] for name in names},
        )

    @classmethod
    def make(cls, sine_layers: int, iterations: int, seed: int = 0, **changes) -> FitSettings:
        """A fit with the schema's defaults for every setting not in ``changes``."""
        from volinr.settings import section

        return cls.from_section(section("siren", changes), sine_layers, seed, iterations)


@dataclass
class FitResult:
    model: Siren  # the best snapshot
    value_range: tuple[float, float]
    grid_shape: tuple[int, ...]
    grid_extent: list[float]
    best_psnr_db: float
    best_iteration: int
    final_psnr_db: float
    train_seconds: float
    first_iteration_seconds: float
    compile_seconds: float
    peak_memory_bytes: int
    memory_kind: str
    loss: np.ndarray  # per iteration, on the [-1, 1] scale
    evaluations: list[dict[str, float]] = field(default_factory=list)
    step: str = "autograd"
    learning_rate: float = 0.0  # the rate that produced the result (after any retries)
    divergence_retries_used: int = 0
    resumed_from_iteration: int = 0
    # the best snapshot is chosen on a fixed voxel subsample where the grid is larger (0: on
    # every voxel); best_psnr_db is then the chosen snapshot's PSNR on every voxel, and
    # snapshot_psnr_db its PSNR on the subsample
    snapshot_voxels_used: int = 0
    snapshot_psnr_db: float | None = None

    @property
    def seconds_per_iteration(self) -> float:
        """Steady-state time per iteration (the first one, which may compile, left out)."""
        iterations = len(self.loss)
        if iterations < 2:
            return self.train_seconds
        return (self.train_seconds - self.first_iteration_seconds) / (iterations - 1)


class SirenDiverged(FloatingPointError):
    """A fit's loss became NaN or Inf."""
