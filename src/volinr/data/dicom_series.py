"""Reading a DICOM series into a volume: grouping, sorting along the slice normal, checks
(one patient, orientation and spacing; gaps and duplicates), per-slice rescale to HU.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from volinr.data import modality_lut
from volinr.data.dicom_frames import IMAGE_MODALITIES, damaged_values, decode_pixels
from volinr.data.geometry import (
    Volume,
    floats,
    geometry_meta,
    orientation_problem,
    slice_normal,
    unit_vector,
)
from volinr.data.series_checks import (
    NON_IMAGE_MODALITIES,
    UNIFORMITY_TOLERANCE,
    SeriesSlice,
    check_consistent,
    check_image,
    plan_slices,
    remove_duplicates,
)
from volinr.errors import InputError

log = logging.getLogger(__name__)

# The key of files whose SeriesInstanceUID is blank; never a valid UID, so never a clash.
BLANK_SERIES_UID = "(blank SeriesInstanceUID)"


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


def _series_key(path: Path, header: Any) -> str:
    """The series a file belongs to: its SeriesInstanceUID, or where an anonymiser blanked it
    (the tag present, its value empty, as in TotalSegmentator's example series) the fields
    that stay constant within a series. Files of different series with the same fallback key
    then meet the series checks: equal positions stop the read as duplicates, different
    sizes, spacings or orientations as a mixed series."""
    if "SeriesInstanceUID" not in header:
        raise InputError(f"{path}: no SeriesInstanceUID (a truncated or incomplete file)")
    uid = str(header.SeriesInstanceUID or "").strip()
    if uid:
        return uid
    fields = ", ".join(
        f"{name} {str(getattr(header, name, '') or '').strip()!r}"
        for name in ("SeriesNumber", "SeriesDescription", "FrameOfReferenceUID")
    )
    return f"{BLANK_SERIES_UID} ({fields})"


def _describe_series(uid: str, slices: list[SeriesSlice]) -> str:
    header = slices[0].header
    description = str(getattr(header, "SeriesDescription", "") or "")
    modality = str(getattr(header, "Modality", "") or "?")
    return f"  - {uid}: {description!r}, {modality}, {len(slices)} files"


def _choose_series(folder: Path, series: dict[str, list[SeriesSlice]], series_uid: str) -> str:
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


def _decode(item: SeriesSlice) -> tuple[np.ndarray, modality_lut.Rescale, str, str]:
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

    series: dict[str, list[SeriesSlice]] = {}
    for path in paths:
        header = _read_header(path)
        series.setdefault(_series_key(path, header), []).append(SeriesSlice(path, header))
    blank = [key for key in series if key.startswith(BLANK_SERIES_UID)]
    if blank:
        log.warning(
            "%s: %d file(s) with a blank SeriesInstanceUID (an anonymiser's), grouped by "
            "SeriesNumber, SeriesDescription and FrameOfReferenceUID instead",
            folder,
            sum(len(series[key]) for key in blank),
        )
    chosen = _choose_series(folder, series, series_uid)
    slices = series[chosen]
    for item in slices:
        with damaged_values(item.path):
            check_image(item, allow_modalities)
    if len(slices) == 1:
        raise InputError(
            f"{folder}: series {chosen} has a single file ({slices[0].path}); a volume needs "
            "at least two slices"
        )
    check_consistent(folder, slices)

    orientation = floats(slices[0].header.ImageOrientationPatient)
    problem = orientation_problem(orientation)
    if problem:
        raise InputError(f"{slices[0].path}: ImageOrientationPatient {orientation}: {problem}")
    normal = slice_normal(orientation)
    normal = unit_vector(normal)
    for item in slices:
        item.position = np.asarray(floats(item.header.ImagePositionPatient))
        item.projection = float(item.position @ normal)
    slices.sort(key=lambda item: (item.projection, item.instance_number, str(item.path)))
    kept = remove_duplicates(folder, slices, duplicate_policy)
    if len(kept) < 2:
        raise InputError(f"{folder}: every file of series {chosen} is at the same position")
    plan, positions, filled = plan_slices(folder, kept, gap_policy)

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
    pixel_spacing = floats(header.PixelSpacing)
    spacing = [along / (len(plan) - 1), pixel_spacing[0], pixel_spacing[1]]
    meta: dict[str, Any] = {
        "source": source or str(folder),
        "kind": "dicom_series",
        "modality": modality,
        "units": modality_lut.units(modality, rescales),
        **geometry_meta(orientation, spacing, np.array(positions)),
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
