"""Codecs on the whole array at once: zstd (lossless, on int16 HU), ZFP and SZ3 (float32 with
an absolute error bound; 3D blocks for a volume).

Parameters (``CodecSetting.parameter``), measured on pydicom-data 693_UNCR (512x512):

- ``zfp``: the fixed-accuracy tolerance in HU (ZFP rounds it down to a power of two and keeps
  well inside it). ZFP codes float32 in blocks of 4^d values with a small decorrelating
  transform, an 8-bit exponent per non-empty block and embedded bit planes without an entropy
  coder, so at low rates it is far behind the wavelet codecs (on that slice 31 dB at 0.85 bits
  per voxel, where JPEG 2000 needs 0.04); below ~0.7 bits per voxel (2D) the image is nearly
  blank, so the sweep starts there.
- ``sz3``: the absolute error bound in HU.
- ``zstd``: lossless only (level 19 on the raw little-endian int16 array).

ZFP and SZ3 code float32: integer input beyond 2^24 in magnitude would lose precision there,
and the sweep's metrics (against the original) count it.
"""

from __future__ import annotations

import math

import imagecodecs
import numpy as np

from volinr.codecs.base import (
    Codec,
    CodecSetting,
    check_shape,
    integer_hu,
    library_call,
    require_available,
)
from volinr.errors import InputError

ZSTD_LEVEL = 19


class Zstd(Codec):
    """zstd level 19 on the raw little-endian int16 array: the plain lossless baseline."""

    name = "zstd"
    has_lossless = True
    has_lossy = False

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        require_available(self.name, imagecodecs.ZSTD)
        samples = integer_hu(volume, self.name, lossless=True).astype("<i2", copy=False)
        return bytes(
            library_call(
                self.name, "encode", imagecodecs.zstd_encode, samples.tobytes(), level=ZSTD_LEVEL
            )
        )

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        raw = library_call(self.name, "decode", imagecodecs.zstd_decode, data)
        expected_bytes = 2 * math.prod(shape)
        if len(raw) != expected_bytes:
            raise InputError(
                f"zstd stream decodes to {len(raw)} bytes, expected {expected_bytes} for {shape}"
            )
        return np.frombuffer(raw, "<i2").reshape(shape).astype(np.float32)


class FloatCodec(Codec):
    """A codec on float32 HU with an absolute error bound (the parameter)."""

    def error_bound(self, parameter: float) -> float:
        return float(parameter)

    def sample_mapping(self, volume: np.ndarray, setting: CodecSetting) -> str:
        return "float32 HU"


class Zfp(FloatCodec):
    """ZFP fixed-accuracy mode on float32 (the whole array: 4x4 or 4x4x4 blocks), with ZFP's
    own header (mode, tolerance, shape: ~ 10 bytes) so the stream decodes by itself."""

    name = "zfp"

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        require_available(self.name, imagecodecs.ZFP)
        values = np.ascontiguousarray(volume, dtype=np.float32)
        return bytes(
            library_call(
                self.name,
                "encode",
                imagecodecs.zfp_encode,
                values,
                level=float(setting.parameter),
                mode=imagecodecs.ZFP.MODE.FIXED_ACCURACY,
            )
        )

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        decoded = library_call(self.name, "decode", imagecodecs.zfp_decode, data)
        check_shape(self.name, decoded, shape)
        return np.asarray(decoded, np.float32)


class Sz3(FloatCodec):
    """SZ3 with an absolute error bound on float32 (the whole array). Its stream does not
    carry the dtype, so the decoder is told float32 and the shape, like every other codec."""

    name = "sz3"

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        require_available(self.name, imagecodecs.SZ3)
        values = np.ascontiguousarray(volume, dtype=np.float32)
        return bytes(
            library_call(
                self.name,
                "encode",
                imagecodecs.sz3_encode,
                values,
                mode=imagecodecs.SZ3.MODE.ABS,
                abs=float(setting.parameter),
            )
        )

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        decoded = library_call(
            self.name, "decode", imagecodecs.sz3_decode, data, tuple(shape), np.float32
        )
        check_shape(self.name, decoded, shape)
        return np.asarray(decoded, np.float32)
