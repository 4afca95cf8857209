"""Fitting a SIREN to a 2D slice or a 3D volume, and decoding it back onto a grid.

Intensities are mapped linearly from the target's min..max to [-1, 1] before the MSE; the
PSNR in the training curves is therefore the 8-bit PSNR in the target's own min..max window
(peak-to-peak 2 on the [-1, 1] scale), computed without rounding to integers. The tables use
``volinr.metrics`` on decoded, windowed 8-bit images instead.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from volinr.checkpoints import load_checkpoint, save_checkpoint
from volinr.devices import MemoryMeter, synchronize
from volinr.io import InputError
from volinr.models.siren import Siren

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "volinr-siren-1"


def grid_extent(shape: Sequence[int], spacing_mm: Sequence[float] | None = None) -> list[float]:
    """Physical extent (voxels x spacing) of each axis; unit spacing when none is known.

    A spacing that does not have one entry per axis (e.g. a slice's PixelSpacing given for a
    volume) is ignored rather than guessed.
    """
    if spacing_mm is None or len(spacing_mm) != len(shape) or min(spacing_mm) <= 0:
        spacing_mm = [1.0] * len(shape)
    return [float(n) * float(s) for n, s in zip(shape, spacing_mm, strict=True)]


def grid_coordinates(
    shape: Sequence[int],
    extent: Sequence[float] | None = None,
    device: torch.device | str = "cpu",
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """(N, 3) SIREN inputs (x, y, z) of the voxels ``start..stop`` (C order) of a (rows, cols)
    slice or a (slices, rows, cols) volume; z = 0 for a slice.

    Coordinates are voxel centres in physical space, centred on the grid and divided by half
    the longest extent: the longest axis spans (-1, 1) and shorter or anisotropic axes keep
    their true proportions. A grid of another shape over the same extent (the LR grid, or a
    decode at full resolution) therefore lands on the same physical positions.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"a SIREN grid is 2D or 3D, got shape {shape}")
    extent = grid_extent(shape) if extent is None else [float(e) for e in extent]
    count = math.prod(shape)
    stop = count if stop is None else min(stop, count)
    flat = torch.arange(start, stop, device=device)
    half_longest = max(extent) / 2
    axes = []
    for n, length in zip(reversed(shape), reversed(extent), strict=True):
        index = flat % n
        flat = flat // n
        # centre of voxel i at (i + 0.5) * length / n, measured from the grid's centre
        axes.append(((index.to(torch.float32) + 0.5) * (length / n) - length / 2) / half_longest)
    if len(shape) == 2:
        axes.append(torch.zeros_like(axes[0]))
    return torch.stack(axes, dim=-1)  # (x, y, z): columns, rows, slices


def coordinate_grid(
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    extent: Sequence[float] | None = None,
) -> torch.Tensor:
    """(N, 3) coordinates of every voxel of a grid, in C order (see ``grid_coordinates``)."""
    return grid_coordinates(shape, extent, device)


def scale_to_unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (values - lo) / (hi - lo) * 2.0 - 1.0


def unscale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (values + 1.0) / 2.0 * (hi - lo) + lo


@dataclass
class FitSettings:
    sine_layers: int
    iterations: int
    width: int = 128
    omega0: float = 30.0
    learning_rate: float = 1.5e-3
    batch_size: int = 65536
    eval_every: int = 25
    seed: int = 0
    compile: bool = False


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

    @property
    def seconds_per_iteration(self) -> float:
        """Steady-state time per iteration (the first one, which may compile, left out)."""
        iterations = len(self.loss)
        if iterations < 2:
            return self.train_seconds
        return (self.train_seconds - self.first_iteration_seconds) / (iterations - 1)


def _full_grid_mse(model, coords, values, chunk: int = 1 << 18) -> torch.Tensor:
    total = torch.zeros((), device=coords.device)
    with torch.no_grad():
        for start in range(0, coords.shape[0], chunk):
            prediction = model(coords[start : start + chunk])
            total += F.mse_loss(prediction, values[start : start + chunk], reduction="sum")
    return total / coords.shape[0]


def index_batches(count: int, batch: int, seed: int, device) -> Iterator[torch.Tensor | None]:
    """Endless voxel-index batches: a fresh permutation every epoch, cut into batches, so each
    voxel is drawn once per epoch (None: the batch is the whole grid). Drawn on the device,
    without a DataLoader; the benchmark's reference loop replays the same sequence."""
    generator = torch.Generator(device=device).manual_seed(seed)
    permutation, cursor = None, count
    while True:
        if batch >= count:
            yield None
            continue
        if cursor + batch > count:
            permutation = torch.randperm(count, device=device, generator=generator)
            cursor = 0
        yield permutation[cursor : cursor + batch]
        cursor += batch


def _compiled_or_eager(model: Siren, x: torch.Tensor, y: torch.Tensor):
    """torch.compile the model and run one forward/backward to compile it before any timing;
    fall back to eager mode (with a warning) where compilation fails, e.g. without a compiler."""
    start = time.perf_counter()
    # A fresh compile cache: several models compiled in one process (the benchmark) would
    # otherwise exhaust Dynamo's recompile limit and silently run eagerly.
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model)
        F.mse_loss(compiled(x), y).backward()
    except Exception as err:  # inductor raises many types when the toolchain is missing
        log.warning("torch.compile failed (%s); fitting in eager mode", str(err).splitlines()[0])
        model.zero_grad(set_to_none=True)
        return model, 0.0
    model.zero_grad(set_to_none=True)  # the probe's gradients are not a training step
    return compiled, time.perf_counter() - start


