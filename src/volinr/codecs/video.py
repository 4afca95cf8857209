"""Video codecs through PyAV (FFmpeg) on CT: the slices of a volume as frames, a 2D slice as
one frame. Shared by ``hevc`` and ``av1``: the HU -> N-bit sample mapping, the stream header,
and the encode and decode loops.

Sample mapping, stated in the stream and in the sweep's ``sample_mapping`` column. A video
codec of N bits codes samples 0..2^N - 1; with low = floor(min HU) and span = ceil(max HU) -
low:

- span < 2^N: sample = HU - low (an exact offset; fractional HU are rounded, and the rounding
  is counted in the metrics);
- span >= 2^N (at 12 bits, the embedded slice's 4,492 HU because of its -3,024 HU padding):
  sample = round((HU - low) x (2^N - 1) / span), decoded as low + sample x span / (2^N - 1):
  a scale whose step (span / (2^N - 1) HU) adds up to half a step of error everywhere, which
  the metrics count. Nothing is clipped. A lossless setting refuses such data (CodecError: it
  could not reproduce it) rather than call a scaled coding lossless.

Stream: LEB128 varints (slices, 0 for a 2D image; rows; cols; low zigzag-signed; span), then
the codec's raw elementary stream (no container). Frames smaller than the codec's minimum
side are padded by edge replication and cropped on decoding.
"""

from __future__ import annotations

import math

import numpy as np

from volinr.codecs.base import Codec, CodecError, CodecSetting, has_fractions
from volinr.codecs.streams import ByteReader, put_signed_varint, put_varint
from volinr.errors import InputError


def import_av(encoder: str):
    """PyAV, imported when first used (it loads FFmpeg's libraries), with ``encoder``."""
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a pinned dependency
        raise CodecError(f"PyAV is not installed ({err})") from err
    if encoder not in av.codecs_available:  # pragma: no cover - the PyPI wheels carry it
        raise CodecError(f"this PyAV build lacks {encoder}")
    return av


def require_format(codec: str, frame, expected: str) -> None:
    """A decoded frame must have the pixel format the codec wrote (a damaged sequence header
    could say otherwise)."""
    if frame.format.name != expected:
        raise InputError(f"{codec} stream: frames are {frame.format.name}, expected {expected}")


class SampleMapping:
    """HU <-> N-bit samples: an offset, or an offset and a scale when the range is wider."""

    def __init__(self, low: int, span: int, bits: int):
        self.low, self.span, self.bits = int(low), int(span), bits
        self.max_sample = (1 << bits) - 1
        self.scaled = self.span > self.max_sample

    @classmethod
    def of(cls, volume: np.ndarray, bits: int) -> SampleMapping:
        low = math.floor(float(np.min(volume)))
        return cls(low, math.ceil(float(np.max(volume))) - low, bits)

    @property
    def step_hu(self) -> float:
        return self.span / self.max_sample if self.scaled else 1.0

    def describe(self) -> str:
        name = f"uint{self.bits}"
        if not self.scaled:
            return f"{name} = HU - ({self.low})"
        return (
            f"{name} = round((HU - ({self.low})) x {self.max_sample}/{self.span}): a range of "
            f"{self.span} HU scaled to {self.bits} bits, step {self.step_hu:.3f} HU, error <= "
            f"{self.step_hu / 2:.3f} HU before coding"
        )

    def to_samples(self, plane: np.ndarray) -> np.ndarray:
        values = np.asarray(plane, np.float64) - self.low
        if self.scaled:
            values *= self.max_sample / self.span
        return np.clip(np.rint(values), 0, self.max_sample).astype(np.uint16)

    def to_hu(self, samples: np.ndarray) -> np.ndarray:
        values = samples.astype(np.float64)
        if self.scaled:
            values *= self.span / self.max_sample
        return (values + self.low).astype(np.float32)


