"""Classical codecs on CT slices and volumes, swept over rates for comparison with SIREN.

One module per job: ``base`` (settings, the Codec interface, errors, HU -> samples),
``streams`` (varints, slice framing), ``mosaic`` (one codestream per volume for the 2D
codecs), ``jpeg`` (JPEG 2000, HTJ2K, JPEG-LS, JPEG XL and their ``_per_slice`` variants),
``float_codecs`` (zstd, ZFP, SZ3), ``video`` (what the video codecs share: the stated HU ->
N-bit mapping, the stream header), ``hevc`` (x265, 12 bits), ``av1`` (SVT-AV1, 10 bits),
``registry`` (every codec by name; ``encode``/``decode``) and ``sweep`` (default sweeps and
measurement).
"""

import imagecodecs  # noqa: F401  (tests patch library functions through this name)

from volinr import metrics  # noqa: F401
from volinr.codecs.av1 import Av1
from volinr.codecs.base import (
    INT16_MAX,
    INT16_MIN,
    Codec,
    CodecError,
    CodecSetting,
    exact_float,
)
from volinr.codecs.float_codecs import ZSTD_LEVEL, Sz3, Zfp, Zstd
from volinr.codecs.hevc import Hevc
from volinr.codecs.jpeg import (
    JPEGLS_MAX_NEAR,
    JPEGXL_MAX_DISTANCE,
    Htj2k,
    ImageCodec,
    Jpeg2000,
    JpegLs,
    JpegXl,
)
from volinr.codecs.registry import CODECS, codec_for, decode, encode
from volinr.codecs.streams import frame_slices, unframe_slices
from volinr.codecs.sweep import (
    LOSSLESS_CODECS,
    LOSSLESS_CODECS_3D,
    LOSSY_SWEEP_2D,
    LOSSY_SWEEP_3D,
    decode_lossless_stream,
    default_sweep,
    max_abs_error,
    measure,
    run_sweep,
    smallest_lossless,
    smallest_lossless_stream,
)

__all__ = [
    "CODECS",
    "Av1",
    "INT16_MAX",
    "INT16_MIN",
    "JPEGLS_MAX_NEAR",
    "JPEGXL_MAX_DISTANCE",
    "LOSSLESS_CODECS",
    "LOSSLESS_CODECS_3D",
    "LOSSY_SWEEP_2D",
    "LOSSY_SWEEP_3D",
    "ZSTD_LEVEL",
    "Codec",
    "CodecError",
    "CodecSetting",
    "Hevc",
    "Htj2k",
    "ImageCodec",
    "Jpeg2000",
    "JpegLs",
    "JpegXl",
    "Sz3",
    "Zfp",
    "Zstd",
    "codec_for",
    "decode",
    "default_sweep",
    "encode",
    "exact_float",
    "frame_slices",
    "max_abs_error",
    "measure",
    "run_sweep",
    "decode_lossless_stream",
    "smallest_lossless",
    "smallest_lossless_stream",
    "unframe_slices",
]
