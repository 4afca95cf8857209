"""SRDenseNet pretraining on LR/HR patch pairs, and super-resolution inference.

Intensities: every image is mapped to [0, 1] by the min..max of its *low-resolution* version
(the only thing a decoder has), the network runs on that scale, and the output is mapped back.
This works for any CT or MR units without a fixed window and needs no clipping.

Speed: the model and its inputs can be kept channels-last and run under autocast (bfloat16 on
a CPU, float16 with a gradient scaler or bfloat16 on CUDA); ``default_execution`` picks per
device type. A NaN/Inf training loss stops training naming the configuration (or restarts it
at a lower learning rate), and non-finite super-resolved values are refused, never returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from volinr.checkpoints import load_checkpoint, save_checkpoint
from volinr.errors import InputError
from volinr.models.srdensenet import SRDenseNet
from volinr.resample import lanczos_resize, resize

log = logging.getLogger(__name__)


@dataclass
class SRTrainingSettings:
    steps: int = 2000
    max_seconds: float = 0.0  # 0: no time limit; otherwise stop at whichever comes first
    lr_patch: int = 24  # LR patch side; the HR patch is factor times larger
    batch_size: int = 16
    learning_rate: float = 1e-4
    seed: int = 0
    monitor_every: int = 50
    monitor_patches: int = 64


def normalization_range(lr_image: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(lr_image)), float(np.max(lr_image))
    if hi <= lo:
        hi = lo + 1.0  # a constant image: any scale maps it to 0
    return lo, hi


@dataclass
class PatchPairs:
    """LR/HR image pairs, normalised, from which aligned random patches are drawn."""

    lr_images: list[np.ndarray]
    hr_images: list[np.ndarray]
    factor: int

    @classmethod
    def from_hr_images(cls, images: list[np.ndarray], factor: int) -> PatchPairs:
        lr_images, hr_images = [], []
        for image in images:
            rows, cols = (s - s % factor for s in image.shape)
            hr = np.asarray(image[:rows, :cols], dtype=np.float32)
            # The same antialiased Lanczos as the pipeline's downsampling stage.
            lr = lanczos_resize(hr, (rows // factor, cols // factor))
            lo, hi = normalization_range(lr)
            lr_images.append((lr - lo) / (hi - lo))
            hr_images.append((hr - lo) / (hi - lo))
        return cls(lr_images, hr_images, factor)

    def sample(self, rng: np.random.Generator, count: int, lr_patch: int) -> tuple[np.ndarray, ...]:
        usable = [i for i, lr in enumerate(self.lr_images) if min(lr.shape) >= lr_patch]
        if not usable:
            raise InputError(f"no training image is large enough for LR patches of {lr_patch}")
        areas = np.array([self.lr_images[i].size for i in usable], dtype=np.float64)
        picks = rng.choice(usable, size=count, p=areas / areas.sum())
        hr_patch = lr_patch * self.factor
        lr_batch = np.empty((count, 1, lr_patch, lr_patch), np.float32)
        hr_batch = np.empty((count, 1, hr_patch, hr_patch), np.float32)
        for n, index in enumerate(picks):
            lr, hr = self.lr_images[index], self.hr_images[index]
            i = rng.integers(0, lr.shape[0] - lr_patch + 1)
            j = rng.integers(0, lr.shape[1] - lr_patch + 1)
            lr_p = lr[i : i + lr_patch, j : j + lr_patch]
            hr_p = hr[
                i * self.factor : (i + lr_patch) * self.factor,
                j * self.factor : (j + lr_patch) * self.factor,
            ]
            # Eight dihedral augmentations: rotations by 90 degrees and a flip.
            turns, flip = rng.integers(0, 4), rng.integers(0, 2)
            lr_p, hr_p = np.rot90(lr_p, turns), np.rot90(hr_p, turns)
            if flip:
                lr_p, hr_p = lr_p[:, ::-1], hr_p[:, ::-1]
            lr_batch[n, 0], hr_batch[n, 0] = lr_p, hr_p
        return lr_batch, hr_batch


# --- how the network runs: memory format and precision ------------------------------------

PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class SRExecution:
    """Memory format and arithmetic of SRDenseNet training and inference."""

    channels_last: bool = False
    precision: str = "float32"  # float32, or autocast to bfloat16 / float16

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.precision)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        layout = "channels-last" if self.channels_last else "contiguous"
        return f"{self.precision}, {layout}"


def default_execution(device: torch.device | str) -> SRExecution:
    """The faster settings per device type (measured with ``volinr.bench_sr``).

    CPU: channels-last in float32 (oneDNN's convolutions: 1.45x the training steps per
    second and 2.0x faster inference than contiguous on a 2-thread AMD EPYC; outputs agree to
    154 dB). bfloat16 autocast was faster still there (2.5x, 4.2x; native AVX512-BF16), but
    its output is 67 dB PSNR from float32's (up to 67 HU apart) and it is slow on CPUs
    without bfloat16 units, so it is opt-in. CUDA (not measured here): channels-last with
    float16 autocast and a gradient scaler in training, the tensor-core layout and type.
    Elsewhere: plain float32.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return SRExecution(channels_last=True, precision="float16")
    if kind == "cpu":
        return SRExecution(channels_last=True, precision="float32")
    return SRExecution()


