"""One admission for the voxels every reader returns (DICOM, NIfTI, arrays).

A volume is float32 in this project. A reader hands over its file's values as stored, times any
scaling, and this module either returns them as float32 without changing a value that matters
or refuses them naming the file: values that are not finite, values beyond float32's range,
and integer data beyond +-2^24, where float32's 24-bit significand would round them (a CT
stored as int32 with such values would lose them silently). Non-integer data is rounded to
float32's 7 significant digits, which no CT intensity resolves.
"""

from __future__ import annotations

import numpy as np

from volinr.errors import InputError

FLOAT32_EXACT = 1 << 24  # every integer of magnitude <= 2^24 is exact in float32


def float32_voxels(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as contiguous float32, or an InputError naming ``name`` (see above)."""
    values = np.asarray(values)
    if values.dtype.kind not in "iuf":
        raise InputError(f"{name}: voxels of dtype {values.dtype} are not numbers")
    if values.size == 0:
        return np.ascontiguousarray(values, dtype=np.float32)
    if values.dtype.kind in "iu":
        if max(abs(int(values.min())), abs(int(values.max()))) > FLOAT32_EXACT:
            raise InputError(
                f"{name}: integers beyond +-2^24 are not exact in float32; rescale them first"
            )
        return np.ascontiguousarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    nans = int(np.isnan(values).sum())
    infs = int(values.size - finite.sum()) - nans
    if nans or infs:
        raise InputError(f"{name}: {nans} NaN and {infs} Inf voxel(s); a volume must be finite")
    largest = float(np.abs(values).max())
    with np.errstate(over="ignore"):
        voxels = np.ascontiguousarray(values, dtype=np.float32)
    overflow = int(np.isinf(voxels).sum())  # finite float64 beyond float32's range
    if overflow:
        raise InputError(
            f"{name}: {overflow} out-of-float32-range voxel(s) (largest magnitude "
            f"{largest:g}); a volume must be finite in float32"
        )
    # float64 integer data beyond float32's exact integers: refused, never rounded
    if largest > FLOAT32_EXACT and values.dtype.itemsize > 4:
        if np.array_equal(values, np.rint(values)):
            raise InputError(
                f"{name}: integers beyond +-2^24 are not exact in float32; rescale them first"
            )
    return voxels
