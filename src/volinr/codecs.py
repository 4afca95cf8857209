"""Classical codecs on CT slices and volumes, swept over rates for comparison with SIREN.

Every codec takes float32 HU, a 2D slice (rows, cols) or a 3D volume (slices, rows, cols), and
gives float32 HU back. What ``encode`` returns is the whole stream a decoder needs besides the
shape (which a container would carry) and the setting: its length is the rate that is reported.

- Integer codecs (zstd, JPEG 2000, HTJ2K, JPEG-LS, JPEG XL) code integer HU as 16-bit samples.
  Lossy settings round fractional input to integer HU first (the rounding error is part of
  the measured error); lossless settings refuse fractional input, since they could not
  reproduce it. The 2D image codecs code a volume slice by slice, framed as
  uint32 count + uint32 length per slice + the slices' codestreams (little-endian).
  Those that take only unsigned samples (JPEG-LS, JPEG XL) code HU minus the minimum, and the
  stream starts with that minimum as an int16.
- Float codecs (ZFP, SZ3) code the whole float32 array at once (3D blocks for a volume) with
  an absolute error bound.

Parameters (``CodecSetting.parameter``), measured on pydicom-data 693_UNCR (512x512):

- ``jpeg2000``: OpenJPEG's target PSNR (dB) of the single quality layer, against the 16-bit
  peak 65535 rather than the image's range: the native-range PSNR is about
  parameter - 20 log10(65535 / (max - min)), i.e. parameter - 23 dB on that slice. Below
  about 44 OpenJPEG keeps no coefficients at all (a flat image at the header's ~0.008 bits per
  voxel); above about 110 the irreversible 9/7 path saturates near 2.9 bits per voxel.
  imagecodecs exposes no rate (compression ratio) knob, so the PSNR target is the sweep knob.
- ``htj2k``: OpenJPH's quantization step of the irreversible path, as a fraction of the 16-bit
  sample range (1e-4 is about 6.6 HU in the LL band); from about 1 up, every coefficient
  quantizes to zero.
- ``jpegls``: CharLS NEAR, the maximum absolute error in HU (0 = lossless); the standard caps
  it at 255, which puts a floor of about 0.24 bits per voxel under JPEG-LS on that slice.
- ``zfp``: the fixed-accuracy tolerance in HU (ZFP rounds it down to a power of two and keeps
  well inside it). ZFP codes float32 in blocks of 4^d values with a small decorrelating
  transform, an 8-bit exponent per non-empty block and embedded bit planes without an entropy
  coder, so at low rates it is far behind the wavelet codecs (on that slice 31 dB at 0.85 bits
  per voxel, where JPEG 2000 needs 0.04); below ~0.7 bits per voxel (2D) the image is nearly
  blank, so the sweep starts there.
- ``sz3``: the absolute error bound in HU.
- ``jpegxl``: libjxl's butteraugli distance (0.01 .. 25) on 16-bit grayscale; 25 came out
  larger than 15 on that slice, so the sweep stops at 15.
- ``zstd``: lossless only (level 19 on the raw little-endian int16 array).
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import imagecodecs
import numpy as np
from tqdm import tqdm

from volinr import metrics
from volinr.io import InputError

log = logging.getLogger(__name__)

INT16_MIN, INT16_MAX = -32768, 32767
ZSTD_LEVEL = 19
JPEGLS_MAX_NEAR = 255  # the JPEG-LS standard's (and CharLS's) limit
JPEGXL_MAX_DISTANCE = 25.0  # libjxl's


class CodecError(ValueError):
    """A codec library refused or failed a setting on this data; a sweep skips that setting."""


@dataclass(frozen=True)
class CodecSetting:
    codec: str  # a key of CODECS
    parameter: float | None  # the codec's own knob (see the module docstring); None if lossless
    lossless: bool
    error_bound_hu: float | None  # guaranteed max |error| in HU where the codec states one


# --- slice framing -------------------------------------------------------------------------


def frame_slices(payloads: Sequence[bytes]) -> bytes:
    """uint32 count, uint32 length of each payload, then the payloads (little-endian)."""
    header = struct.pack(f"<I{len(payloads)}I", len(payloads), *(len(p) for p in payloads))
    return header + b"".join(payloads)


def unframe_slices(data: bytes | memoryview, expected_count: int) -> list[memoryview]:
    """The payloads of a ``frame_slices`` stream, checked against the expected slice count and
    the stream's length (a truncated or padded stream raises rather than decoding garbage)."""
    view = memoryview(data).cast("B")
    if len(view) < 4:
        raise InputError(f"slice-framed stream of {len(view)} bytes: too short for its header")
    (count,) = struct.unpack_from("<I", view)
    if count != expected_count:
        raise InputError(f"slice-framed stream holds {count} slices, expected {expected_count}")
    header_bytes = 4 + 4 * count
    if len(view) < header_bytes:
        raise InputError(f"slice-framed stream of {len(view)} bytes: truncated header")
    lengths = struct.unpack_from(f"<{count}I", view, 4)
    if header_bytes + sum(lengths) != len(view):
        raise InputError(
            f"slice-framed stream: header promises {header_bytes + sum(lengths)} bytes, "
            f"found {len(view)} (truncated or corrupted)"
        )
    payloads, start = [], header_bytes
    for length in lengths:
        payloads.append(view[start : start + length])
        start += length
    return payloads


