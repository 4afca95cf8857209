"""AV1 (SVT-AV1 through PyAV, decoded by dav1d) at 10 bits.

The AV1 encoder in PyAV's wheels, SVT-AV1, takes 8- or 10-bit 4:2:0 only: CT's 12-bit range
is mapped to 10 bits as ``volinr.codecs.video`` states (an offset when the range is under
1,024 HU, else a scale: a step of 4.39 HU on the embedded slice, 3.84 on headsq), and the
mapping's error is counted in the metrics. That error (<= half a step) is far below what the
codec itself loses at every rate the sweep covers (measured: at 0.8 bits per voxel on the
embedded slice AV1 is still at 68 dB native PSNR), so 10 bits do not handicap it there; they
rule out lossless coding (and SVT-AV1 4.1's ``lossless=1`` was not exact on 10-bit luma), so
AV1 has lossy settings only. The chroma planes are constant (512) and cost a few bytes.

Settings: ``preset=4`` (of 0..13; measured on the embedded slice and a 24x256x256 phantom:
about 1 dB above preset 6 at matched rates, 1.5-2 dB above preset 8; one 512x512 intra frame
takes ~1.4 s, a volume 0.25-0.4 us a voxel, so a 463x512x512 volume 30-45 s a setting),
``lp=1`` (one thread: deterministic, measured), SVT's default random-access structure
(hierarchical mini-GOPs, a key frame every ~160 frames). The knob (``CodecSetting.parameter``)
is SVT-AV1's ``crf`` (1..63; lower is better quality).

Stream: the ``video`` header, then the raw AV1 OBU stream (low-overhead format, a temporal
delimiter before every frame's temporal unit; no container). SVT-AV1 prints a banner unless
``SVT_LOG`` says otherwise: it is set to 1 (errors only) unless already set.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from volinr.codecs.base import CodecSetting
from volinr.codecs.streams import ByteReader
from volinr.codecs.video import VideoCodec, require_format
from volinr.errors import InputError

MIN_CRF, MAX_CRF = 1.0, 63.0
SVT_PRESET = "4"
SVT_PARAMS = "lp=1"
PIXEL_FORMAT = "yuv420p10le"
CHROMA_MID = 512  # neutral 10-bit chroma
OBU_TEMPORAL_DELIMITER = 2


def temporal_units(stream: bytes) -> list[bytes]:
    """An AV1 low-overhead OBU stream split at its temporal delimiters (one unit a frame),
    every OBU's size checked against the stream."""
    reader = ByteReader(stream, "av1 stream")
    units, start = [], 0
    while reader.position < len(stream):
        position = reader.position
        header = reader.take(1)[0]
        if header & 0x80 or not header & 0x02:
            raise InputError(f"av1 stream: corrupted OBU header at byte {position}")
        if header & 0x04:  # extension header
            reader.take(1)
        reader.take(reader.varint())
        if (header >> 3) & 0x0F == OBU_TEMPORAL_DELIMITER and position > start:
            units.append(stream[start:position])
            start = position
    units.append(stream[start:])
    return units


class Av1(VideoCodec):
    """SVT-AV1, 10-bit 4:2:0 with constant chroma; crf sweep; lossy only."""

    name = "av1"
    bits = 10
    min_side = 8
    encoder, decoder = "libsvtav1", "libdav1d"

    def check_parameter(self, parameter: float) -> None:
        if not (parameter == int(parameter) and MIN_CRF <= parameter <= MAX_CRF):
            raise ValueError(
                f"av1: crf must be an integer {MIN_CRF:g}..{MAX_CRF:g}, got {parameter:g}"
            )

    def open_encoder(self, av, width: int, height: int, setting: CodecSetting):
        os.environ.setdefault("SVT_LOG", "1")
        context = av.CodecContext.create(self.encoder, "w")
        context.width, context.height, context.pix_fmt = width, height, PIXEL_FORMAT
        context.time_base = Fraction(1, 25)
        context.options = {
            "preset": SVT_PRESET,
            "crf": f"{int(setting.parameter)}",
            "svtav1-params": SVT_PARAMS,
        }
        return context

    def make_frame(self, av, samples: np.ndarray):
        height, width = samples.shape
        frame = av.VideoFrame(width, height, PIXEL_FORMAT)
        luma = frame.planes[0]
        rows = np.zeros((height, luma.line_size // 2), np.uint16)  # lines may be padded
        rows[:, :width] = samples
        luma.update(rows.tobytes())
        for chroma in frame.planes[1:]:
            chroma.update(np.full(chroma.buffer_size // 2, CHROMA_MID, np.uint16).tobytes())
        return frame

    def frame_samples(self, frame) -> np.ndarray:
        require_format(self.name, frame, PIXEL_FORMAT)
        luma = frame.planes[0]
        lines = np.frombuffer(luma, np.uint16).reshape(frame.height, luma.line_size // 2)
        return lines[:, : frame.width].copy()

    def packets_for_decoder(self, av, context, elementary: bytes) -> list:
        return [av.Packet(unit) for unit in temporal_units(elementary)]
