"""Reading a volume from a NumPy ``.npy`` file and its JSON sidecar (dataset kind ``array``).

An array carries no geometry, units or origin, so the sidecar (the same path with ``.json``)
must say them, and pins the file by its sha256 so that a run cannot silently evaluate another
array than the one described. Its keys:

- ``sha256_npy`` (required): sha256 of the ``.npy`` file's bytes;
- ``spacing_zyx_mm`` (required): three positive sizes (1 nm to 10 m), slice step then row
  then column spacing (volinr's ``spacing_mm`` order; the key names the order because NumPy
  arrays have no axes);
- ``units`` (required): what the values are, e.g. ``HU`` or ``raw scanner values (not HU)``;
- ``modality`` (optional, e.g. ``CT``); ``shape_zyx`` and ``dtype`` (optional, checked when
  given); anything else (name, origin of the data, licence, attribution) is kept verbatim in
  the volume's metadata under ``sidecar``, so that it travels with every prepared volume.

The array is (slices, rows, cols), axial, in an identity orientation (no orientation is
known); its voxels become float32, which holds every integer up to 2^24 exactly: larger
integers are refused rather than silently rounded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from volinr.data.admission import float32_voxels
from volinr.data.geometry import (
    MAX_SPACING_MM,
    MIN_SPACING_MM,
    Volume,
    check_geometry,
    floats,
    geometry_meta,
    spacing_problem,
)
from volinr.errors import InputError
from volinr.io import read_json_object, sha256_file, sidecar_path

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("sha256_npy", "spacing_zyx_mm", "units")
IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # rows along +x, columns along +y (LPS)


def read_array_volume(path: str | os.PathLike, source: str = "") -> Volume:
    """The volume of ``path`` (.npy) described by its sidecar; every problem is an
    :class:`InputError` naming the file, raised before anything is written."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (dataset kind array needs a .npy file)")
    sidecar_file = sidecar_path(path)
    if not sidecar_file.is_file():
        raise InputError(
            f"{path}: its sidecar {sidecar_file} is missing; an array needs one giving "
            f"{', '.join(REQUIRED_KEYS)} (see volinr.data.array_file)"
        )
    sidecar = read_json_object(sidecar_file)
    missing = [key for key in REQUIRED_KEYS if key not in sidecar]
    if missing:
        raise InputError(f"{sidecar_file}: missing {', '.join(missing)}")
    spacing = _spacing(sidecar["spacing_zyx_mm"], sidecar_file)
    units = sidecar["units"]
    if not isinstance(units, str) or not units.strip():
        raise InputError(f"{sidecar_file}: units must be a non-empty string, got {units!r}")
    # The checksum first: a file that is not the one described is refused before it is parsed.
    seen = sha256_file(path)
    if seen != sidecar["sha256_npy"]:
        raise InputError(
            f"{path}: sha256 {seen} does not match its sidecar {sidecar_file} "
            f"({sidecar['sha256_npy']}); the array is not the one the sidecar describes"
        )
    array = _load(path)
    _check_against_sidecar(array, sidecar, path, sidecar_file)
    voxels = float32_voxels(array, str(path))

    positions = np.arange(voxels.shape[0])[:, None] * spacing[0] * np.array([0.0, 0.0, 1.0])
    meta = {
        "source": source or str(path),
        "kind": "array",
        "modality": str(sidecar.get("modality", "")),
        "units": units,
        # Said outright because the tables and codecs were written for CT in HU.
        "units_are_hu": units.strip().upper() == "HU",
        **geometry_meta(IDENTITY, spacing, positions),
        "orientation_assumed": "identity (axial): an array has no orientation",
        "file": str(path),
        "file_sha256": seen,
        "stored_dtype": str(array.dtype),
        "sidecar_file": str(sidecar_file),
        "sidecar": sidecar,
    }
    check_geometry(sidecar_file, meta, voxels.shape)
    log.info(
        "%s: array %s %s, spacing %s mm, units %s", path, array.shape, array.dtype, spacing, units
    )
    return Volume(voxels, meta)


def _spacing(value: Any, sidecar_file: Path) -> list[float]:
    if not isinstance(value, list) or spacing_problem(value, 3):
        raise InputError(
            f"{sidecar_file}: spacing_zyx_mm must be three positive finite sizes in mm, "
            f"from {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} each, got {value!r}"
        )
    return floats(value)


def _load(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)  # never unpickle a user's file
    except (OSError, ValueError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive loads as a mapping
        raise InputError(f"{path}: not a single .npy array (an .npz archive?)")
    return array


def _check_against_sidecar(
    array: np.ndarray, sidecar: dict[str, Any], path: Path, sidecar_file: Path
) -> None:
    if array.ndim != 3:
        raise InputError(f"{path}: expected a 3-D array (slices, rows, cols), found {array.shape}")
    if min(array.shape) < 1:
        raise InputError(f"{path}: an empty array (shape {array.shape})")
    if array.dtype.kind not in "iuf":
        raise InputError(f"{path}: dtype {array.dtype}; expected integers or floats")
    shape = sidecar.get("shape_zyx")
    if shape is not None and not (
        isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
    ):
        raise InputError(
            f"{sidecar_file}: shape_zyx must be a list of sizes such as {list(array.shape)}, "
            f"got {shape!r}"
        )
    if shape is not None and shape != list(array.shape):
        raise InputError(f"{path}: shape {array.shape}, its sidecar {sidecar_file} says {shape}")
    dtype = sidecar.get("dtype")
    if dtype is not None and str(dtype) != str(array.dtype):
        raise InputError(f"{path}: dtype {array.dtype}, its sidecar {sidecar_file} says {dtype}")
