"""Reading a NIfTI file into a volume, its geometry from the affine (RAS) in DICOM's LPS."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from volinr.data.admission import float32_voxels
from volinr.data.geometry import LPS_TO_RAS, Volume, check_geometry, geometry_meta, unit_vector
from volinr.errors import InputError

log = logging.getLogger(__name__)


def read_nifti(path: str | os.PathLike, source: str = "") -> Volume:
    """Read a 3D NIfTI file (.nii or .nii.gz) into the DICOM-style layout and LPS geometry.

    NIfTI holds ``data[i, j, k]`` and an affine (nibabel's choice of sform/qform) from voxel
    (i, j, k) to RAS+ mm. Here ``voxels[k, j, i] = data[i, j, k]``: slices follow k, rows j,
    columns i. LPS is RAS with the first two world axes negated, so the row cosines are the
    LPS direction of the affine's i column, the column cosines that of its j column, the
    spacing the three columns' norms and the origin the LPS position of voxel (0, 0, 0).

    When the affine is left-handed (negative determinant, e.g. the radiological LAS layout),
    k would run against row x column cosines, and a DICOM reader would put the slices in the
    other order; the rows (j) are then reversed, so that slices ascend along ``slice_normal``
    while a slice index still means the same slice as in the file (``meta["rows_reversed"]``).

    ``scl_slope``/``scl_inter`` are applied; voxels are float32. A NaN or Inf voxel, data
    that is not 3D (a 4D file with one volume is accepted), or an affine that is not a
    geometry (:func:`~volinr.data.geometry.check_geometry`: NaN or Inf, absurd voxel sizes,
    rows not perpendicular to columns) raises :class:`InputError`; slices tilted against the
    rows and columns (gantry tilt) are kept, with a warning.
    """
    import nibabel as nib

    path = Path(path)
    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as err:  # nibabel raises many types on files it cannot read
        raise InputError(f"{path}: not a readable NIfTI file ({err})") from None
    shape = tuple(image.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise InputError(f"{path}: expected a 3D volume, found shape {shape}")
    if min(shape) < 1:
        raise InputError(f"{path}: an empty volume (shape {shape})")
    try:
        # the values as stored times the scaling, in float64 first: float32 is checked to hold
        # them exactly (as kind array's reader checks), never rounded silently
        exact = image.get_fdata(dtype=np.float64, caching="unchanged").reshape(shape[:3])
    except Exception as err:  # gzip and zlib errors on a damaged file, RGB data...
        raise InputError(f"{path}: NIfTI data not readable ({err})") from None
    data = float32_voxels(exact, str(path))
    del exact

    if not (int(image.header["sform_code"]) or int(image.header["qform_code"])):
        log.warning("%s: no sform or qform: the orientation is nibabel's default guess", path)
    if not np.all(np.isfinite(image.affine)):
        raise InputError(
            f"{path}: geometry unusable: its affine (sform/qform) holds NaN or Inf: "
            f"{np.asarray(image.affine).tolist()}"
        )
    affine = LPS_TO_RAS @ np.asarray(image.affine, float)  # RAS -> LPS
    columns = affine[:3, :3]
    norms = np.linalg.norm(columns, axis=0)
    if np.any(norms < 1e-9):
        raise InputError(f"{path}: degenerate affine (a zero voxel size): {image.affine.tolist()}")
    row_cosines, column_cosines, slice_step = (
        columns[:, 0] / norms[0],
        columns[:, 1] / norms[1],
        columns[:, 2],
    )
    origin = affine[:3, 3]
    voxels = np.ascontiguousarray(data.transpose(2, 1, 0))
    rows_reversed = bool(np.linalg.det(columns) < 0)
    if rows_reversed:
        voxels = np.ascontiguousarray(voxels[:, ::-1, :])
        origin = origin + (voxels.shape[1] - 1) * columns[:, 1]
        column_cosines = -column_cosines
    orientation = [*row_cosines, *column_cosines]
    positions = origin + np.arange(voxels.shape[0])[:, None] * slice_step
    meta = {
        "source": source or str(path),
        "kind": "nifti",
        "modality": "",  # NIfTI does not say
        "units": "",
        **geometry_meta(orientation, [norms[2], norms[1], norms[0]], positions),
        "file": str(path),
        "affine_ras": np.asarray(image.affine, float).tolist(),
        "rows_reversed": rows_reversed,
    }
    # a NaN or Inf in the affine, a voxel size of 1e308 or rows not perpendicular to columns
    check_geometry(f"{path} (its sform/qform affine)", meta, voxels.shape)
    if abs(unit_vector(slice_step) @ np.cross(row_cosines, column_cosines)) < 1 - 1e-3:
        log.warning("%s: the slices are tilted (a sheared affine); positions follow it", path)
    log.info("%s: NIfTI %s, spacing %s mm", path, voxels.shape, meta["spacing_mm"])
    return Volume(voxels, meta)
