"""What makes a set of DICOM files one volume: image objects of allowed modalities, one
patient, orientation and pixel spacing, no duplicates, uniform spacing along the slice normal
(gaps stop the read or are interpolated, as the dataset's gap_policy says).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from volinr.data.geometry import floats
from volinr.errors import InputError

log = logging.getLogger(__name__)

# Objects that carry no image of the patient (segmentations, RT objects, reports, states).
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO"}


ORIENTATION_TOLERANCE = 1e-4


DUPLICATE_TOLERANCE_MM = 1e-2


GAP_FACTOR = 1.5  # a step larger than this times the median step is a gap


UNIFORMITY_TOLERANCE = 0.01  # other steps may differ from the median by 1 %


@dataclass
class SeriesSlice:
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


def check_image(item: SeriesSlice, allow_modalities: set[str]) -> None:
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
        if not all(math.isfinite(v) for v in floats(header[keyword].value)):
            raise InputError(f"{path}: {keyword} {header[keyword].value} is not finite")
    if min(floats(header.PixelSpacing)) <= 0 or min(int(header.Rows), int(header.Columns)) < 1:
        raise InputError(
            f"{path}: PixelSpacing {header.PixelSpacing}, {header.Rows} rows and "
            f"{header.Columns} columns: an image needs positive sizes"
        )


def check_consistent(folder: Path, slices: list[SeriesSlice]) -> None:
    """Every slice like the first: size, pixel spacing, orientation, patient."""
    first = slices[0]
    reference = first.header

    def disagree(item: SeriesSlice, what: str, mine: Any, theirs: Any) -> InputError:
        return InputError(
            f"{folder}: the series mixes {what}: {first.path} has {mine}, {item.path} has {theirs}"
        )

    for item in slices[1:]:
        header = item.header
        size, ref_size = (header.Rows, header.Columns), (reference.Rows, reference.Columns)
        if size != ref_size:
            raise disagree(item, "image sizes (rows, columns)", ref_size, size)
        spacing, ref_spacing = floats(header.PixelSpacing), floats(reference.PixelSpacing)
        if not np.allclose(spacing, ref_spacing, rtol=1e-4, atol=1e-4):
            raise disagree(item, "pixel spacings (mm)", ref_spacing, spacing)
        orient = floats(header.ImageOrientationPatient)
        ref_orient = floats(reference.ImageOrientationPatient)
        if not np.allclose(orient, ref_orient, rtol=0, atol=ORIENTATION_TOLERANCE):
            raise disagree(item, "orientations (ImageOrientationPatient)", ref_orient, orient)
        patient = str(getattr(header, "PatientID", "") or "")
        ref_patient = str(getattr(reference, "PatientID", "") or "")
        if patient != ref_patient:
            raise disagree(item, "patients (PatientID)", repr(ref_patient), repr(patient))


def remove_duplicates(folder: Path, slices: list[SeriesSlice], policy: str) -> list[SeriesSlice]:
    """One slice per position of slices sorted along the normal (``policy``: error, or first:
    keep the lowest InstanceNumber of each position)."""
    groups: list[list[SeriesSlice]] = []
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


# Gap interpolation may at most double the series: more is a broken position, not a gap.
MAX_INTERPOLATED_FACTOR = 2


def plan_slices(
    folder: Path, slices: list[SeriesSlice], gap_policy: str
) -> tuple[list[tuple[SeriesSlice | None, int, int, float]], list[np.ndarray], list[int]]:
    """Check the spacing along the normal; return the output slices and their positions.

    Each planned slice is (file, -, -, -) or (None, left, right, weight): a slice interpolated
    between the output slices left and right.
    """
    projections = np.array([item.projection for item in slices])
    steps = np.diff(projections)
    median = float(np.median(steps))
    plan: list[tuple[SeriesSlice | None, int, int, float]] = [(slices[0], 0, 0, 0.0)]
    positions = [slices[0].position]
    filled: list[int] = []
    gaps = {i for i, step in enumerate(steps) if step > GAP_FACTOR * median}
    planned = len(slices) + sum(int(round(steps[i] / median)) - 1 for i in gaps)
    if gap_policy == "interpolate" and planned > MAX_INTERPOLATED_FACTOR * len(slices):
        raise InputError(
            f"{folder}: filling the gaps would make {planned} slices out of {len(slices)} files "
            f"(more than {MAX_INTERPOLATED_FACTOR} times as many): a position far off the others "
            "(e.g. a slice at a wrong z), not a missing slice or two"
        )
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
