"""What every classical codec shares: its settings, its interface, its errors and the helpers
that turn HU into the samples a codec library takes.

Every codec takes HU, a 2D slice (rows, cols) or a 3D volume (slices, rows, cols), and gives
float32 HU back. What ``encode`` returns is the whole stream a decoder needs besides the shape
and the setting (which a container would carry): its length is the rate that is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from volinr.data.admission import FLOAT32_EXACT

INT16_MIN, INT16_MAX = -32768, 32767


class CodecError(ValueError):
    """A codec library refused or failed a setting on this data; a sweep skips that setting."""


@dataclass(frozen=True)
class CodecSetting:
    codec: str  # a key of CODECS
    parameter: float | None  # the codec's own knob (see its module); None if lossless
    lossless: bool
    error_bound_hu: float | None  # guaranteed max |error| in HU where the codec states one


class Codec:
    """One codec: builds its settings, encodes and decodes HU."""

    name: str = ""
    has_lossless: bool = False
    has_lossy: bool = True

    def setting(self, parameter: float) -> CodecSetting:
        return CodecSetting(self.name, float(parameter), False, self.error_bound(parameter))

    def lossless_setting(self) -> CodecSetting:
        if not self.has_lossless:
            raise ValueError(f"{self.name} has no lossless mode")
        return CodecSetting(self.name, None, True, 0.0)

    def error_bound(self, parameter: float) -> float | None:
        return None

    def validate(self, setting: CodecSetting) -> None:
        """Refuse settings the libraries would silently misread (imagecodecs passes a negative
        SZ3 bound, ZFP tolerance or JPEG XL distance through and codes *something*)."""
        if setting.lossless and not self.has_lossless:
            raise ValueError(f"{self.name} has no lossless mode")
        if not setting.lossless and not self.has_lossy:
            raise ValueError(f"{self.name} is lossless only")
        if setting.lossless:
            return
        if setting.parameter is None or not math.isfinite(setting.parameter):
            raise ValueError(f"{self.name}: a lossy setting needs a finite parameter")
        self.check_parameter(float(setting.parameter))

    def check_parameter(self, parameter: float) -> None:
        if parameter <= 0:
            raise ValueError(f"{self.name}: the parameter must be > 0, got {parameter:g}")

    def sample_mapping(self, volume: np.ndarray, setting: CodecSetting) -> str:
        """What this codec does to the HU values before coding, in words (a sweep column)."""
        return "int16 HU" + rounding_note(volume, setting)

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


# --- helpers -------------------------------------------------------------------------------


def library_call(codec: str, action: str, function, *args, **kwargs):
    """Call into a codec library, turning its failures (errors of its own, ValueError on a
    dtype or argument it refuses) into CodecError so that a sweep can skip the setting."""
    try:
        return function(*args, **kwargs)
    except (RuntimeError, ValueError, TypeError, OverflowError) as err:
        if isinstance(err, CodecError):
            raise
        raise CodecError(f"{codec}: {action} failed: {type(err).__name__}: {err}") from err


def has_fractions(volume: np.ndarray) -> bool:
    values = np.asarray(volume)
    return values.dtype.kind == "f" and not np.array_equal(np.rint(values), values)


def rounding_note(volume: np.ndarray, setting: CodecSetting) -> str:
    return ", rounded to integer HU" if has_fractions(volume) and not setting.lossless else ""


def integer_hu(volume: np.ndarray, codec: str, lossless: bool) -> np.ndarray:
    """The volume as int16 HU: rounded for lossy coding, refused if a lossless setting would
    have to round, or if it does not fit in 16 bits."""
    values = np.asarray(volume)
    if values.dtype.kind not in "iu":
        rounded = np.rint(values)
        if lossless and not np.array_equal(rounded, values):
            raise CodecError(f"{codec}: lossless coding needs integer HU; this image has fractions")
        values = rounded
    low, high = float(values.min()), float(values.max())
    if low < INT16_MIN or high > INT16_MAX:
        raise CodecError(f"{codec}: values {low:g}..{high:g} do not fit in int16")
    return np.ascontiguousarray(values, dtype=np.int16)


def require_available(codec: str, library) -> None:
    if not library.available:
        raise CodecError(f"{codec}: this imagecodecs build lacks the codec")


def check_shape(codec: str, decoded: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(decoded.shape) != tuple(shape):
        raise ValueError(f"{codec}: decoded shape {decoded.shape} differs from {tuple(shape)}")


def check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim not in (2, 3) or volume.size == 0:
        raise ValueError(f"codecs take a 2D slice or a 3D volume, got shape {volume.shape}")
    if volume.dtype.kind not in "iuf":
        raise ValueError(f"codecs take numeric HU, got dtype {volume.dtype}")
    if volume.dtype.kind == "f" and not np.all(np.isfinite(volume)):
        raise ValueError("codecs take finite HU; this image holds NaN or Inf")
    return volume


def exact_float(volume: np.ndarray) -> np.ndarray:
    """The volume as floats without changing a value: float arrays as they are, integers as
    float32 where every value is exact in it (|v| <= 2^24, e.g. any int16 CT), else float64.
    Metrics on it then never compute in a narrow integer dtype (int16 max - min wraps)."""
    volume = np.asarray(volume)
    if volume.dtype.kind == "f":
        return volume
    low, high = int(volume.min()), int(volume.max())
    exact = max(-low, high) <= FLOAT32_EXACT
    return volume.astype(np.float32 if exact else np.float64)
