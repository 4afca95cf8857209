"""Reading and writing 3D volumes: DICOM series, NIfTI files and a synthetic head phantom.

A :class:`Volume` is ``voxels``, float32 of shape (slices, rows, cols) in real-world units (HU
for CT: the rescale slope and intercept are applied), and ``meta``, a JSON-serializable dict.

Geometry follows DICOM, in patient LPS millimetres (x to the patient's left, y to the posterior,
z to the head):

- ``orientation``: ImageOrientationPatient, the row cosines (the direction in which the column
  index grows, along a row) then the column cosines (the direction in which the row index grows);
- ``slice_normal``: row cosines x column cosines; slices always ascend along it, as a DICOM reader
  sorts them, so that a volume written as a DICOM series reads back in the same order;
- ``slice_positions_mm``: ImagePositionPatient, the centre of voxel (k, 0, 0), per slice k;
- ``origin_mm``: the position of voxel (0, 0, 0), i.e. ``slice_positions_mm[0]``;
- ``spacing_mm``: [slice step along the normal, row spacing, column spacing], i.e. [z, y, x]
  (DICOM's PixelSpacing is [row spacing, column spacing]).

So voxel (k, j, i) lies at ``slice_positions_mm[k] + j * spacing_y * column_cosines +
i * spacing_x * row_cosines``.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from volinr import modality_lut
from volinr.errors import InputError
from volinr.outputs import atomic_dir, atomic_path
from volinr.sources import IMAGE_MODALITIES, damaged_values, decode_pixels

log = logging.getLogger(__name__)

KINDS = ("dicom_series", "nifti", "phantom")
# Objects that carry no image of the patient (segmentations, RT objects, reports, states).
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO"}
ORIENTATION_TOLERANCE = 1e-4
DUPLICATE_TOLERANCE_MM = 1e-2
GAP_FACTOR = 1.5  # a step larger than this times the median step is a gap
UNIFORMITY_TOLERANCE = 0.01  # other steps may differ from the median by 1 %
# Patient and study tags copied from the original on export, so a viewer files the derived
# series under the same patient and study, in the same frame of reference.
TEMPLATE_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
)
SERIES_UID_KEY = "dataset.series_uid"
# The header values the series reader uses: converted (and so checked) as each file is read.
HEADER_KEYWORDS = (
    "SOPClassUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "PatientID",
    "InstanceNumber",
    "NumberOfFrames",
    "SamplesPerPixel",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)


@dataclass
class Volume:
    """Voxels (float32, (slices, rows, cols), real-world units) and their JSON metadata."""

    voxels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.voxels.shape)


# --- geometry helpers ----------------------------------------------------------------------


def _floats(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _normal(orientation: Sequence[float]) -> np.ndarray:
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return np.cross(row, column)


def _geometry(
    orientation: Sequence[float], spacing_mm: Sequence[float], positions: np.ndarray
) -> dict[str, Any]:
    """The geometry entries of ``meta`` from orientation, spacing and per-slice positions."""
    positions = np.asarray(positions, float).reshape(-1, 3)
    return {
        "spacing_mm": _floats(spacing_mm),
        "origin_mm": _floats(positions[0]),
        "orientation": _floats(orientation),
        "slice_normal": _floats(_unit(_normal(orientation))),
        "slice_positions_mm": [_floats(p) for p in positions],
    }


def _slice_positions(meta: dict[str, Any], slices: int) -> np.ndarray:
    """Per-slice positions from ``meta``: listed, or from origin, normal and spacing."""
    listed = meta.get("slice_positions_mm")
    if listed is not None:
        positions = np.asarray(listed, float).reshape(-1, 3)
        if len(positions) != slices:
            raise ValueError(
                f"meta lists {len(positions)} slice positions for a volume of {slices} slices"
            )
        return positions
    orientation = meta.get("orientation", [1, 0, 0, 0, 1, 0])
    normal = _unit(_normal(orientation))
    origin = np.asarray(meta.get("origin_mm", [0, 0, 0]), float)
    step = float(meta["spacing_mm"][0])
    return origin + np.arange(slices)[:, None] * step * normal


def _affine_lps(meta: dict[str, Any], shape: Sequence[int]) -> np.ndarray:
    """4x4 matrix from (column i, row j, slice k, 1) to LPS mm."""
    orientation = np.asarray(meta.get("orientation", [1, 0, 0, 0, 1, 0]), float)
    spacing = np.asarray(meta["spacing_mm"], float)
    positions = _slice_positions(meta, shape[0])
    if len(positions) > 1:
        # The mean step between slices, not normal x spacing: keeps a tilted stack in place.
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        step = _unit(_normal(orientation)) * spacing[0]
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * spacing[2]
    affine[:3, 1] = orientation[3:] * spacing[1]
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return affine


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


# --- DICOM series --------------------------------------------------------------------------


@dataclass
class _Slice:
    """The header of one file of a series, with what sorting and checking need."""

    path: Path
    header: pydicom.Dataset
    position: np.ndarray | None = None
    projection: float = 0.0

    @property
    def instance_number(self) -> int:
        try:
            return int(getattr(self.header, "InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            return 0


def _dicom_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted; hidden files and folders and DICOMDIR left out."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.name.upper() != "DICOMDIR":
            files.append(path)
    return sorted(files)


def _header_and_end(path: Path, force: bool) -> tuple[pydicom.Dataset, bool]:
    """The header before the pixel data, and whether the file ends there (no pixel data)."""
    with open(path, "rb") as handle:
        header = pydicom.dcmread(handle, stop_before_pixels=True, force=force)
        at_end = handle.tell() >= os.fstat(handle.fileno()).st_size
    return header, at_end


def _read_header(path: Path) -> pydicom.Dataset:
    try:
        header, at_end = _header_and_end(path, force=False)
    except InvalidDicomError:
        header = None
    except Exception as err:  # pydicom raises many types on damaged files
        raise InputError(f"{path}: not a readable DICOM file ({err})") from None
    if header is None:
        # Files without the 128-byte preamble and DICM prefix exist in older archives: accept
        # one only when forced reading finds the identifiers a series needs.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header, at_end = _header_and_end(path, force=True)
                usable = "SOPClassUID" in header and "SeriesInstanceUID" in header
        except Exception:
            usable = False
        if not usable:
            raise InputError(f"{path}: not a DICOM file (no DICM prefix, no DICOM identifiers)")
    with damaged_values(path):  # pydicom converts a value when it is first used
        for keyword in HEADER_KEYWORDS:
            header.get(keyword)
        modality = str(header.get("Modality", "") or "").upper()
    # pydicom reads a value cut short by the end of the file without a word (a PixelSpacing
    # of "3.2\3." reads as [3.2, 3.0]), so an image file that ends before its pixel data is
    # refused here, before its damaged values are compared with the other files'.
    if at_end and modality not in NON_IMAGE_MODALITIES:
        raise InputError(
            f"{path}: the file ends before any pixel data ({path.stat().st_size} bytes): "
            "truncated, or not an image object"
        )
    return header


def _describe_series(uid: str, slices: list[_Slice]) -> str:
    header = slices[0].header
    description = str(getattr(header, "SeriesDescription", "") or "")
    modality = str(getattr(header, "Modality", "") or "?")
    return f"  - {uid}: {description!r}, {modality}, {len(slices)} files"


def _choose_series(folder: Path, series: dict[str, list[_Slice]], series_uid: str) -> str:
    listing = "\n".join(_describe_series(uid, slices) for uid, slices in series.items())
    if series_uid:
        if series_uid not in series:
            raise InputError(
                f"{folder}: series {series_uid} ({SERIES_UID_KEY}) is not in this folder, "
                f"which holds:\n{listing}"
            )
        return series_uid
    if len(series) > 1:
        raise InputError(
            f"{folder}: {len(series)} DICOM series found; set {SERIES_UID_KEY} to the one to "
            f"read:\n{listing}"
        )
    return next(iter(series))


def _check_image(item: _Slice, allow_modalities: set[str]) -> None:
    header, path = item.header, item.path
    modality = str(getattr(header, "Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        raise InputError(f"{path}: a {modality} object, not an image")
    if "Rows" not in header or "Columns" not in header:
        raise InputError(
            f"{path}: no image (no Rows/Columns: not an image object, or a truncated file)"
        )
    if modality not in allow_modalities:
        raise InputError(
            f"{path}: modality {modality or 'missing'} is not one of {sorted(allow_modalities)}"
        )
    frames = getattr(header, "NumberOfFrames", 1)
    if int(frames or 1) > 1:
        raise InputError(
            f"{path}: a multi-frame file ({frames} frames); multi-frame series are not "
            "supported, give a folder of single-frame files"
        )
    if int(getattr(header, "SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"{path}: colour image ({header.SamplesPerPixel} samples per pixel)")
    for keyword, count in (
        ("ImagePositionPatient", 3),
        ("ImageOrientationPatient", 6),
        ("PixelSpacing", 2),
    ):
        if keyword not in header or header[keyword].VM != count:
            raise InputError(
                f"{path}: no valid {keyword} ({count} numbers), the slice cannot be placed"
            )
        if not all(math.isfinite(v) for v in _floats(header[keyword].value)):
            raise InputError(f"{path}: {keyword} {header[keyword].value} is not finite")
    if min(_floats(header.PixelSpacing)) <= 0 or min(int(header.Rows), int(header.Columns)) < 1:
        raise InputError(
            f"{path}: PixelSpacing {header.PixelSpacing}, {header.Rows} rows and "
            f"{header.Columns} columns: an image needs positive sizes"
        )


def _check_consistent(folder: Path, slices: list[_Slice]) -> None:
    """Every slice like the first: size, pixel spacing, orientation, patient."""
    first = slices[0]
    reference = first.header

    def disagree(item: _Slice, what: str, mine: Any, theirs: Any) -> InputError:
        return InputError(
            f"{folder}: the series mixes {what}: {first.path} has {mine}, {item.path} has {theirs}"
        )

    for item in slices[1:]:
        header = item.header
        size, ref_size = (header.Rows, header.Columns), (reference.Rows, reference.Columns)
        if size != ref_size:
            raise disagree(item, "image sizes (rows, columns)", ref_size, size)
        spacing, ref_spacing = _floats(header.PixelSpacing), _floats(reference.PixelSpacing)
        if not np.allclose(spacing, ref_spacing, rtol=1e-4, atol=1e-4):
            raise disagree(item, "pixel spacings (mm)", ref_spacing, spacing)
        orient = _floats(header.ImageOrientationPatient)
        ref_orient = _floats(reference.ImageOrientationPatient)
        if not np.allclose(orient, ref_orient, rtol=0, atol=ORIENTATION_TOLERANCE):
            raise disagree(item, "orientations (ImageOrientationPatient)", ref_orient, orient)
        patient = str(getattr(header, "PatientID", "") or "")
        ref_patient = str(getattr(reference, "PatientID", "") or "")
        if patient != ref_patient:
            raise disagree(item, "patients (PatientID)", repr(ref_patient), repr(patient))


def _remove_duplicates(folder: Path, slices: list[_Slice], policy: str) -> list[_Slice]:
    """One slice per position of slices sorted along the normal (``policy``: error, or first:
    keep the lowest InstanceNumber of each position)."""
    groups: list[list[_Slice]] = []
    for item in slices:
        if groups and item.projection - groups[-1][-1].projection < DUPLICATE_TOLERANCE_MM:
            groups[-1].append(item)
        else:
            groups.append([item])
    kept = []
    for group in groups:
        group.sort(key=lambda item: (item.instance_number, str(item.path)))
        first, *others = group
        if others and policy != "first":
            raise InputError(
                f"{folder}: duplicate slice at {first.projection:.3f} mm along the normal: "
                f"{first.path} and {others[0].path} (set dataset.duplicate_policy: first to "
                "keep the lower InstanceNumber)"
            )
        for other in others:
            log.warning(
                "%s: duplicate slice at %.3f mm: keeping %s (InstanceNumber %d), dropping %s",
                folder,
                first.projection,
                first.path,
                first.instance_number,
                other.path,
            )
        kept.append(first)
    return kept


def _plan_slices(
    folder: Path, slices: list[_Slice], gap_policy: str
) -> tuple[list[tuple[_Slice | None, int, int, float]], list[np.ndarray], list[int]]:
    """Check the spacing along the normal; return the output slices and their positions.

    Each planned slice is (file, -, -, -) or (None, left, right, weight): a slice interpolated
    between the output slices left and right.
    """
    projections = np.array([item.projection for item in slices])
    steps = np.diff(projections)
    median = float(np.median(steps))
    plan: list[tuple[_Slice | None, int, int, float]] = [(slices[0], 0, 0, 0.0)]
    positions = [slices[0].position]
    filled: list[int] = []
    gaps = {i for i, step in enumerate(steps) if step > GAP_FACTOR * median}
    for index, step in enumerate(steps):
        before, after = slices[index], slices[index + 1]
        ratio = step / median
        missing = int(round(ratio)) - 1 if index in gaps else 0
        if index in gaps and gap_policy != "interpolate":
            raise InputError(
                f"{folder}: gap in the series between slice positions "
                f"{before.projection:.3f} mm ({before.path}) and {after.projection:.3f} mm "
                f"({after.path}) along the normal: a step of {step:.3f} mm where the median "
                f"is {median:.3f} mm, about {missing} slice(s) missing ({len(gaps)} gap(s) in "
                "all; set dataset.gap_policy: interpolate to fill them)"
            )
        if abs(step / (missing + 1) - median) > UNIFORMITY_TOLERANCE * median:
            raise InputError(
                f"{folder}: non-uniform slice spacing: a step of {step:.3f} mm between "
                f"{before.path} and {after.path} where the median is {median:.3f} mm"
            )
        left = len(plan) - 1
        right = left + missing + 1
        for fill in range(1, missing + 1):
            weight = fill / (missing + 1)
            filled.append(len(plan))
            plan.append((None, left, right, weight))
            positions.append((1 - weight) * before.position + weight * after.position)
        plan.append((after, 0, 0, 0.0))
        positions.append(after.position)
    if filled:
        log.warning("%s: %d missing slice(s) interpolated: %s", folder, len(filled), filled)
    return plan, positions, filled


def _decode(item: _Slice) -> tuple[np.ndarray, modality_lut.Rescale, str, str]:
    """Stored pixels of one file (2D), its rescale, stored dtype and transfer syntax."""
    path = item.path
    try:
        dataset = pydicom.dcmread(path)
    except Exception as err:
        raise InputError(f"{path}: not a readable DICOM file ({err})") from None
    with damaged_values(path):
        if "PixelData" not in dataset:
            raise InputError(f"{path}: no pixel data (a truncated file, or not an image object)")
        stored = decode_pixels(dataset, path)
        expected = (int(dataset.Rows), int(dataset.Columns))
        if stored.shape != expected:
            raise InputError(f"{path}: decoded pixels of shape {stored.shape}, expected {expected}")
        (rescale,) = modality_lut.frame_rescales(dataset, path, 1)
        syntax = str(getattr(dataset.file_meta, "TransferSyntaxUID", ""))
    return stored, rescale, str(stored.dtype), syntax


def read_dicom_series(
    folder: str | os.PathLike,
    series_uid: str = "",
    allow_modalities: Iterable[str] = IMAGE_MODALITIES,
    duplicate_policy: str = "error",
    gap_policy: str = "error",
    source: str = "",
) -> Volume:
    """Read a folder of single-frame DICOM files (searched recursively) as one volume.

    Every file must be DICOM (hidden files and DICOMDIR excepted). With several series in the
    folder, ``series_uid`` picks one. Slices are sorted by ImagePositionPatient along the slice
    normal and must be evenly spaced: duplicates stop the read (``duplicate_policy="first"``
    keeps the lower InstanceNumber), so do gaps (``gap_policy="interpolate"`` fills them by
    linear interpolation, listed in ``meta["filled_slices"]``). Any bad input raises
    :class:`InputError` naming the file(s).
    """
    folder = Path(folder)
    allow_modalities = {m.upper() for m in allow_modalities}
    if duplicate_policy not in ("error", "first"):
        raise ValueError(f"duplicate_policy must be error or first, not {duplicate_policy!r}")
    if gap_policy not in ("error", "interpolate"):
        raise ValueError(f"gap_policy must be error or interpolate, not {gap_policy!r}")
    if not folder.is_dir():
        what = (
            "is a file, expected a folder of DICOM files" if folder.exists() else "no such folder"
        )
        raise InputError(f"{folder}: {what}")
    paths = _dicom_files(folder)
    if not paths:
        raise InputError(f"{folder}: no files found (expected a folder of DICOM files)")

    series: dict[str, list[_Slice]] = {}
    for path in paths:
        header = _read_header(path)
        uid = str(getattr(header, "SeriesInstanceUID", "") or "")
        if not uid:
            raise InputError(f"{path}: no SeriesInstanceUID (a truncated or incomplete file)")
        series.setdefault(uid, []).append(_Slice(path, header))
    chosen = _choose_series(folder, series, series_uid)
    slices = series[chosen]
    for item in slices:
        with damaged_values(item.path):
            _check_image(item, allow_modalities)
    if len(slices) == 1:
        raise InputError(
            f"{folder}: series {chosen} has a single file ({slices[0].path}); a volume needs "
            "at least two slices"
        )
    _check_consistent(folder, slices)

    orientation = _floats(slices[0].header.ImageOrientationPatient)
    normal = _normal(orientation)
    if np.linalg.norm(normal) < 0.5:
        raise InputError(
            f"{slices[0].path}: ImageOrientationPatient {orientation} has no valid normal"
        )
    normal = _unit(normal)
    for item in slices:
        item.position = np.asarray(_floats(item.header.ImagePositionPatient))
        item.projection = float(item.position @ normal)
    slices.sort(key=lambda item: (item.projection, item.instance_number, str(item.path)))
    kept = _remove_duplicates(folder, slices, duplicate_policy)
    if len(kept) < 2:
        raise InputError(f"{folder}: every file of series {chosen} is at the same position")
    plan, positions, filled = _plan_slices(folder, kept, gap_policy)

    extent = positions[-1] - positions[0]
    along = float(extent @ normal)
    if np.linalg.norm(extent - along * normal) > UNIFORMITY_TOLERANCE * abs(along):
        log.warning(
            "%s: the slice positions drift sideways from the normal (gantry tilt?); the "
            "volume keeps each slice's position but its spacing is measured along the normal",
            folder,
        )
    header = kept[0].header
    rows, columns = int(header.Rows), int(header.Columns)
    try:
        voxels = np.empty((len(plan), rows, columns), dtype=np.float32)
    except MemoryError:
        raise InputError(
            f"{folder}: {len(plan)} slices of {rows} x {columns} pixels do not fit in memory"
        ) from None
    rescales, dtypes, syntaxes = [], set(), set()
    for index, (item, _, _, _) in enumerate(plan):
        if item is None:
            continue
        # each file its own rescale: a series may mix them slice by slice
        stored, rescale, dtype, syntax = _decode(item)
        with damaged_values(item.path):
            voxels[index] = modality_lut.apply_rescale(stored, rescale, item.path, "the pixels")
        rescales.append(rescale)
        dtypes.add(dtype)
        syntaxes.add(syntax)
    slopes = [r.slope for r in rescales]
    intercepts = [r.intercept for r in rescales]
    for index, (item, left, right, weight) in enumerate(plan):
        if item is None:
            voxels[index] = (1 - weight) * voxels[left] + weight * voxels[right]

    modality = str(getattr(header, "Modality", "")).upper()
    pixel_spacing = _floats(header.PixelSpacing)
    spacing = [along / (len(plan) - 1), pixel_spacing[0], pixel_spacing[1]]
    meta: dict[str, Any] = {
        "source": source or str(folder),
        "kind": "dicom_series",
        "modality": modality,
        "units": modality_lut.units(modality, rescales),
        **_geometry(orientation, spacing, np.array(positions)),
        "series_uid": chosen,
        "study_uid": str(getattr(header, "StudyInstanceUID", "") or ""),
        "frame_of_reference_uid": str(getattr(header, "FrameOfReferenceUID", "") or ""),
        "series_description": str(getattr(header, "SeriesDescription", "") or ""),
        "files": sorted(str(item.path) for item in slices),
        "slice_files": [str(item.path) if item else None for item, _, _, _ in plan],
        "template_file": str(kept[0].path),
        "transfer_syntax": ", ".join(sorted(syntaxes)),
        "stored_dtype": ", ".join(sorted(dtypes)),
        # One value when every slice shares it, else one per file read (in slice order).
        "rescale_slope": slopes[0] if len(set(slopes)) == 1 else slopes,
        "rescale_intercept": intercepts[0] if len(set(intercepts)) == 1 else intercepts,
        "rescale": modality_lut.sidecar_record(rescales),
    }
    if filled:
        meta["filled_slices"] = filled
    if len(kept) < len(slices):
        kept_ids = {id(item) for item in kept}
        meta["dropped_duplicates"] = [str(s.path) for s in slices if id(s) not in kept_ids]
    log.info("%s: series %s, %s %s, spacing %s mm", folder, chosen, modality, voxels.shape, spacing)
    return Volume(voxels, meta)


# --- NIfTI ---------------------------------------------------------------------------------


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

    ``scl_slope``/``scl_inter`` are applied; voxels are float32. A NaN or Inf voxel, or data
    that is not 3D (a 4D file with one volume is accepted), raises :class:`InputError`.
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
        data = image.get_fdata(dtype=np.float32, caching="unchanged").reshape(shape[:3])
    except Exception as err:  # gzip and zlib errors on a damaged file, RGB data...
        raise InputError(f"{path}: NIfTI data not readable ({err})") from None
    nans, infs = int(np.isnan(data).sum()), int(np.isinf(data).sum())
    if nans or infs:
        raise InputError(f"{path}: {nans} NaN and {infs} Inf voxel(s); a volume must be finite")

    if not (int(image.header["sform_code"]) or int(image.header["qform_code"])):
        log.warning("%s: no sform or qform: the orientation is nibabel's default guess", path)
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
    if (
        abs(row_cosines @ column_cosines) > 1e-3
        or abs(_unit(slice_step) @ np.cross(row_cosines, column_cosines)) < 1 - 1e-3
    ):
        log.warning("%s: the affine is not orthogonal (sheared); positions follow it", path)
    orientation = [*row_cosines, *column_cosines]
    positions = origin + np.arange(voxels.shape[0])[:, None] * slice_step
    meta = {
        "source": source or str(path),
        "kind": "nifti",
        "modality": "",  # NIfTI does not say
        "units": "",
        **_geometry(orientation, [norms[2], norms[1], norms[0]], positions),
        "file": str(path),
        "affine_ras": np.asarray(image.affine, float).tolist(),
        "rows_reversed": rows_reversed,
    }
    log.info("%s: NIfTI %s, spacing %s mm", path, voxels.shape, meta["spacing_mm"])
    return Volume(voxels, meta)


def _writable_volume(target: Path, voxels: np.ndarray) -> np.ndarray:
    voxels = np.asarray(voxels)
    if voxels.ndim != 3:
        raise ValueError(f"{target}: expected a 3D array, got shape {voxels.shape}")
    if not np.all(np.isfinite(voxels)):
        raise FloatingPointError(f"refusing to write {target}: the volume holds NaN or Inf")
    return voxels


def write_nifti(path: str | os.PathLike, voxels: np.ndarray, meta: dict[str, Any]) -> None:
    """Write ``voxels`` (slices, rows, cols) as NIfTI with the affine of ``meta``'s geometry.

    The inverse of :func:`read_nifti`'s convention: ``data[i, j, k] = voxels[k, j, i]`` and an
    RAS affine (sform and qform, code 1: scanner). Stored as int16 when every value is an
    integer that fits, else float32; a ``.gz`` name is gzip-compressed, with no timestamp or
    name in the gzip header, so equal volumes give equal files.
    Atomic: nothing appears under ``path`` unless the write completes.
    """
    import nibabel as nib

    path = Path(path)
    voxels = _writable_volume(path, voxels)
    info = np.iinfo(np.int16)
    integral = (
        (voxels.dtype.kind in "iu" or bool(np.all(voxels == np.rint(voxels))))
        and info.min <= voxels.min()
        and voxels.max() <= info.max
    )
    dtype = np.int16 if integral else np.float32
    affine = LPS_TO_RAS @ _affine_lps(meta, voxels.shape)
    image = nib.Nifti1Image(voxels.astype(dtype, copy=False).transpose(2, 1, 0), affine)
    image.set_data_dtype(dtype)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine, code=1)  # scanner coordinates
    image.set_qform(affine, code=1)
    # atomic_path's temporary name ends in .tmp, which nibabel would not recognise or
    # compress: the image is streamed through a file object instead.
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(
                filename="", mode="wb", compresslevel=6, fileobj=raw, mtime=0
            ) as stream:
                image.to_file_map({"image": nib.FileHolder(fileobj=stream)})
        else:
            image.to_file_map({"image": nib.FileHolder(fileobj=raw)})
    log.info("wrote %s (%s, %s)", path, voxels.shape, np.dtype(dtype).name)


# --- DICOM export --------------------------------------------------------------------------


def _stored_values(voxels: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Integer pixels and (slope, intercept) with slope * pixel + intercept within 0.5 of
    ``voxels`` whenever the range fits 65,536 integers (CT does); wider ranges get a slope."""
    low, high = float(np.floor(voxels.min())), float(np.ceil(voxels.max()))
    if -32768 <= low and high <= 32767:
        return np.rint(voxels).astype(np.int16), 1.0, 0.0
    if high - low <= 65535:
        return np.rint(voxels - low).astype(np.uint16), 1.0, low
    # The slope as written (DS, 16 characters) is the one the pixels must use.
    slope = float(DSfloat((high - low) / 65535 * (1 + 1e-9), auto_format=True))
    log.warning(
        "values span %g..%g: stored with slope %g (error up to %g)", low, high, slope, slope / 2
    )
    pixels = np.clip(np.rint((voxels - low) / slope), 0, 65535).astype(np.uint16)
    return pixels, slope, low


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def _template(meta: dict[str, Any]) -> pydicom.Dataset | None:
    template_file = meta.get("template_file")
    if not template_file:
        return None
    try:
        return pydicom.dcmread(template_file, stop_before_pixels=True)
    except Exception as err:
        log.warning(
            "%s: template not readable (%s); new patient and study tags", template_file, err
        )
        return None


