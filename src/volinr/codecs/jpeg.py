"""The 2D image codecs (imagecodecs) on integer HU: JPEG 2000, HTJ2K, JPEG-LS, JPEG XL.

A 2D slice is one codestream. A volume is one mosaic codestream (``volinr.codecs.mosaic``:
the slices tiled into one image; split into slabs only beyond the codec's limits). The
``<name>_per_slice`` variants code a volume slice by slice instead, framed as uint32 count +
uint32 length per slice + the slices' codestreams (little-endian): kept to show what the
per-slice headers cost. Lossy settings round fractional input to integer HU first (the
rounding error is part of the measured error); lossless settings refuse fractional input,
since they could not reproduce it. The codecs that take only unsigned samples (JPEG-LS,
JPEG XL) code HU minus the minimum, and the stream starts with that minimum as an int16.

Parameters (``CodecSetting.parameter``), measured on pydicom-data 693_UNCR (512x512):

- ``jpeg2000``: OpenJPEG's target PSNR (dB) of the single quality layer, against the 16-bit
  peak 65535 rather than the image's range: the native-range PSNR is about
  parameter - 20 log10(65535 / (max - min)), i.e. parameter - 23 dB on that slice. Below
  about 44 OpenJPEG keeps no coefficients at all (a flat image at the header's ~0.008 bits per
  voxel); above about 110 the irreversible 9/7 path saturates near 2.9 bits per voxel.
  imagecodecs exposes no rate (compression ratio) knob, so the PSNR target is the sweep knob.
  On a mosaic the target is over the whole mosaic, constant fill tiles included.
- ``htj2k``: OpenJPH's quantization step of the irreversible path, as a fraction of the 16-bit
  sample range (1e-4 is about 6.6 HU in the LL band); from about 1 up, every coefficient
  quantizes to zero.
- ``jpegls``: CharLS NEAR, the maximum absolute error in HU (0 = lossless); the standard caps
  it at 255, which puts a floor of about 0.24 bits per voxel under JPEG-LS on that slice.
- ``jpegxl``: libjxl's butteraugli distance (0.01 .. 25) on 16-bit grayscale; 25 came out
  larger than 15 on that slice, so the sweep stops at 15.

Largest image side (checked: a 8 x 262,145 image round-trips through each): JPEG 2000, HTJ2K
and JPEG-LS take 32-bit sizes; JPEG XL's codestream allows 2^30.
"""

from __future__ import annotations

import struct
from functools import partial

import imagecodecs
import numpy as np

from volinr.codecs import mosaic
from volinr.codecs.base import (
    Codec,
    CodecSetting,
    check_shape,
    integer_hu,
    library_call,
    require_available,
    rounding_note,
)
from volinr.codecs.streams import frame_slices, unframe_slices
from volinr.errors import InputError

JPEGLS_MAX_NEAR = 255  # the JPEG-LS standard's (and CharLS's) limit
JPEGXL_MAX_DISTANCE = 25.0  # libjxl's
SIDE_32BIT = (1 << 32) - 1
SIDE_JPEGXL = 1 << 30


