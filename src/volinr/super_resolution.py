"""SRDenseNet inference: its checkpoint file, how it runs (channels-last, autocast), and
super-resolution of a slice or a volume, plus ``upsample_array``, the one function the
pipeline and every decoder use to restore full resolution.

Intensities: every image is mapped to [0, 1] by the min..max of its *low-resolution* version
(the only thing a decoder has), the network runs on that scale, and the output is mapped back.
This works for any CT or MR units without a fixed window and needs no clipping. Non-finite
weights, inputs or outputs are refused, never returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from volinr.checkpoints import load_checkpoint, save_checkpoint
from volinr.errors import InputError
from volinr.models.srdensenet import SRDenseNet
from volinr.resample import resize

log = logging.getLogger(__name__)


def normalization_range(lr_image: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(lr_image)), float(np.max(lr_image))
    if hi <= lo:
        hi = lo + 1.0  # a constant image: any scale maps it to 0
    return lo, hi


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


def sr_autocast(device: torch.device, execution: SRExecution):
    dtype = execution.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_model_input(array: np.ndarray, device: torch.device, execution: SRExecution):
    """A float32 (N, 1, H, W) array as a tensor on ``device`` in the execution's layout."""
    tensor = torch.from_numpy(array).to(device, non_blocking=True)
    return tensor.contiguous(memory_format=execution.memory_format)


def describe_model(config: dict[str, Any]) -> str:
    return "SRDenseNet " + ", ".join(f"{key} {value}" for key, value in config.items())


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
        with torch.inference_mode(), sr_autocast(device, execution):
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


def upsample_array(
    low: np.ndarray,
    shape: tuple[int, ...],
    method: str,
    sr_model: str = "",
    device=None,
    z_restore: str = "lanczos",
) -> np.ndarray:
    """Restore full resolution: SRDenseNet (in-plane, then the slice axis of a volume as
    ``z_restore`` says) or a Pillow filter. The pipeline and ``volinr decompress`` share it,
    so a decompressed file equals the pipeline's reconstruction."""
    shape = tuple(int(n) for n in shape)
    if low.ndim != len(shape):
        raise InputError(f"a {low.ndim}D image cannot be upsampled to shape {shape}")
    if method != "sr":
        return resize(low, shape, method)
    if not sr_model:
        raise InputError("upsampling by SR needs an SR model (--sr-model)")
    model, _ = load_sr_checkpoint(sr_model, device)
    if low.ndim == 3:
        high = super_resolve_volume(model, low, shape, device, z_restore)
    else:
        high = super_resolve(model, low, device)
    # SR gives scale x the LR grid; odd full-resolution sizes are matched by a small resize.
    return high if high.shape == shape else resize(high, shape, "lanczos")