def write_dicom_series(
    folder: str | os.PathLike,
    voxels: np.ndarray,
    meta: dict[str, Any],
    series_description: str,
    derived_from: str = "",
) -> list[Path]:
    """Write ``voxels`` as a new DICOM series, one file per slice (``00001.dcm``...).

    Images are CT Image Storage (MR Image Storage when ``meta["modality"]`` is MR), ImageType
    DERIVED\\SECONDARY, with new series and instance UIDs and ``meta``'s geometry. Patient and
    study tags and the frame of reference come from ``meta["template_file"]`` when it can be
    read (so a viewer shows the series beside the original), else from ``meta`` or new.
    Pixels are int16 (or uint16 with an intercept) with RescaleSlope 1, so each value reads back
    within 0.5 of the input (a range over 65,536 gets a larger slope, logged).

    Atomic: the files are written into a temporary folder beside ``folder``, renamed when all
    are written; an existing non-empty ``folder`` is refused. Returns the paths, slice order.
    """
    folder = Path(folder)
    voxels = _writable_volume(folder, voxels)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: already exists and is not an empty folder")
    positions = _slice_positions(meta, len(voxels))
    orientation = np.asarray(meta.get("orientation", [1, 0, 0, 0, 1, 0]), float)
    normal = _unit(_normal(orientation))
    spacing = _floats(meta["spacing_mm"])
    pixels, slope, intercept = _stored_values(voxels)
    modality = "MR" if str(meta.get("modality", "")).upper() == "MR" else "CT"
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    template = _template(meta)

    common = pydicom.Dataset()
    common.SpecificCharacterSet = "ISO_IR 192"
    common.SOPClassUID = sop_class
    axial = abs(normal[2]) > 0.9
    common.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if axial else "OTHER"]
    common.Modality = modality
    common.Manufacturer = "volinr"
    common.SeriesInstanceUID = generate_uid()
    common.SeriesDescription = series_description[:64]  # LO: 64 characters
    common.SeriesNumber = int(getattr(template, "SeriesNumber", 0) or 0) + 1000
    common.DerivationDescription = (
        f"volinr: {series_description}" + (f"; from {derived_from}" if derived_from else "")
    )[:1024]
    common.PatientName = "Anonymous"
    common.PatientID = ""
    common.StudyInstanceUID = meta.get("study_uid") or generate_uid()
    common.FrameOfReferenceUID = meta.get("frame_of_reference_uid") or generate_uid()
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID"):
        setattr(common, keyword, "")
    common.AccessionNumber = ""
    common.ReferringPhysicianName = ""
    common.PositionReferenceIndicator = ""
    if template is not None:
        for keyword in TEMPLATE_TAGS:
            if keyword in template:
                setattr(common, keyword, template[keyword].value)
    common.ImageOrientationPatient = [_ds(v) for v in orientation]
    common.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]
    common.SliceThickness = _ds(spacing[0])
    common.SpacingBetweenSlices = _ds(spacing[0])
    common.Rows, common.Columns = int(voxels.shape[1]), int(voxels.shape[2])
    common.SamplesPerPixel = 1
    common.PhotometricInterpretation = "MONOCHROME2"
    common.BitsAllocated = 16
    common.BitsStored = 16
    common.HighBit = 15
    common.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    common.RescaleSlope = _ds(slope)
    common.RescaleIntercept = _ds(intercept)
    common.RescaleType = "HU" if modality == "CT" else "US"

    names = [f"{index + 1:05d}.dcm" for index in range(len(voxels))]
    with atomic_dir(folder) as staging:
        for index, name in enumerate(names):
            dataset = pydicom.Dataset()
            dataset.update(common)
            dataset.SOPInstanceUID = generate_uid()
            dataset.InstanceNumber = index + 1
            dataset.ImagePositionPatient = [_ds(v) for v in positions[index]]
            dataset.SliceLocation = _ds(positions[index] @ normal)
            dataset.PixelData = np.ascontiguousarray(pixels[index]).tobytes()
            file_meta = FileMetaDataset()
            file_meta.MediaStorageSOPClassUID = sop_class
            file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            dataset.file_meta = file_meta
            dataset.save_as(staging / name, enforce_file_format=True)
    log.info("wrote %d DICOM files to %s (series %s)", len(names), folder, common.SeriesInstanceUID)
    return [folder / name for name in names]


