"""Fitting a SIREN to a 2D slice or a 3D volume, and decoding it back onto a grid.

Intensities are mapped linearly from the target's min..max to [-1, 1] before the MSE; the
PSNR in the training curves is therefore the 8-bit PSNR in the target's own min..max window
(peak-to-peak 2 on the [-1, 1] scale), computed without rounding to integers. The tables use
``volinr.metrics`` on decoded, windowed 8-bit images instead.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from volinr.checkpoints import load_checkpoint, save_checkpoint
from volinr.decode_recipe import check_decoding
from volinr.devices import MemoryMeter, synchronize
from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.outputs import atomic_path
from volinr.siren_grad import BlockedSirenStep

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


def scale_to_unit(
    values: np.ndarray, lo: float, hi: float, slab_voxels: int = 1 << 22
) -> np.ndarray:
    """lo..hi -> -1..1 as float32, computed in float64 slab by slab (no float64 copy of a
    volume): distinct int32 values above 2^24 do not merge in a float32 copy, nor does
    ``values - lo`` overflow for float32 values near its limits."""
    values = np.asarray(values)
    flat = values.reshape(-1)
    out = np.empty(flat.shape, np.float32)
    span = float(hi) - float(lo)
    for start in range(0, flat.size, slab_voxels):
        part = np.asarray(flat[start : start + slab_voxels], np.float64)
        out[start : start + slab_voxels] = (part - lo) / span * 2.0 - 1.0
    return out.reshape(values.shape)


def unscale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (values + 1.0) / 2.0 * (hi - lo) + lo


STEP_KINDS = ("auto", "blocked", "autograd")
PRECISIONS = ("float32", "tf32", "bfloat16")
RESUME_FORMAT = "volinr-siren-resume-1"


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
    # "blocked": the hand-written gradient of volinr.siren_grad (fast on a CPU); "autograd":
    # autograd, optionally torch.compile'd; "auto": blocked on a CPU in float32, else autograd.
    step: str = "auto"
    # "tf32": TF32 matmuls (CUDA only); "bfloat16": autocast to bfloat16 (autograd step).
    precision: str = "float32"
    checkpoint_every: int = 0  # iterations between resume checkpoints (0: none)
    divergence_retries: int = 0  # restarts at a lower learning rate after a NaN/Inf loss
    divergence_lr_factor: float = 0.5


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

    @property
    def seconds_per_iteration(self) -> float:
        """Steady-state time per iteration (the first one, which may compile, left out)."""
        iterations = len(self.loss)
        if iterations < 2:
            return self.train_seconds
        return (self.train_seconds - self.first_iteration_seconds) / (iterations - 1)


class SirenDiverged(FloatingPointError):
    """A fit's loss became NaN or Inf."""


def _full_grid_mse(model, coords, values, chunk: int = 1 << 13) -> torch.Tensor:
    # Small chunks: a 65,536-row activation is 33.5 MB, and allocations that large cost a
    # CPU page faults every time.
    total = torch.zeros((), device=coords.device)
    with torch.no_grad():
        for start in range(0, coords.shape[0], chunk):
            prediction = model(coords[start : start + chunk])
            total += F.mse_loss(prediction, values[start : start + chunk], reduction="sum")
    return total / coords.shape[0]


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