class VideoCodec(Codec):
    """A PyAV video encoder on N-bit luma; subclasses say how to open it and feed it."""

    bits = 12
    min_side = 1
    encoder = ""
    decoder = ""

    def open_encoder(self, av, width: int, height: int, setting: CodecSetting):
        raise NotImplementedError

    def make_frame(self, av, samples: np.ndarray):
        raise NotImplementedError

    def frame_samples(self, frame) -> np.ndarray:
        raise NotImplementedError

    def packets_for_decoder(self, av, context, elementary: bytes) -> list:
        """The decoder's input packets from the elementary stream (then a flush)."""
        return [*context.parse(elementary), *context.parse(None)]

    def frame_shape(self, rows: int, cols: int) -> tuple[int, int]:
        return max(rows, self.min_side), max(cols, self.min_side)

    def pad_frame(self, plane: np.ndarray) -> np.ndarray:
        height, width = self.frame_shape(*plane.shape)
        extra = ((0, height - plane.shape[0]), (0, width - plane.shape[1]))
        return np.pad(plane, extra, mode="edge") if any(e for _, e in extra) else plane

    def sample_mapping(self, volume: np.ndarray, setting: CodecSetting) -> str:
        mapping = SampleMapping.of(volume, self.bits)
        note = ", rounded to integer HU" if has_fractions(volume) and not mapping.scaled else ""
        return mapping.describe() + note

    def encode(self, volume: np.ndarray, setting: CodecSetting) -> bytes:
        av = import_av(self.encoder)
        mapping = SampleMapping.of(volume, self.bits)
        if setting.lossless and (mapping.scaled or has_fractions(volume)):
            raise CodecError(
                f"{self.name}: lossless coding needs integer HU within {self.bits} bits; this "
                f"image spans {mapping.span} HU"
                + (" with fractions" if has_fractions(volume) else "")
            )
        planes = volume if volume.ndim == 3 else volume[None]
        height, width = self.frame_shape(*planes.shape[1:])
        try:
            context = self.open_encoder(av, width, height, setting)
            packets = []
            for index, plane in enumerate(planes):  # a slice at a time: no float64 volume
                frame = self.make_frame(av, self.pad_frame(mapping.to_samples(plane)))
                frame.pts = index
                packets += [bytes(packet) for packet in context.encode(frame)]
            packets += [bytes(packet) for packet in context.encode(None)]
        except av.FFmpegError as err:
            raise CodecError(f"{self.name}: encode failed: {err}") from err
        header = b"".join(
            (
                put_varint(volume.shape[0] if volume.ndim == 3 else 0),
                put_varint(volume.shape[-2]),
                put_varint(volume.shape[-1]),
                put_signed_varint(mapping.low),
                put_varint(mapping.span),
            )
        )
        return header + b"".join(packets)

    def decode(self, data: bytes, setting: CodecSetting, shape: tuple[int, ...]) -> np.ndarray:
        av = import_av(self.decoder)
        what = f"{self.name} stream"
        reader = ByteReader(data, what)
        slices, rows, cols = reader.varint(), reader.varint(), reader.varint()
        mapping = SampleMapping(reader.signed_varint(), reader.varint(), self.bits)
        found = (slices, rows, cols) if slices else (rows, cols)
        if found != tuple(shape):
            raise InputError(f"{what}: the header says shape {found}, expected {tuple(shape)}")
        elementary = bytes(reader.rest())
        try:
            context = av.CodecContext.create(self.decoder, "r")
            planes = []
            for packet in [*self.packets_for_decoder(av, context, elementary), None]:
                planes += [self.frame_samples(frame) for frame in context.decode(packet)]
        except av.FFmpegError as err:
            raise CodecError(f"{self.name}: decode failed: {err}") from err
        if len(planes) != max(slices, 1):
            raise InputError(
                f"{what}: decodes to {len(planes)} frames, the header says {max(slices, 1)} "
                "(truncated or corrupted)"
            )
        samples = np.stack(planes)
        padded = self.frame_shape(rows, cols)
        if samples.shape[1:] != padded:
            raise InputError(
                f"{what}: frames of {samples.shape[1:]}, the header says {padded} (corrupted)"
            )
        decoded = mapping.to_hu(samples[:, :rows, :cols])
        return decoded if slices else decoded[0]