def synthetic_head_phantom(
    shape: Sequence[int] = (48, 96, 96),
    seed: int = 0,
    spacing_mm: Sequence[float] = (2.5, 1.0, 1.0),
) -> Volume:
    """A CT-like head in HU, deterministic from ``seed``: air, scalp, a skull shell
    (~1000-1500 HU), grey (~40 HU) and white (~28 HU) matter with folded boundaries, two CSF
    ventricles (~5 HU), smooth texture and ~10 HU noise. Shapes and positions vary a little with
    the seed, so two seeds give two different heads."""
    from scipy.ndimage import gaussian_filter

    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"phantom shape must be 3 sizes of at least 4, got {shape}")
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"phantom spacing must be 3 positive sizes, got {spacing_mm}")
    rng = np.random.default_rng(seed)

    def smooth_noise(sigma: float) -> np.ndarray:
        noise = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
        return noise / max(float(noise.std()), 1e-6)

    # Coordinates in -1..1 across the grid: the head fills the field of view at any size.
    z, y, x = (
        np.linspace(-1, 1, n, dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        for axis, n in enumerate(shape)
    )
    jitter = rng.uniform(-0.04, 0.04, size=8).astype(np.float32)
    centre_z = -0.2 + jitter[0]  # the vertex in the top slices, the brain cut at the bottom
    radius = np.sqrt(
        (x / (0.82 + jitter[1])) ** 2
        + ((y - jitter[2]) / (0.92 + jitter[3])) ** 2
        + ((z - centre_z) / (1.05 + jitter[4])) ** 2
    )
    radius = radius * (1 + 0.015 * smooth_noise(4.0))  # an irregular outline
    folds = smooth_noise(1.5)  # gyri: the grey/white boundary folds
    texture = smooth_noise(1.2)

    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[radius < 1.0] = 40.0  # scalp
    skull = (radius < 0.95) & (radius >= 0.86)
    # Denser tables outside, lighter diploe in the middle of the shell.
    depth = np.abs((radius - 0.905) / 0.045)
    hu[skull] = (1050.0 + 450.0 * depth + 60.0 * texture)[skull]
    brain = radius < 0.86
    white = radius * (1 + 0.08 * folds) < 0.68
    hu[brain] = 40.0 + 3.0 * texture[brain]
    hu[brain & white] = 28.0 + 3.0 * texture[brain & white]
    for side in (-1, 1):
        ventricle = (
            ((x - side * (0.13 + jitter[5])) / 0.07) ** 2
            + ((y - 0.05 - jitter[6]) / 0.28) ** 2
            + ((z - centre_z - 0.15 - jitter[7]) / 0.18) ** 2
        ) < 1
        hu[ventricle & brain] = 5.0
    hu += 10.0 * rng.standard_normal(shape, dtype=np.float32)

    spacing = _floats(spacing_mm)
    centre = (np.array(shape[::-1], float) - 1) / 2 * np.array(spacing[::-1])
    origin = -centre  # the centre of the volume at the scanner's isocentre
    positions = origin + np.arange(shape[0])[:, None] * spacing[0] * np.array([0.0, 0.0, 1.0])
    described = f"shape={list(shape)}, seed={seed}, spacing_mm={spacing}"
    meta = {
        "source": f"phantom({described})",
        "kind": "phantom",
        "modality": "CT",
        "units": "HU",
        **_geometry([1, 0, 0, 0, 1, 0], spacing, positions),
        # Fixed per phantom, so every export of one phantom shares its study in a viewer.
        "study_uid": generate_uid(entropy_srcs=[f"volinr phantom study {described}"]),
        "frame_of_reference_uid": generate_uid(entropy_srcs=[f"volinr phantom frame {described}"]),
        "phantom": {"shape": list(shape), "seed": int(seed), "spacing_mm": spacing},
    }
    # Integer HU, as a scanner stores them.
    return Volume(np.rint(hu).astype(np.float32), meta)


# --- dispatch ------------------------------------------------------------------------------


def crop_slices(volume: Volume, start: int, stop: int) -> Volume:
    """Slices ``start`` to ``stop`` (exclusive) as a new volume, with positions and origin
    moved; ``meta["source_slice_range"]`` says where they are in the volume as read."""
    slices = len(volume.voxels)
    source = volume.meta.get("source", "volume")
    if not 0 <= start < stop <= slices:
        raise InputError(f"{source}: slice range {start}..{stop} outside 0..{slices}")
    meta = dict(volume.meta)
    positions = _slice_positions(meta, slices)[start:stop]
    meta["slice_positions_mm"] = [_floats(p) for p in positions]
    meta["origin_mm"] = _floats(positions[0])
    if meta.get("slice_files"):
        meta["slice_files"] = meta["slice_files"][start:stop]
    if "filled_slices" in meta:
        meta["filled_slices"] = [i - start for i in meta["filled_slices"] if start <= i < stop]
    offset = meta.get("source_slice_range", [0, slices])[0]
    meta["source_slice_range"] = [offset + start, offset + stop]
    voxels = np.ascontiguousarray(volume.voxels[start:stop]).copy()  # frees the full volume
    return replace(volume, voxels=voxels, meta=meta)


def read_volume(spec: dict[str, Any]) -> Volume:
    """A volume from a dataset spec: ``kind`` (dicom_series, nifti, phantom) and its keys.

    dicom_series: ``path``, ``series_uid``, ``gap_policy``, ``duplicate_policy``,
    ``allow_modalities``; nifti: ``path``; phantom: ``shape``, ``seed``, ``spacing_mm`` (or the
    same under ``phantom``). ``slices: [start, stop]`` keeps that slice range.
    """
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown volume kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "phantom":
        phantom = {**(spec.get("phantom") or {}), **spec}
        volume = synthetic_head_phantom(
            shape=phantom.get("shape", (48, 96, 96)),
            seed=int(phantom.get("seed", 0)),
            spacing_mm=phantom.get("spacing_mm", (2.5, 1.0, 1.0)),
        )
    else:
        path = str(spec.get("path") or "")
        if not path:
            raise InputError(f"dataset.path is empty: a {kind} needs a path")
        if kind == "nifti":
            volume = read_nifti(path, source=spec.get("source", ""))
        else:
            volume = read_dicom_series(
                path,
                series_uid=spec.get("series_uid") or "",
                allow_modalities=spec.get("allow_modalities") or IMAGE_MODALITIES,
                duplicate_policy=spec.get("duplicate_policy") or "error",
                gap_policy=spec.get("gap_policy") or "error",
                source=spec.get("source", ""),
            )
    if spec.get("slices") is not None:
        start, stop = (int(v) for v in spec["slices"])
        volume = crop_slices(volume, start, stop)
    return volume