class ImageCodec(Codec):
    """A 2D image codec on integer HU: one codestream per slice or per volume (mosaic)."""

    base_name = ""
    library = None  # the imagecodecs codec class, for .available
    unsigned = False  # takes uint16 only: code HU - min, the min stored as int16 up front
    max_side = SIDE_32BIT

    def __init__(self, per_slice: bool = False):
        self.per_slice = per_slice
        self.name = f"{self.base_name}_per_slice" if per_slice else self.base_name

    def encode_image(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        raise NotImplementedError

    def decode_image(self, data: bytes | memoryview) -> np.ndarray:
        raise NotImplementedError

    def sample_mapping(self, volume: np.ndarray, setting: CodecSetting) -> str:
        if not self.unsigned:
            return super().sample_mapping(volume, setting)
        low = int(np.floor(float(np.min(volume))))
        return f"uint16 = HU - ({low})" + rounding_note(volume, setting)

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        require_available(self.name, self.library)
        samples = integer_hu(volume, self.name, setting.lossless)
        header = b""
        if self.unsigned:
            offset = int(samples.min())
            header = struct.pack("<h", offset)
            samples = (samples.astype(np.int32) - offset).astype(np.uint16)
        encode_image = partial(self.encode_image, setting=setting)
        if samples.ndim == 2:
            return header + encode_image(samples)
        if self.per_slice:
            return header + frame_slices([encode_image(plane) for plane in samples])
        return header + mosaic.encode_mosaic(samples, encode_image, self.max_side, self.name)

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        view = memoryview(data).cast("B")
        offset = 0
        if self.unsigned:
            if len(view) < 2:
                raise InputError(f"{self.name} stream of {len(view)} bytes: no offset header")
            (offset,) = struct.unpack_from("<h", view)
            view = view[2:]
        if len(shape) == 3 and not self.per_slice:
            samples = mosaic.decode_mosaic(view, shape, self.decode_image, self.name)
            decoded = samples.astype(np.float32)
        else:
            payloads = [view] if len(shape) == 2 else unframe_slices(view, shape[0])
            decoded = np.empty(shape, np.float32)
            planes = decoded[None] if len(shape) == 2 else decoded
            for plane, payload in zip(planes, payloads, strict=True):
                samples = self.decode_image(payload)
                check_shape(self.name, samples, plane.shape)
                plane[...] = samples
        if offset:
            decoded += offset  # exact: |HU| < 2^24
        return decoded


class Jpeg2000(ImageCodec):
    """OpenJPEG, raw J2K codestream (no JP2 boxes: ~85 bytes a slice less), one quality layer.

    Lossy: irreversible 9/7 wavelet at a target PSNR (dB, peak 65535). Lossless: reversible 5/3.
    """

    base_name = "jpeg2000"
    has_lossless = True
    library = imagecodecs.JPEG2K

    def encode_image(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        options = dict(codecformat="J2K", numthreads=1)
        if setting.lossless:
            options.update(reversible=True)
        else:
            options.update(level=float(setting.parameter), reversible=False)
        return bytes(
            library_call(self.name, "encode", imagecodecs.jpeg2k_encode, samples, **options)
        )

    def decode_image(self, data: bytes | memoryview) -> np.ndarray:
        return library_call(self.name, "decode", imagecodecs.jpeg2k_decode, data, numthreads=1)


class Htj2k(ImageCodec):
    """OpenJPH high-throughput JPEG 2000 (Part 15). Lossy: irreversible 9/7 with the given
    quantization step (fraction of the 16-bit range). Lossless: reversible 5/3."""

    base_name = "htj2k"
    has_lossless = True
    library = imagecodecs.HTJ2K

    def encode_image(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        if setting.lossless:
            options = dict(reversible=True)
        else:
            options = dict(level=float(setting.parameter), reversible=False)
        return bytes(
            library_call(self.name, "encode", imagecodecs.htj2k_encode, samples, **options)
        )

    def decode_image(self, data: bytes | memoryview) -> np.ndarray:
        return library_call(self.name, "decode", imagecodecs.htj2k_decode, data)


class JpegLs(ImageCodec):
    """CharLS JPEG-LS on uint16 (HU - min). NEAR = max |error| in HU; NEAR 0 is lossless.

    imagecodecs writes a SPIFF header (~45 bytes a codestream), counted like everything else.
    """

    base_name = "jpegls"
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

    def encode_image(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        near = 0 if setting.lossless else int(setting.parameter)
        return bytes(
            library_call(self.name, "encode", imagecodecs.jpegls_encode, samples, level=near)
        )

    def decode_image(self, data: bytes | memoryview) -> np.ndarray:
        return library_call(self.name, "decode", imagecodecs.jpegls_decode, data)


class JpegXl(ImageCodec):
    """libjxl on 16-bit grayscale (HU - min, in the low part of the 0..65535 nominal range).

    Lossy: VarDCT at a butteraugli distance. Lossless: modular mode.
    """

    base_name = "jpegxl"
    has_lossless = True
    library = imagecodecs.JPEGXL
    unsigned = True
    max_side = SIDE_JPEGXL

    def check_parameter(self, parameter: float) -> None:
        if not 0 < parameter <= JPEGXL_MAX_DISTANCE:
            raise ValueError(
                f"jpegxl: the distance must be in (0, {JPEGXL_MAX_DISTANCE:g}], got {parameter:g}"
            )

    def encode_image(self, samples: np.ndarray, setting: CodecSetting) -> bytes:
        if setting.lossless:
            options = dict(lossless=True)
        else:
            options = dict(distance=float(setting.parameter))
        return bytes(
            library_call(
                self.name, "encode", imagecodecs.jpegxl_encode, samples, numthreads=1, **options
            )
        )

    def decode_image(self, data: bytes | memoryview) -> np.ndarray:
        return library_call(self.name, "decode", imagecodecs.jpegxl_decode, data, numthreads=1)


IMAGE_CODECS = (Jpeg2000, Htj2k, JpegLs, JpegXl)
