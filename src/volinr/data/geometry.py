"""A volume and its geometry in patient coordinates.

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

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from volinr.errors import InputError


@dataclass
class Volume:
    """Voxels (float32, (slices, rows, cols), real-world units) and their JSON metadata."""

    voxels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.voxels.shape)


def floats(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values]


def unit_vector(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


# How far direction cosines may be from unit length and from orthogonal: DICOM writes them
# with a few decimals (e.g. 0.99999 or 1e-6 off); a spacing read against a wrong pair would be
# wrong by the same factor.
ORIENTATION_TOLERANCE = 1e-3


def orientation_problem(orientation: Sequence[float]) -> str | None:
    """Why six direction cosines (row, then column) are not an orientation (None: they are):
    each must be a unit vector and the two orthogonal, within ``ORIENTATION_TOLERANCE``."""
    if len(orientation) != 6 or not all(np.isfinite(orientation)):
        return "expected six finite direction cosines"
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    lengths = np.linalg.norm(row), np.linalg.norm(column)
    if any(abs(n - 1) > ORIENTATION_TOLERANCE for n in lengths):
        return f"the direction cosines have lengths {lengths[0]:g} and {lengths[1]:g}, not 1"
    if abs(float(row @ column)) > ORIENTATION_TOLERANCE:
        return f"the row and column directions are not orthogonal (dot {float(row @ column):g})"
    return None


# The voxel sizes accepted: 1 nm to 10 m. A finite but absurd one overflows the slice
# positions, an affine or a downsampled spacing to Inf or NaN (1e308), or is 0 in a NIfTI
# header's float32 (5e-324).
MIN_SPACING_MM = 1e-6
MAX_SPACING_MM = 1e4
# The farthest a position may lie from the origin of patient coordinates (10 km: 1000 slices of
# the largest spacing), for the same reason: positions are added, multiplied and written.
MAX_POSITION_MM = 1e7


def _reals(value: Any) -> list[float] | None:
    """``value`` as floats when it is a list of real numbers (not bools or strings), else None."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        return None
    real = (int, float, np.integer, np.floating)
    if not all(isinstance(v, real) and not isinstance(v, bool) for v in value):
        return None
    return [float(v) for v in value]


def spacing_problem(spacing: Any, axes: int | None = None) -> str | None:
    """Why ``spacing`` is not a voxel size per axis in mm (None: it is): ``axes`` numbers (any
    count when None), each finite, from ``MIN_SPACING_MM`` to ``MAX_SPACING_MM``."""
    values = _reals(spacing)
    count = f"{axes} sizes" if axes else "one size per axis"
    if values is None or not values or (axes is not None and len(values) != axes):
        return f"expected {count} in mm, got {spacing!r}"
    if not all(math.isfinite(v) and MIN_SPACING_MM <= v <= MAX_SPACING_MM for v in values):
        return (
            f"{spacing!r}: voxel sizes must be positive and finite, from {MIN_SPACING_MM:g} to "
            f"{MAX_SPACING_MM:g} mm"
        )
    return None


def _position_problem(value: Any) -> str | None:
    values = _reals(value)
    if values is None or len(values) != 3:
        return f"expected three coordinates in mm, got {value!r}"
    if not all(math.isfinite(v) and abs(v) <= MAX_POSITION_MM for v in values):
        return f"{value!r}: coordinates must be finite and within {MAX_POSITION_MM:g} mm"
    return None


