"""Image quality and size metrics.

PSNR as the paper defines it: both images mapped to 8 bits through the same intensity window
(taken from the reference), rounded to integers, then 10 log10(255^2 / MSE). Beside it, PSNR on
the native range (peak = the reference's max - min) and SSIM (scikit-image, data_range given).

Every range and error is computed in float64 from exact integer differences, never in the
array's own dtype: an int16 CT with -32768 padding has a max - min of 34,767, which int16 wraps
to -30,769, and float32 merges distinct int32 values above 2^24.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from skimage.metrics import structural_similarity


def data_range(array: np.ndarray) -> float:
    """max - min of ``array`` as a float, exact for every integer dtype (Python integers do
    not wrap), where ``array.max() - array.min()`` wraps in the array's own dtype."""
    array = np.asarray(array)
    high, low = np.max(array), np.min(array)
    if array.dtype.kind in "iub":
        return float(int(high) - int(low))
    return float(high) - float(low)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b in float64, rounded once: float64 holds every integer of up to 32 bits exactly,
    and 64-bit integers are subtracted exactly before the difference is rounded (a float64
    copy of values near 2^62 would merge neighbours and cancel to 0)."""
    a, b = np.asarray(a), np.asarray(b)
    wide = {np.dtype(np.int64), np.dtype(np.uint64)}
    if not (a.dtype.kind in "iu" and b.dtype.kind in "iu" and {a.dtype, b.dtype} & wide):
        return np.asarray(a, np.float64) - np.asarray(b, np.float64)
    # Of the same sign, |a - b| < 2^64: uint64 arithmetic modulo 2^64 gives it exactly. Of
    # opposite signs, float64 adds two magnitudes: rounding, but no cancellation.
    same_sign = (a < 0) == (b < 0)
    a_bits, b_bits = _uint64_bits(a), _uint64_bits(b)
    above = np.greater_equal(a, b)  # NumPy compares int64 with uint64 exactly
    magnitude = np.where(above, a_bits - b_bits, b_bits - a_bits).astype(np.float64)
    exact = np.where(above, magnitude, -magnitude)
    return np.where(same_sign, exact, a.astype(np.float64) - b.astype(np.float64))


def _uint64_bits(values: np.ndarray) -> np.ndarray:
    """Integers as uint64 bit patterns (two's complement for signed ones)."""
    if values.dtype.kind == "i":
        return values.astype(np.int64).view(np.uint64)
    return values.astype(np.uint64)


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
        a, b = reference[start : start + step], test[start : start + step]
        if transform is not None:
            a, b = transform(a), transform(b)
        total += float(np.sum(difference(a, b) ** 2))
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
    return psnr(reference, test, data_range(reference))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM on the original units, data_range = the reference's max - min.

    A volume's SSIM is the mean of its axial slices' 2D SSIM (same data_range): the same
    quantity as for a single slice, and memory-bounded where a 3D SSIM of a 512x512x463
    volume would need several float64 copies of it.
    """
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.ndim == 3:
        return float(np.mean(per_slice_ssim(reference, test)))
    return _ssim_2d(reference, test, data_range(reference))


def _ssim_2d(reference: np.ndarray, test: np.ndarray, peak: float) -> float:
    # float64 holds every integer of up to 32 bits exactly; SSIM's means and variances are
    # computed in float64 by scikit-image either way
    return float(
        structural_similarity(
            np.asarray(reference, np.float64), np.asarray(test, np.float64), data_range=peak
        )
    )


def per_slice_ssim(reference: np.ndarray, test: np.ndarray) -> list[float]:
    peak = data_range(reference)
    return [_ssim_2d(a, b, peak) for a, b in zip(reference, test, strict=True)]


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
    peak = data_range(reference)
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
