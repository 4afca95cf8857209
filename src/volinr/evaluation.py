"""The quality of a reconstruction against the original, measured the same way for every
method: 8-bit PSNR in the original's min..max window (the paper's) and in a tissue window,
native PSNR (peak = the data range), SSIM (a volume's is the mean over its axial slices), the
largest error in HU, and the share of padding below the tissue window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volinr import metrics
from volinr.errors import InputError

SSIM_WINDOW = 7  # scikit-image's default window side


def check_pair(
    reference: np.ndarray, reconstruction: np.ndarray, reference_name: str, name: str
) -> None:
    """The same shape, and slices large enough for SSIM (else an error naming both)."""
    if reconstruction.shape != reference.shape:
        raise InputError(
            f"{name}: shape {reconstruction.shape} differs from the reference {reference_name} "
            f"{reference.shape}"
        )
    if min(reference.shape[-2:]) < SSIM_WINDOW:  # SSIM's window must fit in every slice
        raise InputError(
            f"{reference_name}: slices of {reference.shape[-2]}x{reference.shape[-1]} are too "
            f"small for SSIM (its window is {SSIM_WINDOW}x{SSIM_WINDOW})"
        )


# The largest magnitude an image may hold: float64's exact integers end at 2^53.
MAX_ABS_VALUE = float(1 << 53)


def admit(reference: np.ndarray, name: str) -> None:
    """What every image measured against must be, checked before anything runs on it (every
    measuring stage calls this): slices at least SSIM's window on a side, and a non-empty
    min..max window (a constant image has no PSNR peak); else an InputError naming it."""
    check_pair(reference, reference, name, name)
    low, high = metrics.minmax_window(reference)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{name}: the image holds values that are not finite")
    if max(abs(low), abs(high)) > MAX_ABS_VALUE:
        raise InputError(
            f"{name}: values {low:g}..{high:g} lie beyond +-2^53, where float64 has no exact "
            "integers: no codec here codes them and their errors cannot be measured exactly"
        )
    if not high > low:
        raise InputError(
            f"{name}: the image is constant ({low:g}); its quality cannot be measured (no "
            "intensity range for PSNR)"
        )


def windows(
    reference: np.ndarray, tissue_window: Sequence[float], reference_name: str
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The min..max window and the tissue window (a NaN high end: the image maximum)."""
    minmax = metrics.minmax_window(reference)
    low, high = tissue_window
    # a NaN low end would make every image equal in this window
    if not math.isfinite(low) or math.isinf(high):
        raise InputError(
            f"--tissue-window {low:g} {high:g}: low must be a finite number, high a finite "
            "number or nan (the image maximum)"
        )
    tissue = metrics.tissue_window(reference, low, high)
    for name, (low, high) in (("min..max", minmax), ("tissue", tissue)):
        if high <= low:
            raise InputError(f"{reference_name}: the {name} window {low:g}..{high:g} is empty")
    return minmax, tissue


def quality(
    reference: np.ndarray,
    reconstruction: np.ndarray,
    minmax: tuple[float, float],
    tissue: tuple[float, float],
) -> dict[str, Any]:
    return {
        "voxels": int(reference.size),
        "window_minmax": list(minmax),
        "window_tissue": list(tissue),
        "psnr_8bit_minmax_db": metrics.psnr_8bit(reference, reconstruction, minmax),
        "psnr_8bit_tissue_db": metrics.psnr_8bit(reference, reconstruction, tissue),
        "psnr_native_db": metrics.psnr_native(reference, reconstruction),
        "ssim": metrics.ssim(reference, reconstruction),
        "padding_fraction": float(np.mean(reference < tissue[0])),
    }


def max_abs_error_hu(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """The largest |error| in the image's units, computed exactly (no integer wrap)."""
    return float(np.max(np.abs(metrics.difference(reference, reconstruction))))


def finish(result: dict[str, Any], name: str) -> dict[str, Any]:
    """Refuse a NaN metric; say why a PSNR is infinite (written as null in JSON)."""
    for key, value in result.items():
        if isinstance(value, float) and math.isnan(value):
            raise FloatingPointError(f"{name}: metric {key} is NaN")
    lossless = [key for key, value in result.items() if "psnr" in key and value == math.inf]
    if lossless:  # written as null (JSON has no infinity) and listed under infinite_values
        result["psnr_infinite_reason"] = "; ".join(_infinite_reason(key) for key in lossless)
    return result


def _infinite_reason(key: str) -> str:
    """What is equal when a PSNR is infinite: after 8-bit windowing, or the values exactly."""
    if "8bit" in key:
        return (
            f"{key}: MSE 0 after both images are windowed to 8 bits (equal there; the values "
            "themselves may differ within a gray level: see psnr_native_db, max_abs_error_hu)"
        )
    return f"{key}: MSE 0, every value identical to the original"


def per_slice_rows(
    reference: np.ndarray,
    reconstruction: np.ndarray,
    minmax: tuple[float, float],
    label: Mapping[str, Any],
) -> list[dict[str, Any]]:
    return [
        dict(label) | row for row in metrics.per_slice_metrics(reference, reconstruction, minmax)
    ]
