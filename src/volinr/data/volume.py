"""One entry point for every volume source: a dataset spec (the config's ``dataset`` section)
to a :class:`~volinr.data.geometry.Volume`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from volinr.data.array_file import read_array_volume
from volinr.data.dicom_frames import IMAGE_MODALITIES
from volinr.data.dicom_series import read_dicom_series
from volinr.data.geometry import Volume, crop_slices
from volinr.data.nifti import read_nifti
from volinr.data.phantom import synthetic_head_phantom
from volinr.errors import InputError

KINDS = ("array", "dicom_series", "nifti", "phantom")


def read_volume(spec: dict[str, Any]) -> Volume:
    """A volume from a dataset spec: ``kind`` (array, dicom_series, nifti, phantom) and its keys.

    dicom_series: ``path``, ``series_uid``, ``gap_policy``, ``duplicate_policy``,
    ``allow_modalities``; nifti: ``path``; array: ``path`` (a .npy beside its .json sidecar,
    see :mod:`volinr.data.array_file`); phantom: ``shape``, ``seed``, ``spacing_mm`` (or the
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
        elif kind == "array":
            volume = read_array_volume(path, source=spec.get("source", ""))
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


def nifti_in_folder(folder: Path) -> Path:
    """The one NIfTI file of a (downloaded) folder."""
    found = sorted(p for p in folder.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise InputError(f"{folder}: expected exactly one .nii or .nii.gz file, found {names}")
    return found[0]
