"""Image quality and size metrics.

PSNR as the paper defines it: both images mapped to 8 bits through the same intensity window
(taken from the reference), rounded to integers, then 10 log10(255^2 / MSE). Beside it, PSNR on
the native range (peak = the reference's max - min) and SSIM (scikit-image, data_range given).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from skimage.metrics import structural_similarity


def window_to_8bit(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear window low..high -> 0..255, clipped and rounded to uint8."""
    if high <= low:
        raise ValueError(f"empty intensity window {low}..{high}")
    scaled = (np.asarray(image, dtype=np.float64) - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def psnr(reference: np.ndarray, test: np.ndarray, peak: float) -> float:
    """10 log10(peak^2 / MSE) in dB; inf for identical images."""
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    mse = float(np.mean((reference - test) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr_8bit(reference: np.ndarray, test: np.ndarray, window: Sequence[float]) -> float:
    """The paper's PSNR: both images windowed to 8 bits with the same window, peak 255."""
    low, high = window
    return psnr(window_to_8bit(reference, low, high), window_to_8bit(test, low, high), 255.0)


def psnr_native(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR on the original units with peak = the reference's data range."""
    return psnr(reference, test, float(np.max(reference) - np.min(reference)))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM on the original units, data_range = the reference's max - min."""
    reference = np.asarray(reference, dtype=np.float64)
    data_range = float(reference.max() - reference.min())
    return float(
        structural_similarity(reference, np.asarray(test, np.float64), data_range=data_range)
    )


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
