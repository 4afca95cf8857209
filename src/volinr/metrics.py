"""Image quality and size metrics.

PSNR as the paper defines it: both images mapped to 8 bits through the same intensity window
(taken from the reference), rounded to integers, then 10 log10(255^2 / MSE). Beside it, PSNR on
the native range (peak = the reference's max - min) and SSIM (scikit-image, data_range given).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from skimage.metrics import structural_similarity


def window_to_8bit(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear window low..high -> 0..255, clipped and rounded to uint8."""
    if high <= low:
        raise ValueError(f"empty intensity window {low}..{high}")
    scaled = (np.asarray(image, dtype=np.float64) - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def mean_squared_error(
    reference: np.ndarray,
    test: np.ndarray,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    slab_voxels: int = 1 << 22,
) -> float:
    """MSE in float64, computed in slabs along the first axis so that a whole CT volume needs
    no float64 copy of itself; ``transform`` (e.g. an 8-bit window) is applied to both."""
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    if reference.ndim < 3:
        reference, test = reference[None], test[None]
    step = max(1, slab_voxels // max(1, reference[0].size))
    total = 0.0
    for start in range(0, reference.shape[0], step):
        a = np.asarray(reference[start : start + step], np.float64)
        b = np.asarray(test[start : start + step], np.float64)
        if transform is not None:
            a, b = transform(a).astype(np.float64), transform(b).astype(np.float64)
        total += float(np.sum((a - b) ** 2))
    return total / reference.size


def _db(mse: float, peak: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr(reference: np.ndarray, test: np.ndarray, peak: float) -> float:
    """10 log10(peak^2 / MSE) in dB; inf for identical images."""
    return _db(mean_squared_error(reference, test), peak)


def psnr_8bit(reference: np.ndarray, test: np.ndarray, window: Sequence[float]) -> float:
    """The paper's PSNR: both images windowed to 8 bits with the same window, peak 255."""
    low, high = window
    return _db(mean_squared_error(reference, test, lambda a: window_to_8bit(a, low, high)), 255.0)


def psnr_native(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR on the original units with peak = the reference's data range."""
    return psnr(reference, test, float(np.max(reference) - np.min(reference)))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM on the original units, data_range = the reference's max - min.

    A volume's SSIM is the mean of its axial slices' 2D SSIM (same data_range): the same
    quantity as for a single slice, and memory-bounded where a 3D SSIM of a 512x512x463
    volume would need several float64 copies of it.
    """
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.ndim == 3:
        return float(np.mean(per_slice_ssim(reference, test)))
    data_range = float(reference.max() - reference.min())
    return _ssim_2d(reference, test, data_range)


def _ssim_2d(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    return float(
        structural_similarity(
            np.asarray(reference, np.float64), np.asarray(test, np.float64), data_range=data_range
        )
    )


def per_slice_ssim(reference: np.ndarray, test: np.ndarray) -> list[float]:
    data_range = float(reference.max() - reference.min())
    return [_ssim_2d(a, b, data_range) for a, b in zip(reference, test, strict=True)]


def per_slice_metrics(
    reference: np.ndarray, test: np.ndarray, window: Sequence[float]
) -> list[dict[str, float]]:
    """PSNR (8-bit in the volume's ``window``, native with the volume's peak) and SSIM of
    every axial slice: where along the volume a method loses quality (a 2D image: one row)."""
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    if reference.ndim == 2:
        reference, test = reference[None], test[None]
    low, high = window
    peak = float(np.max(reference) - np.min(reference))
    ssims = per_slice_ssim(reference, test)
    return [
        {
            "slice": index,
            "psnr_8bit_db": psnr_8bit(reference[index], test[index], (low, high)),
            "psnr_native_db": psnr(reference[index], test[index], peak),
            "ssim": ssims[index],
        }
        for index in range(reference.shape[0])
    ]


def minmax_window(reference: np.ndarray) -> tuple[float, float]:
    return float(np.min(reference)), float(np.max(reference))


def tissue_window(reference: np.ndarray, low: float, high: float | None) -> tuple[float, float]:
    """A window that ignores padding below ``low`` (e.g. -3024 HU outside the scan field)."""
    top = float(np.max(reference)) if high is None or math.isnan(high) else float(high)
    return float(low), top


def compression_rate(original_bytes: float, compressed_bytes: float) -> float:
    return original_bytes / compressed_bytes


def bits_per_voxel(compressed_bytes: float, voxels: int) -> float:
    return 8.0 * compressed_bytes / voxels
