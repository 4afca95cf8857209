"""Every codec by name, and the checked entry points ``encode`` and ``decode``."""

from __future__ import annotations

import numpy as np

from volinr.codecs.av1 import Av1
from volinr.codecs.base import Codec, CodecSetting, check_shape, check_volume
from volinr.codecs.float_codecs import Sz3, Zfp, Zstd
from volinr.codecs.hevc import Hevc
from volinr.codecs.jpeg import IMAGE_CODECS, Htj2k, Jpeg2000, JpegLs, JpegXl

CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        Zstd(),
        Jpeg2000(),
        Htj2k(),
        JpegLs(),
        JpegXl(),
        Zfp(),
        Sz3(),
        Hevc(),
        Av1(),
        *(image_codec(per_slice=True) for image_codec in IMAGE_CODECS),
    )
}
__all__ = ["CODECS", "Htj2k", "Jpeg2000", "JpegLs", "JpegXl", "codec_for", "decode", "encode"]


def codec_for(setting: CodecSetting) -> Codec:
    try:
        codec = CODECS[setting.codec]
    except KeyError:
        raise ValueError(f"unknown codec {setting.codec!r}; known: {', '.join(CODECS)}") from None
    codec.validate(setting)
    return codec


def encode(volume: np.ndarray, setting: CodecSetting) -> bytes:
    """The stream for ``volume`` (HU, 2D or 3D) at ``setting``."""
    return codec_for(setting).encode(check_volume(volume), setting)


def decode(data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
    """float32 HU of shape ``shape`` from a stream of ``encode``."""
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"codecs decode 2D or 3D shapes, got {shape}")
    decoded = codec_for(setting).decode(data, setting, shape)
    check_shape(setting.codec, decoded, shape)
    return decoded