def geometry_problem(
    meta: Mapping[str, Any],
    shape: Sequence[int] | None = None,
    required: Sequence[str] = ("spacing_mm",),
) -> str | None:
    """Why the geometry in ``meta`` is not one (None: it is), for an array of ``shape``:
    ``spacing_mm`` (one size per axis: :func:`spacing_problem`), ``orientation`` (six direction
    cosines: :func:`orientation_problem`), ``origin_mm`` and ``slice_positions_mm`` (finite,
    one position per slice), each checked where present (a null one is refused, except a null
    ``spacing_mm``: a DICOM image may have none); the ``required`` keys must be there."""
    if not isinstance(meta, Mapping):
        return f"not a JSON object holding a geometry but {type(meta).__name__}"
    missing = [key for key in required if meta.get(key) is None]
    if missing:
        return f"no {', '.join(missing)}"
    if meta.get("spacing_mm") is not None:
        problem = spacing_problem(meta["spacing_mm"], len(shape) if shape else None)
        if problem:
            return f"spacing_mm {problem}"
    nulls = [key for key in ("orientation", "origin_mm", "slice_positions_mm") if key in meta]
    nulls = [key for key in nulls if meta[key] is None]
    if nulls:  # a reader's default stands in for a missing key, not for a null one
        return f"{', '.join(nulls)} is null"
    if meta.get("orientation") is not None:
        cosines = _reals(meta["orientation"])
        problem = "expected six direction cosines"
        if cosines is not None:
            problem = orientation_problem(cosines)
        if problem:
            return f"orientation {meta['orientation']!r}: {problem}"
    if meta.get("origin_mm") is not None:
        problem = _position_problem(meta["origin_mm"])
        if problem:
            return f"origin_mm {problem}"
    listed = meta.get("slice_positions_mm")
    if listed is not None:
        if isinstance(listed, np.ndarray):
            listed = listed.tolist()
        if not isinstance(listed, list | tuple):
            return f"slice_positions_mm: expected a list of positions, got {listed!r}"
        if shape is not None and len(shape) == 3 and len(listed) != shape[0]:
            return f"slice_positions_mm lists {len(listed)} positions for {shape[0]} slices"
        for index, position in enumerate(listed):
            problem = _position_problem(position)
            if problem:
                return f"slice_positions_mm[{index}] {problem}"
    return None


def check_geometry(
    where: Any,
    meta: Mapping[str, Any],
    shape: Sequence[int] | None = None,
    required: Sequence[str] = ("spacing_mm",),
) -> None:
    """:func:`geometry_problem` as an :class:`InputError` naming ``where`` (the file or option
    the geometry came from): every reader and writer of a geometry calls it before any output
    is written."""
    problem = geometry_problem(meta, shape, required)
    if problem:
        raise InputError(f"{where}: geometry unusable: {problem}")


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    return np.cross(row, column)


def geometry_meta(
    orientation: Sequence[float], spacing_mm: Sequence[float], positions: np.ndarray
) -> dict[str, Any]:
    """The geometry entries of ``meta`` from orientation, spacing and per-slice positions."""
    positions = np.asarray(positions, float).reshape(-1, 3)
    return {
        "spacing_mm": floats(spacing_mm),
        "origin_mm": floats(positions[0]),
        "orientation": floats(orientation),
        "slice_normal": floats(unit_vector(slice_normal(orientation))),
        "slice_positions_mm": [floats(p) for p in positions],
    }


def slice_positions(meta: dict[str, Any], slices: int) -> np.ndarray:
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
    normal = unit_vector(slice_normal(orientation))
    origin = np.asarray(meta.get("origin_mm", [0, 0, 0]), float)
    step = float(meta["spacing_mm"][0])
    return origin + np.arange(slices)[:, None] * step * normal


def affine_lps(meta: dict[str, Any], shape: Sequence[int]) -> np.ndarray:
    """4x4 matrix from (column i, row j, slice k, 1) to LPS mm."""
    orientation = np.asarray(meta.get("orientation", [1, 0, 0, 0, 1, 0]), float)
    spacing = np.asarray(meta["spacing_mm"], float)
    positions = slice_positions(meta, shape[0])
    if len(positions) > 1:
        # The mean step between slices, not normal x spacing: keeps a tilted stack in place.
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        step = unit_vector(slice_normal(orientation)) * spacing[0]
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * spacing[2]
    affine[:3, 1] = orientation[3:] * spacing[1]
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return affine


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


def crop_slices(volume: Volume, start: int, stop: int) -> Volume:
    """Slices ``start`` to ``stop`` (exclusive) as a new volume, with positions and origin
    moved; ``meta["source_slice_range"]`` says where they are in the volume as read."""
    slices = len(volume.voxels)
    source = volume.meta.get("source", "volume")
    if not 0 <= start < stop <= slices:
        raise InputError(f"{source}: slice range {start}..{stop} outside 0..{slices}")
    meta = dict(volume.meta)
    positions = slice_positions(meta, slices)[start:stop]
    meta["slice_positions_mm"] = [floats(p) for p in positions]
    meta["origin_mm"] = floats(positions[0])
    if meta.get("slice_files"):
        meta["slice_files"] = meta["slice_files"][start:stop]
    if "filled_slices" in meta:
        meta["filled_slices"] = [i - start for i in meta["filled_slices"] if start <= i < stop]
    offset = meta.get("source_slice_range", [0, slices])[0]
    meta["source_slice_range"] = [offset + start, offset + stop]
    voxels = np.ascontiguousarray(volume.voxels[start:stop]).copy()  # frees the full volume
    return replace(volume, voxels=voxels, meta=meta)
