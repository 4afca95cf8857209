"""The SR network's training set, and the rule that keeps the evaluated image out of it.

The SR network must never train on the image it is evaluated on, nor on a re-encoding of it:

- no training image may equal an evaluated slice (sha256 of its values);
- a DICOM frame whose tissue correlates with the evaluation image above ``max_correlation``
  (best of the eight flips and rotations, resized onto its grid) is refused: re-encodings of
  the default slice score 0.93-1.0, a 3-pixel shift 0.76, other patients below 0.1;
- slices of the evaluated volume train only outside the evaluated slab and ``margin``
  neighbours each side.

The split (every training image's source, frame or slice, sha256 and correlation) is recorded
beside the set, and the SR checkpoint carries it, so a reused checkpoint can be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from volinr.data.dicom_frames import correlation_with, read_dicom_frames
from volinr.errors import InputError
from volinr.io import read_json_object, sha256_array

RULE = (
    "no training image equals an evaluated slice (sha256); DICOM frames correlating with the "
    "evaluation image above max_correlation after resizing are refused; slices of the "
    "evaluated volume train only outside the evaluated slab and its margin"
)


@dataclass
class TrainingSet:
    """Training images (``image_0``, ``image_1``, ...) and the split that records them."""

    images: dict[str, np.ndarray] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    excluded_slices: list[int] = field(default_factory=list)


class _Guard:
    """Admits a training image only if the rule above allows it."""

    def __init__(self, evaluation: np.ndarray, source: str, max_correlation: float):
        planes = evaluation[None] if evaluation.ndim == 2 else evaluation
        self.hashes = {sha256_array(plane) for plane in planes}
        # compared against the slice itself, or slices spread through a volume
        index = np.unique(np.linspace(0, len(planes) - 1, min(5, len(planes))).round())
        self.probes = [planes[int(i)] for i in index]
        self.source = source
        self.max_correlation = max_correlation

    def admit(self, pixels: np.ndarray, record: dict[str, Any], check_correlation: bool) -> None:
        where = f"{record['source']} {'frame' if 'frame' in record else 'slice'} "
        where += str(record.get("frame", record.get("slice")))
        record["sha256"] = sha256_array(pixels)
        if record["sha256"] in self.hashes:
            raise InputError(f"{where}: SR training image equals an evaluated slice")
        if check_correlation:
            correlation = max(correlation_with(probe, pixels) for probe in self.probes)
            record["correlation_with_eval"] = round(correlation, 6)
            if abs(correlation) > self.max_correlation:
                raise InputError(
                    f"{where}: SR training image matches the evaluation image {self.source} "
                    f"(correlation {correlation:.4f} > {self.max_correlation}); remove it from "
                    "the training sources"
                )


def build_training_set(
    evaluation: np.ndarray,
    evaluation_source: str,
    sources: Sequence[str],
    volume: np.ndarray | None,
    volume_source: str,
    exclude_slices: tuple[int, int] | None,
    margin: int,
    max_correlation: float,
) -> TrainingSet:
    """The frames of ``sources`` and the axial slices of ``volume`` outside ``exclude_slices``
    (widened by ``margin``), each admitted by the rule; refused if none is left."""
    evaluation = evaluation.astype(np.float32)
    guard = _Guard(evaluation, evaluation_source, max_correlation)
    found = TrainingSet()

    def add(pixels: np.ndarray, record: dict[str, Any], check_correlation: bool) -> None:
        guard.admit(pixels, record, check_correlation)
        found.images[f"image_{len(found.records)}"] = pixels
        found.records.append(record)

    for source in sources:
        for frame in read_dicom_frames(source):
            record = {"source": source, "frame": frame.frame, "shape": list(frame.pixels.shape)}
            add(frame.pixels, record | {"modality": frame.meta["modality"]}, True)
    if volume is not None:
        if volume.ndim != 3:
            raise InputError(
                f"{volume_source}: SR training slices need a volume, got {volume.shape}"
            )
        if exclude_slices:
            start, stop = exclude_slices
            found.excluded_slices = list(
                range(max(0, start - margin), min(len(volume), stop + margin))
            )
        for index in sorted(set(range(len(volume))) - set(found.excluded_slices)):
            record = {"source": volume_source, "slice": index, "shape": list(volume[index].shape)}
            add(volume[index].astype(np.float32), record, False)
    if not found.records:
        excluded = found.excluded_slices
        raise InputError(
            f"{volume_source or evaluation_source}: no SR training images are left (sources: "
            f"{list(sources) or 'none'}; excluded slices {excluded[:1]}..{excluded[-1:]})"
        )
    return found


def split_record(
    evaluation: np.ndarray,
    evaluation_meta: dict[str, Any],
    found: TrainingSet,
    max_correlation: float,
    margin: int | None,
) -> dict[str, Any]:
    """The split as recorded beside the set and inside the SR checkpoint."""
    return {
        "evaluation": {
            "source": evaluation_meta.get("source"),
            "frame": evaluation_meta.get("frame"),
            "slices": evaluation_meta.get("evaluation_slices"),
            "shape": list(evaluation.shape),
            "sha256": sha256_array(evaluation.astype(np.float32)),
        },
        "training": found.records,
        "max_correlation": max_correlation,
        "excluded_slices": found.excluded_slices,
        "margin_slices": margin,
        "rule": RULE,
    }


def read_training_images(path: str) -> list[np.ndarray]:
    """The images of a training set written by ``volinr sr-dataset`` (.npz)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return [data[f"image_{i}"] for i in range(len(data.files))]
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{path}: not a readable SR training set ({err})") from None


def read_split(path: str) -> dict[str, Any]:
    """The split JSON of ``sr-dataset``: the sha256 of every training and evaluated image."""
    split = read_json_object(path)
    try:
        [record["sha256"] for record in split["training"]]
        split["evaluation"]["sha256"]
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: not a split written by sr-dataset (no {err})") from None
    return split
