"""Image sources: DICOM files by path or by name in the embedded PyPI test-data packages.

A source is a string: a file path, ``pydicom-data:NAME`` (a file of the ``pydicom-data``
package's ``data_store/data`` folder, found by path; ``pydicom.data.get_testdata_files`` is not
used because it tries the network) or ``pydicom:NAME`` (a test file bundled with pydicom).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import BytesLengthException

from volinr.data.modality_lut import apply_rescale, frame_rescales, units
from volinr.errors import InputError
from volinr.io import sha256_array

log = logging.getLogger(__name__)

IMAGE_MODALITIES = {"CT", "MR"}


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise InputError(f"the Python package {package!r} is not installed")
    return Path(spec.origin).parent


def resolve_source(source: str) -> Path:
    """The file path a source string names."""
    if source.startswith("pydicom-data:"):
        path = _package_folder("data_store") / "data" / source.split(":", 1)[1]
    elif source.startswith("pydicom:"):
        path = _package_folder("pydicom") / "data" / "test_files" / source.split(":", 1)[1]
    else:
        path = Path(source)
    if not path.is_file():
        raise InputError(f"{source}: no such file ({path})")
    return path


@dataclass
class Frame:
    """One 2D image read from a DICOM file, in Hounsfield units for CT."""

    pixels: np.ndarray  # float32, (rows, columns)
    source: str
    frame: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return sha256_array(self.pixels)


def _decoder_hint(dataset: pydicom.Dataset) -> str:
    """Which pydicom plugin decodes the file's transfer syntax, and whether one is installed."""
    from pydicom.pixels.decoders.base import get_decoder

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        return ""
    name = getattr(syntax, "name", str(syntax))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f" (transfer syntax {name}: pydicom has no decoder for it)"
    except Exception:  # a malformed UID
        return f" (transfer syntax {name})"
    if decoder.is_native or not (decoder.available_plugins or decoder.missing_dependencies):
        return f" (transfer syntax {name}, uncompressed: the data may be damaged)"
    if decoder.available_plugins:
        plugins = ", ".join(decoder.available_plugins)
        return f" (transfer syntax {name}, decoded here by {plugins}: the data may be damaged)"
    needs = "; ".join(decoder.missing_dependencies)
    return f" (transfer syntax {name}: no installed plugin decodes it; install one of: {needs})"


def decode_pixels(dataset: pydicom.Dataset, path: str | Path) -> np.ndarray:
    """The stored pixel values, or a clear error naming the file and the decoder to install."""
    try:
        return dataset.pixel_array
    except Exception as err:  # pydicom raises many types when a decoder is missing or fails
        raise InputError(
            f"{path}: pixel data cannot be decoded ({err}){_decoder_hint(dataset)}"
        ) from None


# What pydicom raises converting a damaged value (a DS of ";.0", an unknown VR, a short
# binary number), and what Python raises on a value of the wrong kind (a string for Rows).
DAMAGED_VALUE_ERRORS = (
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    struct.error,
    BytesLengthException,
)


@contextlib.contextmanager
def damaged_values(path: str | Path) -> Iterator[None]:
    """Turn the errors of reading a damaged DICOM value into an InputError naming the file."""
    try:
        yield
    except InputError:
        raise
    except DAMAGED_VALUE_ERRORS as err:
        raise InputError(
            f"{path}: a damaged or invalid DICOM value ({type(err).__name__}: {err})"
        ) from None


def read_dicom_frames(source: str, allow_modalities: set[str] = IMAGE_MODALITIES) -> list[Frame]:
    """Read every frame of a single-file DICOM image, rescaled to real-world units (HU for CT)."""
    path = resolve_source(source)
    try:
        dataset = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types on damaged files
        raise InputError(f"{path}: not a readable DICOM file ({err})") from None
    with damaged_values(path):
        return _frames(source, path, dataset, allow_modalities)


