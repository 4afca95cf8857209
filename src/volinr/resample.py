"""Resampling of 2D slices and 3D volumes.

Pillow's Lanczos filter on mode 'F' (float32) images widens its kernel by the shrink factor, so
downsampling is antialiased the way image libraries do it. SimpleITK's windowed-sinc resampler
does not widen the kernel and aliases, so it is not used for downsampling. Pillow only handles
2D planes; an N-D resize is done separably, one axis at a time, so the same function serves
slices and volumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from volinr.errors import InputError

_FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
}


def _resize_rows(rows: np.ndarray, length: int, method: str) -> np.ndarray:
    """Resize the last axis of a 2D (n, m) block: each row becomes a 1 x m Pillow image."""
    out = np.empty((rows.shape[0], length), dtype=np.float32)
    # Stacking rows as one tall image is fast; Pillow limits an image's height, hence chunks.
    chunk = 16384
    for start in range(0, rows.shape[0], chunk):
        block = np.ascontiguousarray(rows[start : start + chunk], dtype=np.float32)
        image = Image.fromarray(block, mode="F")
        resized = image.resize((length, block.shape[0]), _FILTERS[method])
        out[start : start + chunk] = np.asarray(resized, dtype=np.float32)
    return out


def _resize_axis(
    array: np.ndarray, axis: int, length: int, method: str, slab_voxels: int
) -> np.ndarray:
    """Resize one axis with Pillow, leaving the other axes untouched.

    The work goes in slabs along another axis, converted to float32 one slab at a time, so the
    memory beyond input and output is one slab (a 512x512x463 int16 volume needs no float32
    copy of itself).
    """
    if array.shape[axis] == length:
        return array
    shape = list(array.shape)
    shape[axis] = length
    out = np.empty(shape, dtype=np.float32)
    others = [a for a in range(array.ndim) if a != axis]
    if not others:
        return _resize_rows(array[None], length, method)[0]
    slab_axis = others[0]
    per_index = max(1, array.size // array.shape[slab_axis])
    step = max(1, slab_voxels // per_index)
    for start in range(0, array.shape[slab_axis], step):
        index = [slice(None)] * array.ndim
        index[slab_axis] = slice(start, start + step)
        slab = np.moveaxis(array[tuple(index)], axis, -1)
        resized = _resize_rows(slab.reshape(-1, slab.shape[-1]), length, method)
        out[tuple(index)] = np.moveaxis(resized.reshape(*slab.shape[:-1], length), -1, axis)
    return out


def resize(
    array: np.ndarray,
    shape: Sequence[int],
    method: str = "lanczos",
    slab_voxels: int = 1 << 24,
) -> np.ndarray:
    """Resize a 2D or 3D array to ``shape``, separably, with a Pillow filter.

    Any numeric dtype in (converted slab by slab), float32 out, no clipping (Lanczos
    overshoots at edges; that is kept). ``slab_voxels`` bounds the working memory per step.
    """
    if method not in _FILTERS:
        raise ValueError(f"unknown resampling method {method!r}; choose from {sorted(_FILTERS)}")
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"cannot resize an array of dtype {array.dtype}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != array.ndim:
        raise ValueError(f"target shape {shape} has {len(shape)} axes, the array has {array.ndim}")
    if any(s < 1 for s in shape):
        raise ValueError(f"target shape {shape} must be positive on every axis")
    out = array
    # Shrinking axes first keeps the intermediate arrays small.
    order = sorted(range(array.ndim), key=lambda axis: shape[axis] / array.shape[axis])
    for axis in order:
        out = _resize_axis(out, axis, shape[axis], method, slab_voxels)
    return np.ascontiguousarray(out, dtype=np.float32)


def lanczos_resize(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Antialiased Lanczos-3 resize of a 2D or 3D float array (Pillow, separable per axis)."""
    return resize(array, shape, "lanczos")


class TooSmallError(InputError, ValueError):
    """An array too small for a downsampling: bad input, so ``volinr`` reports it without a
    traceback; still a ValueError for callers that add the file's name to it."""


def downsampled_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """The low-resolution grid for a downsampling ``factor`` on every axis (rounded, >= 1)."""
    if factor < 1:
        raise ValueError(f"downsampling factor must be >= 1, got {factor}")
    small = tuple(max(1, round(s / factor)) for s in shape)
    if any(s < 2 for s in small):
        raise TooSmallError(
            f"an array of shape {tuple(shape)} is too small for a x{factor} downsampling "
            f"(it would give {small})"
        )
    return small