def fit_siren(
    target: np.ndarray,
    settings: FitSettings,
    device: torch.device,
    progress: bool | None = None,
    label: str = "",
    spacing_mm: Sequence[float] | None = None,
) -> FitResult:
    """Adam on MSE over the voxels of ``target``; keeps the snapshot with the best PSNR.

    ``spacing_mm`` (one entry per axis) scales the coordinates by physical extent.
    """
    target = np.asarray(target, dtype=np.float32)
    lo, hi = float(target.min()), float(target.max())
    if hi <= lo:
        raise InputError(f"{label or 'target'}: a constant image cannot be fitted (value {lo})")
    torch.manual_seed(settings.seed)
    model = Siren(3, settings.width, settings.sine_layers, 1, settings.omega0).to(device)
    extent = grid_extent(target.shape, spacing_mm)
    coords = coordinate_grid(target.shape, device, extent)
    values = torch.from_numpy(scale_to_unit(target, lo, hi).reshape(-1, 1)).to(device)
    count = coords.shape[0]
    batch = min(settings.batch_size, count)
    forward, compile_seconds = model, 0.0
    if settings.compile:
        forward, compile_seconds = _compiled_or_eager(model, coords[:batch], values[:batch])
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    batches = index_batches(count, batch, settings.seed, device)
    losses = torch.empty(settings.iterations, device=device)
    evaluations: list[dict[str, float]] = []
    best_psnr, best_iteration, best_state = -math.inf, 0, None

    meter = MemoryMeter(device)
    train_seconds, first_seconds = 0.0, 0.0
    if progress is None:
        progress = os.isatty(2)
    bar = tqdm(range(1, settings.iterations + 1), desc=label or "SIREN", disable=not progress)
    synchronize(device)
    segment_start = time.perf_counter()
    for iteration in bar:
        index = next(batches)
        x, y = (coords, values) if index is None else (coords[index], values[index])
        loss = F.mse_loss(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[iteration - 1] = loss.detach()
        if iteration == 1:
            synchronize(device)
            first_seconds = time.perf_counter() - segment_start
        if iteration % settings.eval_every == 0 or iteration == settings.iterations:
            synchronize(device)
            train_seconds += time.perf_counter() - segment_start
            meter.pause()
            # Eager evaluation: a no-grad graph would make torch.compile compile again.
            mse = _full_grid_mse(model, coords, values, chunk=batch).item()
            if not math.isfinite(mse):
                raise FloatingPointError(
                    f"{label or 'SIREN fit'} diverged at iteration {iteration} "
                    f"(learning rate {settings.learning_rate}, {settings.sine_layers} sine layers)"
                )
            psnr = 10 * math.log10(4.0 / mse) if mse > 0 else math.inf
            evaluations.append(
                {
                    "iteration": iteration,
                    "psnr_db": psnr,
                    "mse": mse,
                    "train_seconds": train_seconds,
                }
            )
            if psnr > best_psnr:
                best_psnr, best_iteration = psnr, iteration
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(psnr=f"{psnr:.2f}", best=f"{best_psnr:.2f}")
            meter.resume()
            segment_start = time.perf_counter()
    bar.close()
    peak_bytes, memory_kind = meter.peak()
    model.load_state_dict(best_state)
    loss_curve = losses.cpu().numpy()
    log.info(
        "%s: best %.2f dB at iteration %d, %.1f s of training",
        label,
        best_psnr,
        best_iteration,
        train_seconds,
    )
    return FitResult(
        model=model.eval(),
        value_range=(lo, hi),
        grid_shape=tuple(target.shape),
        grid_extent=extent,
        best_psnr_db=best_psnr,
        best_iteration=best_iteration,
        final_psnr_db=evaluations[-1]["psnr_db"],
        train_seconds=train_seconds,
        first_iteration_seconds=first_seconds,
        compile_seconds=compile_seconds,
        peak_memory_bytes=peak_bytes,
        memory_kind=memory_kind,
        loss=loss_curve,
        evaluations=evaluations,
    )


def save_siren(path: str | os.PathLike, result: FitResult) -> int:
    """Write the weights and everything needed to decode them; returns the file's bytes."""
    return save_checkpoint(
        path,
        WEIGHTS_FORMAT,
        result.model,
        value_range=list(result.value_range),
        grid_shape=list(result.grid_shape),
        grid_extent=list(result.grid_extent),
    )


def load_siren(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[Siren, dict[str, Any]]:
    return load_checkpoint(path, WEIGHTS_FORMAT, Siren, device)


def decode_siren(
    model: Siren,
    shape: Sequence[int],
    value_range: tuple[float, float],
    device: torch.device | str = "cpu",
    extent: Sequence[float] | None = None,
    chunk: int = 1 << 18,
    progress: bool | None = None,
) -> np.ndarray:
    """Evaluate the SIREN on every voxel of a grid of ``shape`` spanning ``extent`` (the fit's
    physical extent; default: the grid's own, unit spacing).

    Coordinates are made chunk by chunk, so the memory is the output plus one chunk: a
    512x512x463 volume decodes without its 1.4 GB coordinate array.
    """
    shape = tuple(int(n) for n in shape)
    extent = grid_extent(shape) if extent is None else extent
    count = math.prod(shape)
    out = np.empty(count, np.float32)
    if progress is None:
        progress = os.isatty(2)
    starts = range(0, count, chunk)
    with torch.inference_mode():
        for start in tqdm(starts, desc="decode", unit="chunk", disable=not progress):
            coords = grid_coordinates(shape, extent, device, start, start + chunk)
            out[start : start + chunk] = model(coords)[:, 0].float().cpu().numpy()
    lo, hi = value_range
    # in place (unscale() would allocate two more volumes)
    out += 1.0
    out *= (hi - lo) / 2.0
    out += lo
    return out.reshape(shape)
