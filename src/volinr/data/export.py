"""Writing a reconstructed volume back as NIfTI and as a DICOM series with the original's
geometry (new series and instance UIDs, ImageType DERIVED\\SECONDARY).
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from volinr.data.geometry import (
    LPS_TO_RAS,
    affine_lps,
    check_geometry,
    floats,
    slice_normal,
    slice_positions,
    unit_vector,
)
from volinr.outputs import atomic_dir, atomic_path

log = logging.getLogger(__name__)


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


def writable_volume(target: Path, voxels: np.ndarray) -> np.ndarray:
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
    voxels = writable_volume(path, voxels)
    check_geometry(f"refusing to write {path}", meta, voxels.shape)
    info = np.iinfo(np.int16)
    integral = (
        (voxels.dtype.kind in "iu" or bool(np.all(voxels == np.rint(voxels))))
        and info.min <= voxels.min()
        and voxels.max() <= info.max
    )
    dtype = np.int16 if integral else np.float32
    affine = LPS_TO_RAS @ affine_lps(meta, voxels.shape)
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
    voxels = writable_volume(folder, voxels)
    check_geometry(f"refusing to write {folder}", meta, voxels.shape)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: already exists and is not an empty folder")
    positions = slice_positions(meta, len(voxels))
    orientation = np.asarray(meta.get("orientation", [1, 0, 0, 0, 1, 0]), float)
    normal = unit_vector(slice_normal(orientation))
    spacing = floats(meta["spacing_mm"])
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
    # HU only when the values are HU (or say nothing, as a NIfTI does): raw scanner values
    # such as headsq's must not be labelled HU in the series a viewer opens.
    units = str(meta.get("units", "")).strip().upper()
    common.RescaleType = "HU" if modality == "CT" and units in ("", "HU") else "US"

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
