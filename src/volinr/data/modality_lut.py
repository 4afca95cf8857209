"""Stored pixel values to real-world values (HU for CT): the DICOM Modality LUT, per frame.

Where an image says how its stored values map to real-world ones (PS3.3 C.11.1, C.7.6.16.2.9):

- an enhanced or multi-frame object: the Pixel Value Transformation Sequence of the frame's
  Per-Frame Functional Groups item, else of the Shared Functional Groups;
- any other image (and, failing the functional groups, an enhanced one): RescaleSlope and
  RescaleIntercept at the top level, or a Modality LUT Sequence.

pydicom's ``apply_modality_lut`` applies a Modality LUT Sequence; a rescale, wherever it was
found (pydicom reads only the top level), is applied here in float32 (the voxels' dtype, and
the arithmetic volinr has always used, so that the images a committed SR model was trained on
keep their sha256). What cannot be right is refused, naming the file: a slope of
0 (every pixel would become the intercept), a slope or an intercept that is not finite, one of
the two without the other, a per-frame sequence that does not list every frame. A CT without
any transform is read as stored (identity), with a warning, and its units say it is not known
to be HU; MR has no HU, and its units say "scanner units".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from volinr.data.admission import float32_voxels
from volinr.errors import InputError

log = logging.getLogger(__name__)

ABSENT = "absent (assumed identity)"
HU = "HU"
NOT_RESCALED_CT = "stored values (a CT without Rescale Slope/Intercept: not known to be HU)"
NON_CT_UNITS = "scanner units"


@dataclass(frozen=True)
class Rescale:
    """How one frame's stored values become real-world values, and where that was found."""

    slope: float
    intercept: float
    source: str
    rescale_type: str = ""  # RescaleType or ModalityLUTType, where given
    lut: pydicom.Dataset | None = None  # the dataset holding a Modality LUT Sequence

    def record(self) -> dict[str, Any]:
        """The sidecar's description (a LUT has no slope nor intercept)."""
        if self.lut is not None:
            return {"source": self.source, "type": self.rescale_type or None}
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "source": self.source,
            "type": self.rescale_type or None,
        }


def _number(item: pydicom.Dataset, keyword: str, path: Path, where: str) -> float | None:
    if keyword not in item:
        return None
    value = item[keyword].value
    if value is None or value == "":
        raise InputError(f"{path}: {keyword} is present but empty ({where})")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{path}: {keyword} {value!r} is not a finite number ({where})")
    return number


def _from_item(item: pydicom.Dataset, path: Path, where: str) -> Rescale | None:
    """The rescale an item (a dataset or a Pixel Value Transformation item) holds, if any."""
    slope = _number(item, "RescaleSlope", path, where)
    intercept = _number(item, "RescaleIntercept", path, where)
    if slope is None and intercept is None:
        return None
    if slope is None or intercept is None:
        given, lacking = (
            ("RescaleSlope", "RescaleIntercept") if intercept is None else
            ("RescaleIntercept", "RescaleSlope")
        )  # fmt: skip
        raise InputError(f"{path}: {given} without {lacking} ({where}); the values are unknown")
    if np.float32(slope) == 0:  # 0, or so small that the float32 voxels would see 0
        raise InputError(
            f"{path}: RescaleSlope {slope:g} ({where}) would make every pixel the intercept "
            f"{intercept:g}; a damaged or wrongly written file"
        )
    rescale_type = str(item.get("RescaleType", "") or "")
    return Rescale(slope, intercept, f"RescaleSlope/RescaleIntercept, {where}", rescale_type)


def _transform_of(group: pydicom.Dataset, path: Path, where: str) -> Rescale | None:
    """The Pixel Value Transformation of a functional groups item."""
    sequence = group.get("PixelValueTransformationSequence")
    if not sequence:
        return None
    return _from_item(sequence[0], path, f"{where} (Pixel Value Transformation Sequence)")


def _top_level(dataset: pydicom.Dataset, path: Path) -> Rescale | None:
    if dataset.get("ModalityLUTSequence"):
        lut_type = str(dataset.ModalityLUTSequence[0].get("ModalityLUTType", "") or "")
        return Rescale(1.0, 0.0, "Modality LUT Sequence, top level", lut_type, dataset)
    return _from_item(dataset, path, "top level")