# --- helpers -------------------------------------------------------------------------------


def _library_call(codec: str, action: str, function, *args, **kwargs):
    """Call into imagecodecs, turning its failures (errors of its own, ValueError on a dtype
    or argument it refuses) into CodecError so that a sweep can skip the setting."""
    try:
        return function(*args, **kwargs)
    except (RuntimeError, ValueError, TypeError, OverflowError) as err:
        raise CodecError(f"{codec}: {action} failed: {type(err).__name__}: {err}") from err


def _integer_hu(volume: np.ndarray, codec: str, lossless: bool) -> np.ndarray:
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


def _require_available(codec: str, library) -> None:
    if not library.available:
        raise CodecError(f"{codec}: this imagecodecs build lacks the codec")


def _check_shape(codec: str, decoded: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(decoded.shape) != tuple(shape):
        raise ValueError(f"{codec}: decoded shape {decoded.shape} differs from {tuple(shape)}")


# --- codecs --------------------------------------------------------------------------------


class Codec:
    """One codec: builds its settings, encodes and decodes float32 HU."""

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

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


class SliceCodec(Codec):
    """A 2D image codec on integer HU, applied to each slice of a volume (framed)."""

    library = None  # the imagecodecs codec class, for .available
    unsigned = False  # takes uint16 only: code HU - min, the min stored as int16 up front

    def encode_slice(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        raise NotImplementedError

    def decode_slice(self, data: bytes | memoryview) -> np.ndarray:
        raise NotImplementedError

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        _require_available(self.name, self.library)
        samples = _integer_hu(volume, self.name, setting.lossless)
        header = b""
        if self.unsigned:
            offset = int(samples.min())
            header = struct.pack("<h", offset)
            samples = (samples.astype(np.int32) - offset).astype(np.uint16)
        if samples.ndim == 2:
            return header + self.encode_slice(samples, setting)
        return header + frame_slices([self.encode_slice(plane, setting) for plane in samples])

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        view = memoryview(data).cast("B")
        offset = 0
        if self.unsigned:
            if len(view) < 2:
                raise InputError(f"{self.name} stream of {len(view)} bytes: no offset header")
            (offset,) = struct.unpack_from("<h", view)
            view = view[2:]
        payloads = [view] if len(shape) == 2 else unframe_slices(view, shape[0])
        decoded = np.empty(shape, np.float32)
        planes = decoded[None] if len(shape) == 2 else decoded
        for plane, payload in zip(planes, payloads, strict=True):
            samples = self.decode_slice(payload)
            _check_shape(self.name, samples, plane.shape)
            plane[...] = samples
        if offset:
            decoded += offset  # exact: |HU| < 2^24
        return decoded


class Jpeg2000(SliceCodec):
    """OpenJPEG, raw J2K codestream (no JP2 boxes: ~85 bytes a slice less), one quality layer.

    Lossy: irreversible 9/7 wavelet at a target PSNR (dB, peak 65535). Lossless: reversible 5/3.
    """

    name = "jpeg2000"
    has_lossless = True
    library = imagecodecs.JPEG2K

    def encode_slice(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        options = dict(codecformat="J2K", numthreads=1)
        if setting.lossless:
            options.update(reversible=True)
        else:
            options.update(level=float(setting.parameter), reversible=False)
        return bytes(
            _library_call(self.name, "encode", imagecodecs.jpeg2k_encode, samples, **options)
        )

    def decode_slice(self, data: bytes | memoryview) -> np.ndarray:
        return _library_call(self.name, "decode", imagecodecs.jpeg2k_decode, data, numthreads=1)


class Htj2k(SliceCodec):
    """OpenJPH high-throughput JPEG 2000 (Part 15). Lossy: irreversible 9/7 with the given
    quantization step (fraction of the 16-bit range). Lossless: reversible 5/3."""

    name = "htj2k"
    has_lossless = True
    library = imagecodecs.HTJ2K

    def encode_slice(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        if setting.lossless:
            options = dict(reversible=True)
        else:
            options = dict(level=float(setting.parameter), reversible=False)
        return bytes(
            _library_call(self.name, "encode", imagecodecs.htj2k_encode, samples, **options)
        )

    def decode_slice(self, data: bytes | memoryview) -> np.ndarray:
        return _library_call(self.name, "decode", imagecodecs.htj2k_decode, data)


class JpegLs(SliceCodec):
    """CharLS JPEG-LS on uint16 (HU - min). NEAR = max |error| in HU; NEAR 0 is lossless.

    imagecodecs writes a SPIFF header (~45 bytes a slice), counted like everything else.
    """

    name = "jpegls"
    has_lossless = True
    library = imagecodecs.JPEGLS
    unsigned = True

    def error_bound(self, parameter: float) -> float:
        return float(parameter)

    def check_parameter(self, parameter: float) -> None:
        if not (parameter == int(parameter) and 0 <= parameter <= JPEGLS_MAX_NEAR):
            raise ValueError(
                f"jpegls: NEAR must be an integer 0..{JPEGLS_MAX_NEAR}, got {parameter:g}"
            )

    def encode_slice(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        near = 0 if setting.lossless else int(setting.parameter)
        return bytes(
            _library_call(self.name, "encode", imagecodecs.jpegls_encode, samples, level=near)
        )

    def decode_slice(self, data: bytes | memoryview) -> np.ndarray:
        return _library_call(self.name, "decode", imagecodecs.jpegls_decode, data)


class JpegXl(SliceCodec):
    """libjxl on 16-bit grayscale (HU - min, in the low part of the 0..65535 nominal range).

    Lossy: VarDCT at a butteraugli distance. Lossless: modular mode.
    """

    name = "jpegxl"
    has_lossless = True
    library = imagecodecs.JPEGXL
    unsigned = True

    def check_parameter(self, parameter: float) -> None:
        if not 0 < parameter <= JPEGXL_MAX_DISTANCE:
            raise ValueError(
                f"jpegxl: the distance must be in (0, {JPEGXL_MAX_DISTANCE:g}], got {parameter:g}"
            )

    def encode_slice(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        if setting.lossless:
            options = dict(lossless=True)
        else:
            options = dict(distance=float(setting.parameter))
        return bytes(
            _library_call(
                self.name, "encode", imagecodecs.jpegxl_encode, samples, numthreads=1, **options
            )
        )

    def decode_slice(self, data: bytes | memoryview) -> np.ndarray:
        return _library_call(self.name, "decode", imagecodecs.jpegxl_decode, data, numthreads=1)


class Zstd(Codec):
    """zstd level 19 on the raw little-endian int16 array: the plain lossless baseline."""

    name = "zstd"
    has_lossless = True
    has_lossy = False

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        _require_available(self.name, imagecodecs.ZSTD)
        samples = _integer_hu(volume, self.name, lossless=True).astype("<i2", copy=False)
        return bytes(
            _library_call(
                self.name, "encode", imagecodecs.zstd_encode, samples.tobytes(), level=ZSTD_LEVEL
            )
        )

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        raw = _library_call(self.name, "decode", imagecodecs.zstd_decode, data)
        expected_bytes = 2 * math.prod(shape)
        if len(raw) != expected_bytes:
            raise InputError(
                f"zstd stream decodes to {len(raw)} bytes, expected {expected_bytes} for {shape}"
            )
        return np.frombuffer(raw, "<i2").reshape(shape).astype(np.float32)


class Zfp(Codec):
    """ZFP fixed-accuracy mode on float32 (the whole array: 4x4 or 4x4x4 blocks), with ZFP's
    own header (mode, tolerance, shape: ~ 10 bytes) so the stream decodes by itself."""

    name = "zfp"

    def error_bound(self, parameter: float) -> float:
        return float(parameter)

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        _require_available(self.name, imagecodecs.ZFP)
        values = np.ascontiguousarray(volume, dtype=np.float32)
        return bytes(
            _library_call(
                self.name,
                "encode",
                imagecodecs.zfp_encode,
                values,
                level=float(setting.parameter),
                mode=imagecodecs.ZFP.MODE.FIXED_ACCURACY,
            )
        )

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        decoded = _library_call(self.name, "decode", imagecodecs.zfp_decode, data)
        _check_shape(self.name, decoded, shape)
        return np.asarray(decoded, np.float32)


class Sz3(Codec):
    """SZ3 with an absolute error bound on float32 (the whole array). Its stream does not
    carry the dtype, so the decoder is told float32 and the shape, like every other codec."""

    name = "sz3"

    def error_bound(self, parameter: float) -> float:
        return float(parameter)

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        _require_available(self.name, imagecodecs.SZ3)
        values = np.ascontiguousarray(volume, dtype=np.float32)
        return bytes(
            _library_call(
                self.name,
                "encode",
                imagecodecs.sz3_encode,
                values,
                mode=imagecodecs.SZ3.MODE.ABS,
                abs=float(setting.parameter),
            )
        )

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        decoded = _library_call(
            self.name, "decode", imagecodecs.sz3_decode, data, tuple(shape), np.float32
        )
        _check_shape(self.name, decoded, shape)
        return np.asarray(decoded, np.float32)


CODECS: dict[str, Codec] = {
    codec.name: codec for codec in (Zstd(), Jpeg2000(), Htj2k(), JpegLs(), JpegXl(), Zfp(), Sz3())
}


def codec_for(setting: CodecSetting) -> Codec:
    try:
        codec = CODECS[setting.codec]
    except KeyError:
        raise ValueError(f"unknown codec {setting.codec!r}; known: {', '.join(CODECS)}") from None
    codec.validate(setting)
    return codec


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim not in (2, 3) or volume.size == 0:
        raise ValueError(f"codecs take a 2D slice or a 3D volume, got shape {volume.shape}")
    if volume.dtype.kind not in "iuf":
        raise ValueError(f"codecs take numeric HU, got dtype {volume.dtype}")
    if volume.dtype.kind == "f" and not np.all(np.isfinite(volume)):
        raise ValueError("codecs take finite HU; this image holds NaN or Inf")
    return volume


def encode(volume: np.ndarray, setting: CodecSetting) -> bytes:
    """The stream for ``volume`` (float32 HU, 2D or 3D) at ``setting``."""
    return codec_for(setting).encode(_check_volume(volume), setting)


def decode(data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
    """float32 HU of shape ``shape`` from a stream of ``encode``."""
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"codecs decode 2D or 3D shapes, got {shape}")
    decoded = codec_for(setting).decode(data, setting, shape)
    _check_shape(setting.codec, decoded, shape)
    return decoded


# --- sweeps --------------------------------------------------------------------------------

# About 0.01 .. 3 bits per voxel on 693_UNCR, each crossing 30..45 dB 8-bit PSNR (min..max
# window) except where the codec cannot go so low (JPEG-LS: NEAR <= 255; ZFP: per-block
# exponents). The 3D sweep keeps fewer points: it codes hundreds of slices per setting.
LOSSY_SWEEP_2D: dict[str, tuple[float, ...]] = {
    "jpeg2000": (46, 50, 54, 58, 62, 66, 70, 80, 90, 110),
    "htj2k": (0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 3e-5, 1e-5),
    "jpegls": (255, 128, 64, 32, 16, 8, 4, 2, 1),
    "jpegxl": (15, 8, 4, 2, 1, 0.3, 0.1, 0.03, 0.01),
    "zfp": (16384, 8192, 2048, 512, 128, 32, 8, 2, 0.5),
    "sz3": (2048, 1024, 512, 256, 128, 64, 32, 8, 2, 0.5),
}
LOSSY_SWEEP_3D: dict[str, tuple[float, ...]] = {
    "jpeg2000": (46, 52, 58, 64, 70, 90),
    "htj2k": (0.1, 0.03, 0.01, 0.001, 1e-4, 1e-5),
    "jpegls": (255, 64, 16, 4, 1),
    "jpegxl": (15, 4, 1, 0.3, 0.03),
    "zfp": (32768, 8192, 2048, 512, 32, 0.5),
    "sz3": (2048, 512, 256, 64, 8, 0.5),
}
LOSSLESS_CODECS = ("zstd", "jpeg2000", "htj2k", "jpegls", "jpegxl")


def default_sweep(ndim: int) -> list[CodecSetting]:
    """The lossless settings, then each lossy codec from low to high rate."""
    if ndim not in (2, 3):
        raise ValueError(f"codec sweeps are for 2D or 3D images, got ndim {ndim}")
    settings = [CODECS[name].lossless_setting() for name in LOSSLESS_CODECS]
    for name, parameters in (LOSSY_SWEEP_2D if ndim == 2 else LOSSY_SWEEP_3D).items():
        settings += [CODECS[name].setting(parameter) for parameter in parameters]
    return settings


def max_abs_error(reference: np.ndarray, test: np.ndarray) -> float:
    """max |reference - test| in float64, a slice at a time (no float64 copy of a volume)."""
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.ndim == 2:
        reference, test = reference[None], test[None]
    return max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in zip(reference, test, strict=True)
    )


def run_sweep(
    volume: np.ndarray,
    settings: Sequence[CodecSetting],
    window: tuple[float, float] | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Encode, decode and measure ``volume`` at every setting: one row each.

    PSNR (8-bit) uses ``window`` or the volume's min..max. A setting that its codec library
    refuses or fails is logged and skipped; any other error (a decoded shape that differs, a
    malformed stream of our own) is raised.
    """
    volume = _check_volume(volume)
    window = metrics.minmax_window(volume) if window is None else window
    if progress is None:
        progress = os.isatty(2)
    rows = []
    for setting in tqdm(settings, desc="codecs", disable=not progress):
        try:
            start = time.perf_counter()
            data = encode(volume, setting)
            encode_seconds = time.perf_counter() - start
            start = time.perf_counter()
            decoded = decode(data, setting, volume.shape)
            decode_seconds = time.perf_counter() - start
        except CodecError as err:
            log.warning("skipping %s: %s", setting, err)
            continue
        rows.append(
            {
                "codec": setting.codec,
                "parameter": setting.parameter,
                "lossless": setting.lossless,
                "error_bound_hu": setting.error_bound_hu,
                "bytes": len(data),
                "bits_per_voxel": metrics.bits_per_voxel(len(data), volume.size),
                "psnr_8bit_minmax_db": metrics.psnr_8bit(volume, decoded, window),
                "psnr_native_db": metrics.psnr_native(volume, decoded),
                "ssim": metrics.ssim(volume, decoded),
                "max_abs_error_hu": max_abs_error(volume, decoded),
                "encode_seconds": encode_seconds,
                "decode_seconds": decode_seconds,
            }
        )
        log.info(
            "%s %s: %.4f bits per voxel, %.2f dB",
            setting.codec,
            "lossless" if setting.lossless else f"{setting.parameter:g}",
            rows[-1]["bits_per_voxel"],
            rows[-1]["psnr_8bit_minmax_db"],
        )
    return rows


def smallest_lossless(volume: np.ndarray) -> tuple[int, str]:
    """Bytes of ``volume`` (integer HU) under the best of the lossless codecs, and which one:
    the honest size of storing an image losslessly (e.g. the LR image of the ablation)."""
    volume = _check_volume(volume)
    if volume.dtype.kind == "f" and not np.array_equal(volume, np.rint(volume)):
        # Not integer HU (e.g. a resampled NIfTI): zstd on the float32 bytes is lossless.
        raw = np.ascontiguousarray(volume, "<f4").tobytes()
        return len(imagecodecs.zstd_encode(raw, level=ZSTD_LEVEL)), "zstd (float32)"
    sizes = {}
    for name in LOSSLESS_CODECS:
        setting = CODECS[name].lossless_setting()
        try:
            sizes[name] = len(encode(volume, setting))
        except CodecError as err:
            log.warning("lossless %s skipped: %s", name, err)
    if not sizes:
        raise InputError("no lossless codec could encode the image (is it integer-valued?)")
    best = min(sizes, key=sizes.get)
    return sizes[best], best
