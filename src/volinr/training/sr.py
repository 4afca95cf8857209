"""SRDenseNet pretraining on LR/HR patch pairs (L1, Adam), with a monitor of held-out patches;
a NaN/Inf loss stops training naming the configuration, or restarts it at a lower learning
rate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from volinr.errors import InputError
from volinr.io import sha256_file
from volinr.models.srdensenet import SRDenseNet
from volinr.resample import lanczos_resize
from volinr.super_resolution import (
    SRExecution,
    describe_model,
    normalization_range,
    resolve_execution,
    sr_autocast,
    to_model_input,
)

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


def make_train_step(
    model: SRDenseNet, learning_rate: float, execution: SRExecution, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One Adam + L1 step as a function of (LR batch, HR batch) -> the loss, left on the device
    (no host synchronisation). float16 scales the loss so that small gradients survive."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=execution.precision == "float16")

    def step(lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> torch.Tensor:
        with sr_autocast(device, execution):
            prediction = model(lr_batch)
        loss = F.l1_loss(prediction.float(), hr_batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # with float16, skips a step whose gradients overflowed
        scaler.update()
        return loss.detach()

    return step


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
    with torch.inference_mode(), sr_autocast(device, execution):
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


def settings_dict(settings: SRTrainingSettings) -> dict[str, Any]:
    return asdict(settings)


def checkpoint_reuse_reason(args, split: dict) -> str | None:
    """Why the committed checkpoint cannot be reused (None: it can). ``args`` carries
    ``retrain``, ``pretrained`` (its path), ``pretrained_sha256``, ``model``, ``factor`` and
    ``settings``; ``split`` is this run's training split (``volinr sr-dataset``)."""
    from volinr.super_resolution import load_sr_checkpoint

    if args.retrain:
        return "retraining was asked for"
    if not args.pretrained:
        return "no pretrained checkpoint is configured"
    path = Path(args.pretrained)
    if not path.is_file():
        return f"{path} does not exist"
    seen = sha256_file(path)
    if seen != args.pretrained_sha256:
        return f"{path} has sha256 {seen}, the config expects {args.pretrained_sha256 or 'none'}"
    _, payload = load_sr_checkpoint(path)
    wanted = dict(args.model, scale=args.factor)
    if "training" not in payload:
        return f"{path} has no training record"
    if payload["config"] != wanted:
        return f"{path} holds architecture {payload['config']}, the config asks for {wanted}"
    trained_on = [r["sha256"] for r in payload["training"]["split"]["training"]]
    if trained_on != [r["sha256"] for r in split["training"]]:
        return f"{path} was trained on other images than this run's training split"
    if split["evaluation"]["sha256"] in trained_on:
        return f"{path} was trained on this run's evaluation image"
    if payload["training"]["settings"] != args.settings:
        return f"{path} was trained with other settings than the config's"
    return None
