"""Fitting a SIREN to a 2D slice or a 3D volume (Adam on the MSE; the best snapshot kept).

Intensities are mapped linearly from the target's min..max to [-1, 1] before the MSE; the
PSNR in the training curves is therefore the 8-bit PSNR in the target's own min..max window
(peak-to-peak 2 on the [-1, 1] scale), computed without rounding to integers. The tables use
``volinr.metrics`` on decoded, windowed 8-bit images instead.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from volinr.decode_recipe import check_decoding
from volinr.devices import MemoryMeter, synchronize
from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.progress import Progress
from volinr.siren_grid import coordinate_grid, grid_extent, scale_to_unit
from volinr.training.fit_settings import (  # noqa: F401  (re-exported: the fit's API)
    PRECISIONS,
    STEP_KINDS,
    FitResult,
    FitSettings,
    SirenDiverged,
)
from volinr.training.siren_blocked import BlockedSirenStep
from volinr.training.siren_resume import FitState, fit_fingerprint, read_resume

log = logging.getLogger(__name__)


def _full_grid_mse(model, coords, values, chunk: int = 1 << 13) -> torch.Tensor:
    # Small chunks: a 65,536-row activation is 33.5 MB, and allocations that large cost a
    # CPU page faults every time.
    total = torch.zeros((), device=coords.device)
    with torch.no_grad():
        for start in range(0, coords.shape[0], chunk):
            prediction = model(coords[start : start + chunk])
            total += F.mse_loss(prediction, values[start : start + chunk], reduction="sum")
    return total / coords.shape[0]


def snapshot_sample(count: int, voxels: int, device: torch.device) -> torch.Tensor | None:
    """The rows of a fixed subsample of ``voxels`` voxels on which the best snapshot is chosen
    (None: the grid is no larger, every voxel is used). Fixed by the grid alone, so every fit
    of one image is judged on the same voxels; a full evaluation of a 113x256x256 volume every
    few iterations would cost several times the training itself."""
    if count <= voxels:
        return None
    generator = torch.Generator().manual_seed(0)
    return torch.randperm(count, generator=generator)[:voxels].sort().values.to(device)


class IndexBatches:
    """Endless voxel-index batches: a fresh permutation every epoch, cut into batches, so each
    voxel is drawn once per epoch (None: the batch is the whole grid). Drawn on the device,
    without a DataLoader; the benchmark's reference loop replays the same sequence. Its
    ``state_dict`` lets a resumed fit draw exactly the batches an uninterrupted one would."""

    def __init__(self, count: int, batch: int, seed: int, device):
        self.count, self.batch, self.device = count, batch, torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.permutation: torch.Tensor | None = None
        self.cursor = count

    def __iter__(self) -> Iterator[torch.Tensor | None]:
        return self

    def __next__(self) -> torch.Tensor | None:
        if self.batch >= self.count:
            return None
        if self.cursor + self.batch > self.count:
            self.permutation = torch.randperm(
                self.count, device=self.device, generator=self.generator
            )
            self.cursor = 0
        self.cursor += self.batch
        return self.permutation[self.cursor - self.batch : self.cursor]

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "permutation": None if self.permutation is None else self.permutation.cpu(),
            "cursor": self.cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        permutation = state["permutation"]
        self.permutation = None if permutation is None else permutation.to(self.device)
        self.cursor = int(state["cursor"])


def index_batches(count: int, batch: int, seed: int, device) -> IndexBatches:
    return IndexBatches(count, batch, seed, device)


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


def resolve_step(settings: FitSettings, device: torch.device) -> str:
    """The step kind a fit will use; refuses combinations that cannot run."""
    if settings.step not in STEP_KINDS:
        raise InputError(f"unknown SIREN step {settings.step!r}; choose one of {STEP_KINDS}")
    if settings.precision not in PRECISIONS:
        raise InputError(f"unknown precision {settings.precision!r}; choose one of {PRECISIONS}")
    if settings.precision == "tf32" and device.type != "cuda":
        raise InputError("precision tf32 needs a CUDA device (a CPU has no TF32 matmuls)")
    if settings.step == "blocked" and settings.precision == "bfloat16":
        raise InputError("the blocked step runs in float32; use step autograd for bfloat16")
    if settings.step != "auto":
        return settings.step
    return "blocked" if device.type == "cpu" and settings.precision == "float32" else "autograd"


def _optimizer(model: Siren, learning_rate: float, device: torch.device):
    # One fused kernel for the whole parameter update where this build has it.
    try:
        return torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=learning_rate, foreach=True)


def fit_siren(
    target: np.ndarray,
    settings: FitSettings,
    device: torch.device,
    progress: bool | None = None,
    label: str = "",
    spacing_mm: Sequence[float] | None = None,
    resume_path: str | os.PathLike | None = None,
    replace_stale_resume: bool = False,
) -> FitResult:
    """Adam on MSE over the voxels of ``target``; keeps the snapshot with the best PSNR.

    ``spacing_mm`` (one entry per axis) scales the coordinates by physical extent. With
    ``resume_path`` and ``settings.checkpoint_every``, the fit's whole state is written there
    every that many iterations, a rerun continues from it to the result an uninterrupted fit
    gives (bitwise on a CPU), and the file is removed once the fit is done; a file there that
    is not this fit's checkpoint is refused before training (``read_resume``). A NaN/Inf loss
    stops the fit naming its configuration, or restarts it ``settings.divergence_retries``
    times with the learning rate scaled by ``settings.divergence_lr_factor``.
    """
    from volinr.metrics import data_range

    source = np.asarray(target)  # its own dtype: a float32 copy would merge int32 values
    lo, hi = float(source.min()), float(source.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{label or 'target'}: the image holds NaN or Inf values")
    span = data_range(source)
    if span <= 0:
        raise InputError(f"{label or 'target'}: a constant image cannot be fitted (value {lo})")
    if abs((hi - lo) - span) > 1e-9 * span:  # 64-bit integers too close for float64
        raise InputError(
            f"{label or 'target'}: values {source.min()}..{source.max()} span {span:g} at a "
            "magnitude where float64 cannot tell them apart; subtract an offset first"
        )
    extent = grid_extent(source.shape, spacing_mm)
    # refused now rather than by the decoder after the fit: extents and a range that float32
    # coordinates and outputs cannot hold
    check_decoding(label or "target", list(source.shape), extent, [lo, hi])
    target = scale_to_unit(source, lo, hi)  # float32, -1..1
    step_kind = resolve_step(settings, device)
    coords = coordinate_grid(target.shape, device, extent)
    values = torch.from_numpy(target.reshape(-1, 1)).to(device)
    resume = Path(resume_path) if resume_path is not None else None
    fingerprint = fit_fingerprint(target, settings, extent, device)
    payload = read_resume(resume, fingerprint, device, replace_stale_resume)
    attempt = int(payload["attempt"]) if payload else 0
    learning_rate = float(payload["learning_rate"]) if payload else settings.learning_rate
    sample = snapshot_sample(coords.shape[0], settings.snapshot_voxels, device)
    snapshot_set = (coords, values) if sample is None else (coords[sample], values[sample])
    while True:
        try:
            result = _fit_attempt(
                coords, values, snapshot_set, settings, device, step_kind, learning_rate,
                attempt, payload, resume, fingerprint, progress, label,
            )  # fmt: skip
            break
        except SirenDiverged as err:
            payload = None
            if attempt >= settings.divergence_retries:
                retried = f" after {attempt} retries at lower rates" if attempt else ""
                raise SirenDiverged(
                    f"{err}{retried}; set siren.divergence_retries to retry at a lower "
                    "learning rate"
                ) from None
            attempt += 1
            learning_rate *= settings.divergence_lr_factor
            log.warning("%s; restarting with learning rate %.3g", err, learning_rate)
    if resume is not None:
        # refused above unless absent or this job's own, so whatever is there now is ours
        resume.unlink(missing_ok=True)
    if sample is not None:
        full_mse = _full_grid_mse(result.model, coords, values).item()
        result.snapshot_psnr_db = result.best_psnr_db
        result.best_psnr_db = 10 * math.log10(4.0 / full_mse) if full_mse > 0 else math.inf
        result.snapshot_voxels_used = len(sample)
    result.value_range = (lo, hi)
    result.grid_shape = tuple(target.shape)
    result.grid_extent = extent
    log.info(
        "%s: best %.2f dB at iteration %d, %.1f s of training (%s step)",
        label,
        result.best_psnr_db,
        result.best_iteration,
        result.train_seconds,
        step_kind,
    )
    return result


def _fit_attempt(coords, values, snapshot_set, settings: FitSettings, device, step_kind: str,
                 learning_rate: float, attempt: int, payload, resume: Path | None,
                 fingerprint: str, progress, label: str) -> FitResult:  # fmt: skip
    torch.manual_seed(settings.seed)
    model = Siren(3, settings.width, settings.sine_layers, 1, settings.omega0).to(device)
    count = coords.shape[0]
    batch = min(settings.batch_size, count)
    state = FitState(
        model=model,
        optimizer=_optimizer(model, learning_rate, device),
        batches=index_batches(count, batch, settings.seed, device),
        losses=torch.empty(settings.iterations, device=device),
    )
    if payload is not None:
        state.load(payload)
        log.info("%s: resuming from iteration %d (%s)", label, state.iteration, resume)
    resumed_from = state.iteration
    compile_seconds = 0.0
    if step_kind == "blocked":
        if settings.compile:
            log.info("%s: the blocked step runs eagerly; compile applies to autograd", label)
        blocked = BlockedSirenStep(model)
    elif settings.compile:
        forward, compile_seconds = _compiled_or_eager(model, coords[:batch], values[:batch])
    else:
        forward = model
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=settings.precision == "bfloat16"
    )

    def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if step_kind == "blocked":
            loss = blocked(x, y)
        else:
            with autocast:
                loss = F.mse_loss(forward(x).float(), y)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        state.optimizer.step()
        return loss.detach()

    name = label or "SIREN fit"
    meter = MemoryMeter(device)
    bar = Progress(name, settings.iterations, state.iteration, bar=progress)
    workers = contextlib.closing(blocked) if step_kind == "blocked" else contextlib.nullcontext()
    with _matmul_precision(settings.precision, device), contextlib.closing(bar), workers:
        synchronize(device)
        segment_start = time.perf_counter()
        for iteration in range(state.iteration + 1, settings.iterations + 1):
            index = next(state.batches)
            x, y = (coords, values) if index is None else (coords[index], values[index])
            state.losses[iteration - 1] = train_step(x, y)
            state.iteration = iteration
            bar.advance()
            if iteration == 1:
                synchronize(device)
                state.first_seconds = time.perf_counter() - segment_start
            if iteration % settings.eval_every and iteration != settings.iterations:
                continue
            synchronize(device)
            state.train_seconds += time.perf_counter() - segment_start
            meter.pause()
            # Eager evaluation: a no-grad graph would make torch.compile compile again.
            mse = _full_grid_mse(model, *snapshot_set).item()
            since = state.evaluations[-1]["iteration"] if state.evaluations else 0
            if not (
                math.isfinite(mse) and bool(torch.isfinite(state.losses[since:iteration]).all())
            ):
                raise SirenDiverged(
                    f"{name} diverged (NaN/Inf loss) by iteration {iteration}: "
                    f"{settings.sine_layers} sine layers, width {settings.width}, omega0 "
                    f"{settings.omega0}, batch {batch}, learning rate {learning_rate:.3g}"
                )
            psnr = 10 * math.log10(4.0 / mse) if mse > 0 else math.inf
            state.evaluations.append(
                {
                    "iteration": iteration,
                    "psnr_db": psnr,
                    "mse": mse,
                    "train_seconds": state.train_seconds,
                }
            )
            if psnr > state.best_psnr:
                state.best_psnr, state.best_iteration = psnr, iteration
                state.best_state = copy.deepcopy(model.state_dict())
            bar.report(psnr_db=psnr, best_db=state.best_psnr)
            if (
                resume is not None
                and settings.checkpoint_every
                and iteration < settings.iterations
                and iteration // settings.checkpoint_every > since // settings.checkpoint_every
            ):
                state.save(resume, fingerprint, learning_rate, attempt)
            meter.resume()
            segment_start = time.perf_counter()
    peak_bytes, memory_kind = meter.peak()
    model.load_state_dict(state.best_state)
    return FitResult(
        model=model.eval(),
        value_range=(0.0, 0.0),
        grid_shape=(),
        grid_extent=[],
        best_psnr_db=state.best_psnr,
        best_iteration=state.best_iteration,
        final_psnr_db=state.evaluations[-1]["psnr_db"],
        train_seconds=state.train_seconds,
        first_iteration_seconds=state.first_seconds,
        compile_seconds=compile_seconds,
        peak_memory_bytes=peak_bytes,
        memory_kind=memory_kind,
        loss=state.losses.cpu().numpy(),
        evaluations=state.evaluations,
        step=step_kind,
        learning_rate=learning_rate,
        divergence_retries_used=attempt,
        resumed_from_iteration=resumed_from,
    )


@contextlib.contextmanager
def _matmul_precision(precision: str, device: torch.device):
    """TF32 matmuls for the fit only (CUDA), restoring the global setting afterwards."""
    if precision != "tf32":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