def resolve_execution(
    device: torch.device | str, channels_last: bool | None = None, precision: str | None = None
) -> SRExecution:
    """``default_execution`` with any given option overriding it."""
    default = default_execution(device)
    execution = SRExecution(
        default.channels_last if channels_last is None else bool(channels_last),
        default.precision if precision is None else precision,
    )
    if execution.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {execution.precision!r}")
    if execution.precision == "float16" and torch.device(device).type != "cuda":
        raise ValueError("float16 autocast is for CUDA; use bfloat16 on a CPU")
    return execution


def _autocast(device: torch.device, execution: SRExecution):
    dtype = execution.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_model_input(array: np.ndarray, device: torch.device, execution: SRExecution):
    """A float32 (N, 1, H, W) array as a tensor on ``device`` in the execution's layout."""
    tensor = torch.from_numpy(array).to(device, non_blocking=True)
    return tensor.contiguous(memory_format=execution.memory_format)


def make_train_step(
    model: SRDenseNet, learning_rate: float, execution: SRExecution, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One Adam + L1 step as a function of (LR batch, HR batch) -> the loss, left on the device
    (no host synchronisation). float16 scales the loss so that small gradients survive."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=execution.precision == "float16")

    def step(lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> torch.Tensor:
        with _autocast(device, execution):
            prediction = model(lr_batch)
        loss = F.l1_loss(prediction.float(), hr_batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # with float16, skips a step whose gradients overflowed
        scaler.update()
        return loss.detach()

    return step


def describe_model(config: dict[str, Any]) -> str:
    return "SRDenseNet " + ", ".join(f"{key} {value}" for key, value in config.items())


# --- training ------------------------------------------------------------------------------


class SRDiverged(FloatingPointError):
    """SRDenseNet training's loss became NaN or Inf."""


@dataclass
class SRTrainingRun:
    """A finished training: the model, its curve, and how it got there."""

    model: SRDenseNet
    curve: list[dict[str, float]]
    learning_rate: float  # the rate that produced the model (after any retries)
    divergence_retries_used: int
    execution: SRExecution


def _mse_unit(model: SRDenseNet, lr: torch.Tensor, hr: torch.Tensor, device, execution) -> float:
    """MSE on the normalised scale (monitoring only; NaN if the model diverged)."""
    with torch.inference_mode(), _autocast(device, execution):
        prediction = model(lr)
    return F.mse_loss(prediction.float(), hr).item()


def _psnr_unit(mse: float) -> float:
    """PSNR with peak 1 on the normalised scale."""
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def train_srdensenet(
    pairs: PatchPairs,
    model_config: dict[str, Any],
    settings: SRTrainingSettings,
    device: torch.device,
    progress: bool | None = None,
    *,
    channels_last: bool | None = None,
    precision: str | None = None,
) -> tuple[SRDenseNet, list[dict[str, float]]]:
    """Adam + L1 on random patch pairs; returns the model and its training curve.

    The loss is summed on the device and read every ``settings.monitor_every`` steps: a
    NaN/Inf loss raises ``SRDiverged`` naming the configuration at the first such check.
    ``channels_last`` and ``precision`` default to ``default_execution(device)``.
    """
    execution = resolve_execution(device, channels_last, precision)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = SRDenseNet(scale=pairs.factor, **model_config).to(
        device, memory_format=execution.memory_format
    )
    step_fn = make_train_step(model, settings.learning_rate, execution, device)
    # A fixed monitoring batch (drawn from the training images, so it measures the fit, not
    # generalisation) shows progress against bicubic on the same patches.
    mon_lr, mon_hr = (
        to_model_input(a, device, execution)
        for a in pairs.sample(
            np.random.default_rng(settings.seed + 1), settings.monitor_patches, settings.lr_patch
        )
    )
    bicubic_psnr = _psnr_unit(
        F.mse_loss(
            F.interpolate(mon_lr, scale_factor=pairs.factor, mode="bicubic", align_corners=False),
            mon_hr,
        ).item()
    )

    def diverged(step: int) -> SRDiverged:
        return SRDiverged(
            f"SRDenseNet training diverged (NaN/Inf loss) by step {step}: "
            f"{describe_model(model.config)}; learning rate {settings.learning_rate:.3g}, "
            f"batch {settings.batch_size}, LR patch {settings.lr_patch}, seed {settings.seed}, "
            f"{execution.describe()} on {device.type}"
        )

    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    if progress is None:
        progress = os.isatty(2)
    bar = tqdm(total=settings.steps, desc="SRDenseNet", disable=not progress)
    # float64 as the host sum was; a NaN/Inf loss stays in the sum until it is read.
    running = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64,
                          device=device)  # fmt: skip
    for step in range(1, settings.steps + 1):
        lr_batch, hr_batch = (
            to_model_input(a, device, execution)
            for a in pairs.sample(rng, settings.batch_size, settings.lr_patch)
        )
        running += step_fn(lr_batch, hr_batch)
        bar.update()
        elapsed = time.perf_counter() - start
        out_of_time = settings.max_seconds > 0 and elapsed >= settings.max_seconds
        if step % settings.monitor_every == 0 or step == settings.steps or out_of_time:
            total = running.item()  # the one host synchronisation per monitoring interval
            mse = _mse_unit(model, mon_lr, mon_hr, device, execution)
            if not (math.isfinite(total) and math.isfinite(mse)):
                bar.close()
                raise diverged(step)
            monitor = _psnr_unit(mse)
            count = step % settings.monitor_every or settings.monitor_every
            curve.append(
                {
                    "step": step,
                    "seconds": elapsed,
                    "train_l1": total / count,
                    "monitor_psnr_db": monitor,
                    "monitor_bicubic_psnr_db": bicubic_psnr,
                }
            )
            bar.set_postfix(l1=f"{total / count:.4f}", gain_db=f"{monitor - bicubic_psnr:+.2f}")
            log.info(
                "step %d  L1 %.5f  monitor %.2f dB (bicubic %.2f dB)  %.0f s",
                step,
                total / count,
                monitor,
                bicubic_psnr,
                elapsed,
            )
            running.zero_()
        if out_of_time:
            log.info("stopping at the time budget of %.0f s after %d steps", elapsed, step)
            break
    bar.close()
    # Back to the default layout: callers and checkpoints see an ordinary module.
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return model, curve


def train_srdensenet_retrying(
    pairs: PatchPairs,
    model_config: dict[str, Any],
    settings: SRTrainingSettings,
    device: torch.device,
    progress: bool | None = None,
    *,
    divergence_retries: int = 0,
    divergence_lr_factor: float = 0.5,
    channels_last: bool | None = None,
    precision: str | None = None,
) -> SRTrainingRun:
    """``train_srdensenet``; on divergence, up to ``divergence_retries`` restarts from the same
    initial weights and data order (same seed) with the learning rate scaled by
    ``divergence_lr_factor`` each time."""
    if divergence_retries < 0 or not 0 < divergence_lr_factor < 1:
        raise ValueError(
            f"divergence_retries must be >= 0 and divergence_lr_factor in (0, 1), got "
            f"{divergence_retries} and {divergence_lr_factor}"
        )
    execution = resolve_execution(device, channels_last, precision)
    rates = [settings.learning_rate]
    while True:
        attempt = dataclasses.replace(settings, learning_rate=rates[-1])
        try:
            model, curve = train_srdensenet(
                pairs, model_config, attempt, device, progress,
                channels_last=execution.channels_last, precision=execution.precision,
            )  # fmt: skip
            return SRTrainingRun(model, curve, rates[-1], len(rates) - 1, execution)
        except SRDiverged as err:
            if len(rates) > divergence_retries:
                tried = ", ".join(f"{rate:.3g}" for rate in rates)
                retried = (
                    f" after {len(rates) - 1} retries (learning rates {tried})"
                    if len(rates) > 1
                    else ""
                )
                hint = "raise" if retried else "set"
                raise SRDiverged(
                    f"{err}{retried}; lower sr.training.learning_rate or {hint} "
                    "sr.training.divergence_retries to retry at a lower learning rate"
                ) from None
            rates.append(rates[-1] * divergence_lr_factor)
            log.warning(
                "%s; restarting from the initial weights with learning rate %.3g (retry %d of %d)",
                err,
                rates[-1],
                len(rates) - 1,
                divergence_retries,
            )


SR_FORMAT = "volinr-srdensenet-1"


def save_sr_checkpoint(
    path: str | os.PathLike, model: SRDenseNet, training: dict[str, Any], curve: list[dict]
) -> int:
    return save_checkpoint(
        path,
        SR_FORMAT,
        model,
        normalization="per-image min..max of the LR input",
        training=training,
        curve=curve,
    )


def load_sr_checkpoint(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[SRDenseNet, dict[str, Any]]:
    return load_checkpoint(path, SR_FORMAT, SRDenseNet, device)


def super_resolve(
    model: SRDenseNet,
    lr: np.ndarray,
    device: torch.device | str = "cpu",
    tile: int = 128,
    *,
    channels_last: bool | None = None,
    precision: str | None = None,
) -> np.ndarray:
    """x``scale`` super-resolution of a 2D image, or in-plane of every slice of a 3D volume.

    Each plane is normalised by its own min..max, as the training images were. Tiles of
    ``tile`` LR pixels, each read with a margin of the network's receptive radius, bound the
    memory on large inputs without seams. ``channels_last`` and ``precision`` default to
    ``default_execution(device)``; NaN/Inf weights, input or output raise FloatingPointError.
    """
    lr = np.asarray(lr, dtype=np.float32)
    if lr.ndim not in (2, 3):
        raise ValueError(f"super-resolution takes a 2D image or a 3D volume, got shape {lr.shape}")
    with _inference(model, device, channels_last, precision) as run:
        if lr.ndim == 3:
            return np.stack([run(plane, tile) for plane in lr])
        return run(lr, tile)


Z_RESTORE_METHODS = ("lanczos", "sr-coronal")


def super_resolve_volume(
    model: SRDenseNet,
    lr: np.ndarray,
    shape: tuple[int, int, int],
    device: torch.device | str = "cpu",
    z_restore: str = "lanczos",
    progress: bool | None = None,
    *,
    channels_last: bool | None = None,
    precision: str | None = None,
) -> np.ndarray:
    """Restore a (slices, rows, cols) volume to ``shape``: SRDenseNet in-plane on every axial
    slice, then the slice axis by Lanczos (default) or by SRDenseNet on coronal planes.

    The network is 2D and x``scale`` on both axes of a plane. For 'sr-coronal' each coronal
    plane (LR slices x full-resolution columns) is super-resolved, which also enlarges the
    columns a second time; those are brought back with antialiased Lanczos, so only the
    slice axis keeps the network's output. Any size left over (an odd full-resolution size)
    is matched by Lanczos. ``channels_last``/``precision``: as ``super_resolve``.
    """
    if z_restore not in Z_RESTORE_METHODS:
        raise ValueError(f"z_restore must be one of {Z_RESTORE_METHODS}, got {z_restore!r}")
    if progress is None:
        progress = os.isatty(2)
    with _inference(model, device, channels_last, precision) as run:
        planes = tqdm(lr, desc="SR axial", unit="slice", disable=not progress)
        axial = np.stack([run(np.asarray(plane, np.float32), 128) for plane in planes])
        if z_restore == "sr-coronal":
            columns = axial.shape[2]
            coronal = []
            for row in tqdm(range(axial.shape[1]), desc="SR coronal", disable=not progress):
                plane = run(axial[:, row, :], 128)
                coronal.append(resize(plane, (plane.shape[0], columns), "lanczos"))
            axial = np.stack(coronal, axis=1)
    return resize(axial, shape, "lanczos")


@contextlib.contextmanager
def _inference(
    model: SRDenseNet, device, channels_last: bool | None, precision: str | None
) -> Iterator[Callable[[np.ndarray, int], np.ndarray]]:
    """Checks the weights, puts the model in the execution's layout (restored afterwards) and
    yields a function that super-resolves one plane with a given tile size."""
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    execution = resolve_execution(device, channels_last, precision)
    what = f"{describe_model(model.config)} ({execution.describe()} on {device.type})"
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    if not bool(finite):
        raise FloatingPointError(f"refusing to super-resolve: the weights of {what} hold NaN/Inf")
    model.to(memory_format=execution.memory_format)
    try:
        with torch.inference_mode(), _autocast(device, execution):
            yield lambda plane, tile: _super_resolve_plane(
                model, plane, device, tile, execution, what
            )
    finally:
        model.to(memory_format=torch.contiguous_format)


def _super_resolve_plane(
    model: SRDenseNet, plane: np.ndarray, device, tile: int, execution: SRExecution, what: str
) -> np.ndarray:
    if not np.all(np.isfinite(plane)):
        raise FloatingPointError(f"refusing to super-resolve a {plane.shape} plane holding NaN/Inf")
    scale, margin = model.scale, model.receptive_radius_lr
    lo, hi = normalization_range(plane)
    normalised = (plane - lo) / (hi - lo)
    rows, cols = normalised.shape
    out = np.empty((rows * scale, cols * scale), np.float32)
    for i in range(0, rows, tile):
        for j in range(0, cols, tile):
            i0, j0 = max(0, i - margin), max(0, j - margin)
            i1, j1 = min(rows, i + tile + margin), min(cols, j + tile + margin)
            patch = np.ascontiguousarray(normalised[i0:i1, j0:j1])[None, None]
            result = model(to_model_input(patch, device, execution))[0, 0].float().cpu().numpy()
            ti, tj = (i - i0) * scale, (j - j0) * scale
            h, w = min(tile, rows - i) * scale, min(tile, cols - j) * scale
            out[i * scale : i * scale + h, j * scale : j * scale + w] = result[
                ti : ti + h, tj : tj + w
            ]
    if not np.all(np.isfinite(out)):
        # float16 can overflow where float32 would not: say which arithmetic was used.
        raise FloatingPointError(
            f"{what} produced NaN/Inf on a {plane.shape} plane; not writing it"
        )
    return out * (hi - lo) + lo


def settings_dict(settings: SRTrainingSettings) -> dict[str, Any]:
    return asdict(settings)