def frame_rescales(dataset: pydicom.Dataset, path: str | Path, frames: int) -> list[Rescale]:
    """The rescale of each of ``frames`` frames; InputError for a transform that cannot be
    right (see the module docstring)."""
    path = Path(path)
    top = _top_level(dataset, path)
    shared_groups = dataset.get("SharedFunctionalGroupsSequence")
    shared = _transform_of(shared_groups[0], path, "Shared Functional Groups") if (
        shared_groups
    ) else None  # fmt: skip
    per_frame_groups = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame_groups is not None and len(per_frame_groups) != frames:
        raise InputError(
            f"{path}: the Per-Frame Functional Groups Sequence has {len(per_frame_groups)} "
            f"items for {frames} frames"
        )
    rescales, overridden = [], 0
    for index in range(frames):
        own = None
        if per_frame_groups is not None:
            own = _transform_of(
                per_frame_groups[index], path, f"Per-Frame Functional Groups, frame {index}"
            )
        found = own or shared or top
        overridden += found is not top and top is not None and _differ(found, top)
        rescales.append(found or Rescale(1.0, 0.0, ABSENT))
    if overridden:
        log.warning(
            "%s: the top-level %s is ignored in %d of %d frames: their functional groups' "
            "Pixel Value Transformation applies", path, _describe(top), overridden, frames,
        )  # fmt: skip
    modality = str(dataset.get("Modality", "") or "").upper()
    absent = sum(r.source == ABSENT for r in rescales)
    if modality == "CT" and absent:
        log.warning(
            "%s: a CT without Rescale Slope/Intercept%s: read as stored values, which are not "
            "known to be HU", path, f" in {absent} of {frames} frames" if frames > 1 else "",
        )  # fmt: skip
    return rescales


def _differ(a: Rescale, b: Rescale) -> bool:
    return (
        a.lut is not None or b.lut is not None or (a.slope, a.intercept) != (b.slope, b.intercept)
    )


def apply_rescale(stored: np.ndarray, rescale: Rescale, path: str | Path, what: str) -> np.ndarray:
    """One frame's real-world values as float32 (through the readers' one admission); an
    InputError where they overflow it or where float32 would round integer values."""
    with np.errstate(over="ignore", invalid="ignore"):
        if rescale.lut is not None:
            exact = np.asarray(apply_modality_lut(np.asarray(stored), rescale.lut), np.float64)
            values = exact.astype(np.float32)
        else:
            exact = np.asarray(stored).astype(np.float64) * rescale.slope + rescale.intercept
            # in float32, as the shipped SR model's training split was read (bit for bit)
            values = np.asarray(stored).astype(np.float32) * np.float32(rescale.slope)
            values += np.float32(rescale.intercept)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{path}: {what} overflows float32 with {_describe(rescale)}")
    float32_voxels(exact, f"{path} ({what}, {_describe(rescale)})")  # integers beyond 2^24
    return values


def _describe(rescale: Rescale) -> str:
    if rescale.lut is not None:
        return "its Modality LUT Sequence"
    return f"RescaleSlope {rescale.slope:g} and RescaleIntercept {rescale.intercept:g}"


def units(modality: str, rescales: Sequence[Rescale]) -> str:
    """What the values are: HU only for a CT whose every frame is rescaled to HU."""
    if str(modality).upper() != "CT":
        return NON_CT_UNITS
    kinds = [_ct_units(r) for r in rescales]
    if len(set(kinds)) == 1:
        return kinds[0]
    counts = {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}
    return "mixed: " + "; ".join(f"{kind} ({n} of {len(kinds)})" for kind, n in counts.items())


def _ct_units(rescale: Rescale) -> str:
    if rescale.source == ABSENT:
        return NOT_RESCALED_CT
    if rescale.rescale_type.upper() in ("", HU):
        return HU
    return f"{rescale.rescale_type} (RescaleType; not HU)"


def sidecar_record(rescales: Sequence[Rescale]) -> dict[str, Any] | list[dict[str, Any]]:
    """One description when every frame shares it, else one per frame."""
    records = [r.record() for r in rescales]
    return records[0] if all(r == records[0] for r in records) else records
