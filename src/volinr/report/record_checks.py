"""What a metrics record must be before a table reads it: its numbers numbers (finite, a PSNR
a plausible one) and its labels text, each refusal naming the record's file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from volinr.errors import InputError


def check_record_finite(path: str | Path, record: dict[str, Any]) -> None:
    """A measured value (PSNR, SSIM, seconds, sizes) that is NaN/Inf is a failed run, not a
    missing number: refuse it here, where the file is known; a table's mean would skip a NaN
    silently. The one exception is a PSNR of +inf: a lossless reconstruction (MSE 0). Missing
    keys stay missing (NaN in the frame, 'n/a' in the Markdown)."""
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a metrics record (a JSON object)")
    _check_types(path, record)
    for key, value in record.items():
        values = value if isinstance(value, list) else [value]
        lossless = "psnr" in key and all(v == math.inf for v in values)
        if not lossless and any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise FloatingPointError(f"{path}: measured value {key} is {value} (not finite)")


# Fields the tables compute with or group by: numbers (or null: missing), and labels (text).
TEXT_KEYS = ("method", "family", "kind", "setting", "group", "point", "units")
# A PSNR beyond this is no measurement (a 16-bit image's exact PSNR is below 200 dB); the
# BD-rate's interpolation overflows on 1e308.
MAX_PSNR_DB = 1000.0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_types(path: str | Path, record: dict[str, Any]) -> None:
    """A record's numbers are numbers and its labels text, each named with its file."""
    for key, value in record.items():
        numeric = (
            "psnr" in key
            or key in ("ssim", "bytes", "iterations", "parameter_count")
            or key == "lambda"
            or key.startswith(("bits_per_voxel", "compression_rate"))
            or key.endswith(("_seconds", "_bytes"))
        )
        if numeric and "reason" not in key and value is not None and not _is_number(value):
            raise InputError(f"{path}: {key} is {value!r}, not a number")
        if key in ("layers", "seed") and not (value is None or _is_number(value)):
            raise InputError(f"{path}: a record whose {key} is {value!r}; {key} must be an integer")
        if key in TEXT_KEYS and value is not None and not isinstance(value, str):
            raise InputError(f"{path}: {key} is {value!r}, not text")
        if "psnr" in key and _is_number(value) and math.isfinite(value):
            if abs(value) > MAX_PSNR_DB:
                raise InputError(f"{path}: {key} is {value:g} dB, not a PSNR")