def _frames(
    source: str, path: Path, dataset: pydicom.Dataset, allow_modalities: set[str]
) -> list[Frame]:
    modality = str(getattr(dataset, "Modality", "")).upper()
    if "PixelData" not in dataset:
        raise InputError(f"{path}: DICOM object without pixel data (modality {modality or '?'})")
    if modality not in allow_modalities:
        raise InputError(
            f"{path}: modality {modality or 'missing'} is not one of {sorted(allow_modalities)}"
        )
    if int(getattr(dataset, "SamplesPerPixel", 1)) != 1:
        raise InputError(f"{path}: colour image ({dataset.SamplesPerPixel} samples per pixel)")
    stored = decode_pixels(dataset, path)
    frames = stored if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1 else stored[None]
    rescales = frame_rescales(dataset, path, len(frames))
    spacing = _pixel_spacing(dataset, path)
    result = []
    for index, (plane, rescale) in enumerate(zip(frames, rescales, strict=True)):
        pixels = apply_rescale(plane, rescale, path, f"frame {index}")
        meta = {
            "source": source,
            "path": str(path),
            "frame": index,
            "modality": modality,
            "units": units(modality, [rescale]),
            "rescale": rescale.record(),
            "rescale_slope": rescale.slope,
            "rescale_intercept": rescale.intercept,
            "bits_stored": int(getattr(dataset, "BitsStored", stored.dtype.itemsize * 8)),
            "bits_allocated": int(getattr(dataset, "BitsAllocated", stored.dtype.itemsize * 8)),
            "spacing_mm": spacing,
            "stored_dtype": str(stored.dtype),
            "transfer_syntax": str(getattr(dataset.file_meta, "TransferSyntaxUID", "")),
        }
        result.append(Frame(pixels=pixels, source=source, frame=index, meta=meta))
    return result


def _pixel_spacing(dataset: pydicom.Dataset, path: Path) -> list[float] | None:
    spacing = getattr(dataset, "PixelSpacing", None)
    if spacing is None and "SharedFunctionalGroupsSequence" in dataset:
        group = dataset.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in group:
            spacing = getattr(group.PixelMeasuresSequence[0], "PixelSpacing", None)
    if spacing is None:
        return None
    values = (
        [float(spacing)] if isinstance(spacing, int | float | str) else [float(s) for s in spacing]
    )
    # the sidecar's spacing_mm must have one entry per axis of the 2D frame (io.check_sidecar)
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{path}: PixelSpacing {spacing} is not two positive finite numbers")
    return values


def read_frame(source: str, frame: int = 0) -> Frame:
    frames = read_dicom_frames(source)
    if not 0 <= frame < len(frames):
        raise InputError(f"{source}: frame {frame} requested, the file has {len(frames)}")
    return frames[frame]


def correlation_with(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Largest Pearson correlation of the candidate with the reference, inside the reference's
    foreground, over the eight flips and 90-degree rotations of the candidate.

    The candidate is resized onto the reference's grid. A re-encoding of the same slice (lossy
    JPEG 2000, another rescale) correlates near 1 even though its hash differs; restricting to
    the foreground (Otsu threshold) keeps padding and air, shared by every head CT, from
    inflating the score of a different slice, and the flips catch a mirrored copy.
    """
    from skimage.filters import threshold_multiotsu

    from volinr.resample import resize

    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim != 2 or np.ptp(reference) == 0:
        raise ValueError(f"correlation needs a non-constant 2D reference, got {reference.shape}")
    # Three classes (padding or background, air, tissue); the mask keeps what is above the
    # lowest class boundary that leaves out air: the body, for CT with or without padding.
    mask = (
        reference > threshold_multiotsu(reference, classes=3)[-1 if reference.min() < -1500 else 0]
    )
    best = -1.0
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(candidate, turns)
            view = view[:, ::-1] if flip else view
            if view.shape != reference.shape:
                view = resize(np.ascontiguousarray(view), reference.shape, "bilinear")
            ref = reference[mask] - reference[mask].mean()
            cand = np.asarray(view, np.float64)[mask]
            cand = cand - cand.mean()
            denominator = np.sqrt((ref * ref).sum() * (cand * cand).sum())
            best = max(best, float((ref * cand).sum() / denominator) if denominator > 0 else 0.0)
    return best
