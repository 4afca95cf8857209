"""HEVC (x265 through PyAV) on 12-bit grayscale: the video-codec anchor of INR papers on
medical volumes (TINC and SCI compare against HEVC).

A 2D slice is one intra frame; a volume is a video whose frames are the slices, coded with
x265's normal GOP (inter prediction between neighbouring slices). Samples are 12-bit 4:0:0
(``gray12le``), mapped from HU as ``volinr.codecs.video`` states. x265 settings, fixed:
preset ``slow`` (4 B-frames with adaptive placement, 4 reference frames, rc-lookahead 25,
rectangular partitions); ``keyint=250`` (one intra frame per 250 slices) with scene-cut
detection left on; ``info=0`` (no 2 kB SEI message with the encoder's version and options: not
needed to decode); ``pools=none:frame-threads=1`` (one thread: deterministic, and kind to a
shared machine). Two x265 4.2 (PyAV 18.1) faults shape the frames: frames narrower or lower
than 64 crashed the process (heap corruption) with 32-sample CTUs, so frames are padded to at
least 64x64 by edge replication (cropped on decoding); frames exactly one CTU wide gave
different bytes run to run, so a 64-wide frame is coded with 32-sample CTUs, wider ones
with 64.

The knob (``CodecSetting.parameter``) is x265's ``crf`` (0..51; lower is better quality;
crf 0 is the near-lossless end: FFmpeg's option stops there, and below -5 x265 stops anyway).
The lossless setting is x265's ``lossless=1``, exact for data within 12 bits.

Stream: the ``video`` header, then the raw HEVC Annex-B elementary stream (VPS/SPS/PPS and
the frames, no container).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from volinr.codecs.base import CodecSetting
from volinr.codecs.video import VideoCodec, require_format

MAX_CRF = 51.0
X265_PRESET = "slow"
X265_PARAMS = {
    "keyint": "250",
    "info": "0",
    "pools": "none",
    "frame-threads": "1",
    "log-level": "error",
}
PIXEL_FORMAT = "gray12le"


def ctu_size(width: int) -> int:
    """64, or 32 for a frame only 64 wide (frames are at least 64 wide)."""
    return 64 if width > 64 else 32


class Hevc(VideoCodec):
    """x265 HEVC, 12-bit 4:0:0; crf sweep, x265 lossless mode."""

    name = "hevc"
    has_lossless = True
    bits = 12
    min_side = 64
    encoder, decoder = "libx265", "hevc"

    def check_parameter(self, parameter: float) -> None:
        if not 0 <= parameter <= MAX_CRF:
            raise ValueError(f"hevc: crf must be in 0..{MAX_CRF:g}, got {parameter:g}")

    def open_encoder(self, av, width: int, height: int, setting: CodecSetting):
        params = dict(X265_PARAMS, ctu=str(ctu_size(width)))
        if setting.lossless:
            params["lossless"] = "1"
        options = {
            "preset": X265_PRESET,
            "x265-params": ":".join(f"{key}={value}" for key, value in params.items()),
        }
        if not setting.lossless:
            options["crf"] = f"{setting.parameter:g}"
        context = av.CodecContext.create(self.encoder, "w")
        context.width, context.height, context.pix_fmt = width, height, PIXEL_FORMAT
        context.time_base = Fraction(1, 25)
        context.options = options
        return context

    def make_frame(self, av, samples: np.ndarray):
        return av.VideoFrame.from_ndarray(samples, format=PIXEL_FORMAT)

    def frame_samples(self, frame) -> np.ndarray:
        require_format(self.name, frame, PIXEL_FORMAT)
        return frame.to_ndarray()