def _fingerprint(target: np.ndarray, settings: FitSettings, extent, device) -> str:
    """What a resume checkpoint must match: the data, every setting that changes the result,
    the grid's extent and the device type."""
    digest = hashlib.sha256(np.ascontiguousarray(target).tobytes())
    relevant = {k: v for k, v in asdict(settings).items() if k != "checkpoint_every"}
    digest.update(json.dumps([relevant, list(extent), device.type], sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class _FitState:
    """Everything a fit carries from one iteration to the next, so it can be checkpointed."""

    model: Siren
    optimizer: torch.optim.Optimizer
    batches: IndexBatches
    losses: torch.Tensor
    iteration: int = 0
    evaluations: list[dict[str, float]] = field(default_factory=list)
    best_psnr: float = -math.inf
    best_iteration: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0
    first_seconds: float = 0.0

    def save(self, path: Path, fingerprint: str, learning_rate: float, attempt: int) -> None:
        payload = {
            "format": RESUME_FORMAT,
            "fingerprint": fingerprint,
            "learning_rate": learning_rate,
            "attempt": attempt,
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.state_dict(),
            "losses": self.losses[: self.iteration].cpu(),
            "evaluations": self.evaluations,
            "best_psnr": self.best_psnr,
            "best_iteration": self.best_iteration,
            "best_state": self.best_state,
            "train_seconds": self.train_seconds,
            "first_seconds": self.first_seconds,
        }
        # written now, not with the stage's outputs: it is what survives a kill
        with atomic_path(path, deferred=False) as tmp:
            torch.save(payload, tmp)

    def load(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.batches.load_state_dict(payload["batches"])
        self.iteration = int(payload["iteration"])
        self.losses[: self.iteration] = payload["losses"].to(self.losses.device)
        self.evaluations = list(payload["evaluations"])
        self.best_psnr = float(payload["best_psnr"])
        self.best_iteration = int(payload["best_iteration"])
        self.best_state = payload["best_state"]
        self.train_seconds = float(payload["train_seconds"])
        self.first_seconds = float(payload["first_seconds"])


def _read_resume(
    path: Path | None, fingerprint: str, device, replace_stale: bool = False
) -> dict[str, Any] | None:
    """This fit's resume checkpoint at ``path``, or None where there is none.

    Anything else there is refused before training and left as it is (the program removes only
    files it wrote): a folder, a link or a file that is not a readable SIREN resume checkpoint,
    and a checkpoint of another fit. With ``replace_stale`` (the default path beside the
    weights) a checkpoint of another fit is this job's own, left by a killed run with other data
    or settings, and is replaced. Checkpoints are renamed into place whole, so a kill never
    leaves a truncated one.
    """
    if path is None or not (path.exists() or path.is_symlink()):
        return None
    keep = "it is left as it is: remove it to start over, or give another --resume"
    if path.is_symlink() or not path.is_file():
        kind = "a symbolic link" if path.is_symlink() else "not a regular file"
        raise InputError(f"{path}: the resume path is {kind}, not a resume checkpoint; {keep}")
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"PK":  # torch.save writes a zip archive
                raise ValueError("not a torch checkpoint")
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises many types on foreign files)
        reason = str(err).split(". ")[0].strip() or type(err).__name__
        raise InputError(
            f"{path}: not a readable SIREN resume checkpoint ({reason}); {keep}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise InputError(f"{path}: not a SIREN resume checkpoint; {keep}")
    if payload.get("fingerprint") != fingerprint:
        if not replace_stale:
            raise InputError(
                f"{path}: a resume checkpoint of another fit (its data or settings differ); {keep}"
            )
        log.warning(
            "%s: left by an earlier run of this job with other data or settings; starting over "
            "(it will be replaced)",
            path,
        )
        return None
    return payload


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
    is not this fit's checkpoint is refused before training (``_read_resume``). A NaN/Inf loss
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
    fingerprint = _fingerprint(target, settings, extent, device)
    payload = _read_resume(resume, fingerprint, device, replace_stale_resume)
    attempt = int(payload["attempt"]) if payload else 0
    learning_rate = float(payload["learning_rate"]) if payload else settings.learning_rate
    while True:
        try:
            result = _fit_attempt(
                coords, values, settings, device, step_kind, learning_rate, attempt,
                payload, resume, fingerprint, progress, label,
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


def _fit_attempt(coords, values, settings: FitSettings, device, step_kind: str,
                 learning_rate: float, attempt: int, payload, resume: Path | None,
                 fingerprint: str, progress, label: str) -> FitResult:  # fmt: skip
    torch.manual_seed(settings.seed)
    model = Siren(3, settings.width, settings.sine_layers, 1, settings.omega0).to(device)
    count = coords.shape[0]
    batch = min(settings.batch_size, count)
    state = _FitState(
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
    if progress is None:
        progress = os.isatty(2)
    bar = tqdm(
        range(state.iteration + 1, settings.iterations + 1),
        desc=label or "SIREN",
        disable=not progress,
        initial=state.iteration,
        total=settings.iterations,
    )
    workers = contextlib.closing(blocked) if step_kind == "blocked" else contextlib.nullcontext()
    with _matmul_precision(settings.precision, device), contextlib.closing(bar), workers:
        synchronize(device)
        segment_start = time.perf_counter()
        for iteration in bar:
            index = next(state.batches)
            x, y = (coords, values) if index is None else (coords[index], values[index])
            state.losses[iteration - 1] = train_step(x, y)
            state.iteration = iteration
            if iteration == 1:
                synchronize(device)
                state.first_seconds = time.perf_counter() - segment_start
            if iteration % settings.eval_every and iteration != settings.iterations:
                continue
            synchronize(device)
            state.train_seconds += time.perf_counter() - segment_start
            meter.pause()
            # Eager evaluation: a no-grad graph would make torch.compile compile again.
            mse = _full_grid_mse(model, coords, values).item()
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
            bar.set_postfix(psnr=f"{psnr:.2f}", best=f"{state.best_psnr:.2f}")
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
    model, payload = load_checkpoint(path, WEIGHTS_FORMAT, Siren, device)
    # What decoding needs beside the weights; a foreign or edited file may lack or bend it.
    config, shape = model.config, payload.get("grid_shape")
    if config["in_features"] != 3 or config["out_features"] != 1:
        raise InputError(f"{path}: a SIREN of {config['in_features']} inputs and "
                         f"{config['out_features']} outputs; decoding needs 3 and 1")  # fmt: skip
    if not (
        isinstance(shape, list)
        and len(shape) in (2, 3)
        and all(isinstance(n, int) and n > 0 for n in shape)
    ):
        raise InputError(f"{path}: bad or missing grid_shape {shape!r}")
    extent, value_range = payload.get("grid_extent"), payload.get("value_range")
    if not (
        isinstance(extent, list)
        and len(extent) == len(shape)
        and all(isinstance(e, int | float) and math.isfinite(e) and e > 0 for e in extent)
    ):
        raise InputError(f"{path}: bad or missing grid_extent {extent!r}")
    if not (
        isinstance(value_range, list)
        and len(value_range) == 2
        and all(isinstance(v, int | float) and math.isfinite(v) for v in value_range)
    ):
        raise InputError(f"{path}: bad or missing value_range {value_range!r}")
    # as a container's: a reversed range decodes an inverted image, an extreme extent or range
    # overflows float32 (the architecture is backed by the tensors the file stores)
    check_decoding(str(path), shape, extent, value_range)
    return model, payload


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
