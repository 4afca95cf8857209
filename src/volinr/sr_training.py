"""SRDenseNet pretraining on LR/HR patch pairs, and super-resolution inference.

Intensities: every image is mapped to [0, 1] by the min..max of its *low-resolution* version
(the only thing a decoder has), the network runs on that scale, and the output is mapped back.
This works for any CT or MR units without a fixed window and needs no clipping.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from volinr.checkpoints import load_checkpoint, save_checkpoint
from volinr.io import InputError
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


def _psnr_unit(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR with peak 1 on the normalised scale (monitoring only)."""
    mse = F.mse_loss(prediction, target).item()
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def train_srdensenet(
    pairs: PatchPairs,
    model_config: dict[str, Any],
    settings: SRTrainingSettings,
    device: torch.device,
    progress: bool | None = None,
) -> tuple[SRDenseNet, list[dict[str, float]]]:
    """Adam + L1 on random patch pairs; returns the model and its training curve."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = SRDenseNet(scale=pairs.factor, **model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    # A fixed monitoring batch (drawn from the training images, so it measures the fit, not
    # generalisation) shows progress against bicubic on the same patches.
    mon_lr, mon_hr = (
        torch.from_numpy(a).to(device)
        for a in pairs.sample(
            np.random.default_rng(settings.seed + 1), settings.monitor_patches, settings.lr_patch
        )
    )
    bicubic_psnr = _psnr_unit(
        F.interpolate(mon_lr, scale_factor=pairs.factor, mode="bicubic", align_corners=False),
        mon_hr,
    )
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    if progress is None:
        progress = os.isatty(2)
    bar = tqdm(total=settings.steps, desc="SRDenseNet", disable=not progress)
    running = 0.0
    for step in range(1, settings.steps + 1):
        lr_batch, hr_batch = (
            torch.from_numpy(a).to(device)
            for a in pairs.sample(rng, settings.batch_size, settings.lr_patch)
        )
        loss = F.l1_loss(model(lr_batch), hr_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
        bar.update()
        elapsed = time.perf_counter() - start
        out_of_time = settings.max_seconds > 0 and elapsed >= settings.max_seconds
        if step % settings.monitor_every == 0 or step == settings.steps or out_of_time:
            if not math.isfinite(running):
                raise FloatingPointError(f"SRDenseNet training diverged at step {step} (loss NaN)")
            with torch.no_grad():
                model.eval()
                monitor = _psnr_unit(model(mon_lr), mon_hr)
                model.train()
            count = step % settings.monitor_every or settings.monitor_every
            curve.append(
                {
                    "step": step,
                    "seconds": elapsed,
                    "train_l1": running / count,
                    "monitor_psnr_db": monitor,
                    "monitor_bicubic_psnr_db": bicubic_psnr,
                }
            )
            bar.set_postfix(l1=f"{running / count:.4f}", gain_db=f"{monitor - bicubic_psnr:+.2f}")
            log.info(
                "step %d  L1 %.5f  monitor %.2f dB (bicubic %.2f dB)  %.0f s",
                step,
                running / count,
                monitor,
                bicubic_psnr,
                elapsed,
            )
            running = 0.0
        if out_of_time:
            log.info("stopping at the time budget of %.0f s after %d steps", elapsed, step)
            break
    bar.close()
    model.eval()
    return model, curve


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
    model: SRDenseNet, lr: np.ndarray, device: torch.device | str = "cpu", tile: int = 128
) -> np.ndarray:
    """x``scale`` super-resolution of a 2D image, or in-plane of every slice of a 3D volume.

    Each plane is normalised by its own min..max, as the training images were. Tiles of
    ``tile`` LR pixels, each read with a margin of the network's receptive radius, bound the
    memory on large inputs without seams.
    """
    lr = np.asarray(lr, dtype=np.float32)
    if lr.ndim == 3:
        return np.stack([_super_resolve_plane(model, plane, device, tile) for plane in lr])
    if lr.ndim != 2:
        raise ValueError(f"super-resolution takes a 2D image or a 3D volume, got shape {lr.shape}")
    return _super_resolve_plane(model, lr, device, tile)


Z_RESTORE_METHODS = ("lanczos", "sr-coronal")


def super_resolve_volume(
    model: SRDenseNet,
    lr: np.ndarray,
    shape: tuple[int, int, int],
    device: torch.device | str = "cpu",
    z_restore: str = "lanczos",
    progress: bool | None = None,
) -> np.ndarray:
    """Restore a (slices, rows, cols) volume to ``shape``: SRDenseNet in-plane on every axial
    slice, then the slice axis by Lanczos (default) or by SRDenseNet on coronal planes.

    The network is 2D and x``scale`` on both axes of a plane. For 'sr-coronal' each coronal
    plane (LR slices x full-resolution columns) is super-resolved, which also enlarges the
    columns a second time; those are brought back with antialiased Lanczos, so only the
    slice axis keeps the network's output. Any size left over (an odd full-resolution size)
    is matched by Lanczos.
    """
    if z_restore not in Z_RESTORE_METHODS:
        raise ValueError(f"z_restore must be one of {Z_RESTORE_METHODS}, got {z_restore!r}")
    if progress is None:
        progress = os.isatty(2)
    planes = tqdm(lr, desc="SR axial", unit="slice", disable=not progress)
    axial = np.stack([_super_resolve_plane(model, plane, device, 128) for plane in planes])
    if z_restore == "sr-coronal":
        columns = axial.shape[2]
        coronal = []
        for row in tqdm(range(axial.shape[1]), desc="SR coronal", disable=not progress):
            plane = _super_resolve_plane(model, axial[:, row, :], device, 128)
            coronal.append(resize(plane, (plane.shape[0], columns), "lanczos"))
        axial = np.stack(coronal, axis=1)
    return resize(axial, shape, "lanczos")


def _super_resolve_plane(model: SRDenseNet, plane: np.ndarray, device, tile: int) -> np.ndarray:
    scale, margin = model.scale, model.receptive_radius_lr
    lo, hi = normalization_range(plane)
    normalised = (plane - lo) / (hi - lo)
    rows, cols = normalised.shape
    out = np.empty((rows * scale, cols * scale), np.float32)
    with torch.inference_mode():
        for i in range(0, rows, tile):
            for j in range(0, cols, tile):
                i0, j0 = max(0, i - margin), max(0, j - margin)
                i1, j1 = min(rows, i + tile + margin), min(cols, j + tile + margin)
                patch = torch.from_numpy(np.ascontiguousarray(normalised[i0:i1, j0:j1]))
                result = model(patch[None, None].to(device))[0, 0].cpu().numpy()
                ti, tj = (i - i0) * scale, (j - j0) * scale
                h, w = min(tile, rows - i) * scale, min(tile, cols - j) * scale
                out[i * scale : i * scale + h, j * scale : j * scale + w] = result[
                    ti : ti + h, tj : tj + w
                ]
    return out * (hi - lo) + lo


def settings_dict(settings: SRTrainingSettings) -> dict[str, Any]:
    return asdict(settings)
