"""The neural codec's file: the volinr container's magic, format version 2, a binary header.

At 0.05 bits per voxel a 512x512 slice is about 1.6 kB, so every field is as small as it can
be and there is no JSON. Byte layout (integers little-endian; "varint" is unsigned LEB128)::

    offset  size  field
    0          8  magic b"VOLINR\\x00C" (volinr.container.MAGIC)
    8          2  uint16 format version (2)
    10       1-5  varint header length H
    .        1-5  varint payload length P
    .          H  header (below)
    .          P  payload: one range-coded stream (constriction's RangeEncoder words, uint32
                  little-endian, trailing zero bytes dropped: constriction's RangeDecoder
                  reads words past the end of its data as zeros, so the reader only pads
                  the last word)
    .          4  CRC-32 (zlib) of every byte before it

Header::

    1 byte   flags: bit 0 = 3D, bit 1 = constant image, bit 2 = coarser context,
             bit 3 = learned upsampling, bit 4 = GELU (else ReLU), bit 5 = synthesis
             stabiliser, bit 6 = per-level upsampling filters, bit 7 = an extension byte
             follows the synthesis widths
    1 byte   output dtype code (OUTPUT_DTYPES)
    varints  shape, one per axis
    2 x f32  value range: min, max of the input (the normalisation is (v - min) / (max - min))
    -- absent for a constant image: --
    6 bytes  levels, context_size, arm_layers, arm_width, residual_channels, residual_layers
    1 + n    number of synthesis 1x1 hidden layers, then their widths
    1 byte   -- only with flag bit 7: -- extension: bits 0-3 = how many coarser grids the
             context reads (1 .. MAX_LEVELS - 1; more than 1 needs the coarser context),
             bit 4 = the entropy model's linear stabiliser, bits 5-7 = 0 (reserved);
             written only where it differs from the default (1), so that a file has one form
             and the files written before it read as before
    per coded tensor, in the model's order: 2 bytes = exponent e (5 bits, step 2^-e),
             scale index (6 bits), k (4 bits, integers within +-(2^k - 1); 0 = all zero)
    varint   half-width A of the latent symbols (d = y - round(mu) in [-A, A])

The payload holds the coded tensors (in header order) and then the latents (coarsest grid
first, each grid in wavefront order). A CRC-32 rather than the version-1 sha256: it catches
every error burst up to 32 bits and any other damage with probability 1 - 2^-32, which is
what a checksum of a compressed file is for (accidental damage, not tampering), at 4 bytes
instead of 32 (2% of a 1.6 kB file). Every field is checked before use, so a crafted file
that passes the CRC is still refused, not trusted.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from volinr.container import MAGIC
from volinr.container import NEURAL_CODEC_VERSION as FORMAT_VERSION
from volinr.errors import InputError
from volinr.neural_codec.laplace import MAX_LATENT_HALF_WIDTH, PARAMETER_LOG_SCALE_STEPS
from volinr.neural_codec.parameter_coding import MAX_EXPONENT, MAX_WIDTH_BITS
from volinr.neural_codec.settings import MAX_CONTEXT_SIZE, MAX_LAYERS, MAX_LEVELS, MAX_WIDTH

OUTPUT_DTYPES = ("float32", "int16", "uint16", "int32", "uint8", "int8", "uint32")
CHECKSUM_BYTES = 4
MAX_AXIS = 1 << 16  # longest axis a header may declare
MAX_VOXELS = 1 << 27  # and most voxels (a 512x512x463 CT has 2^26.9): bounds what a file
# can make the decoder allocate
MAX_LENGTH = 1 << 34  # largest header or payload length field (5 varint bytes)
_PREFIX = struct.Struct("<8sH")
_RANGE = struct.Struct("<2f")
(
    _FLAG_3D,
    _FLAG_CONSTANT,
    _FLAG_COARSER,
    _FLAG_LEARNED,
    _FLAG_GELU,
    _FLAG_STABILISER,
    _FLAG_PER_LEVEL,
    _FLAG_EXTENSION,
) = (1 << i for i in range(8))
_EXTENSION_LEVELS_MASK = 0x0F
_EXTENSION_ARM_STABILISER = 0x10


@dataclass(frozen=True)
class Architecture:
    levels: int
    context_size: int
    arm_layers: int
    arm_width: int
    residual_channels: int
    residual_layers: int
    synthesis_widths: tuple[int, ...]
    context_coarser: bool
    learned_upsampling: bool
    activation: str
    synthesis_stabiliser: bool = False
    upsampling_per_level: bool = False
    context_coarser_levels: int = 1
    arm_stabiliser: bool = False


@dataclass(frozen=True)
class TensorCoding:
    exponent: int
    scale_index: int
    width_bits: int  # integers within +-(2^width_bits - 1)

    @property
    def half_width(self) -> int:
        return (1 << self.width_bits) - 1


@dataclass(frozen=True)
class Header:
    shape: tuple[int, ...]
    output_dtype: str
    value_range: tuple[float, float]  # float32 values
    architecture: Architecture | None  # None: a constant image
    tensors: tuple[TensorCoding, ...] = ()
    latent_half_width: int = 0


# --- varints -------------------------------------------------------------------------------


def write_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varint of a negative value {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes, source: str, what: str):
        self.data, self.position, self.source, self.what = data, 0, source, what

    def fail(self, problem: str) -> InputError:
        return InputError(f"{self.source}: {self.what}: {problem}")

    def take(self, count: int) -> bytes:
        if self.position + count > len(self.data):
            raise self.fail(f"truncated: it ends after {len(self.data)} bytes, inside a field")
        chunk = self.data[self.position : self.position + count]
        self.position += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self, limit: int) -> int:
        value, shift = 0, 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 35:
                raise self.fail("a length field is longer than 5 bytes")
        if value > limit:
            raise self.fail(f"a field holds {value}, above its limit {limit}")
        return value


# --- header --------------------------------------------------------------------------------


def pack_header(header: Header) -> bytes:
    a = header.architecture
    flags = (_FLAG_3D if len(header.shape) == 3 else 0) | (_FLAG_CONSTANT if a is None else 0)
    if a is not None:
        flags |= _FLAG_COARSER if a.context_coarser else 0
        flags |= _FLAG_LEARNED if a.learned_upsampling else 0
        flags |= _FLAG_GELU if a.activation == "gelu" else 0
        flags |= _FLAG_STABILISER if a.synthesis_stabiliser else 0
        flags |= _FLAG_PER_LEVEL if a.upsampling_per_level else 0
        extension = a.context_coarser_levels if a.context_coarser else 1
        extension |= _EXTENSION_ARM_STABILISER if a.arm_stabiliser else 0
        flags |= _FLAG_EXTENSION if extension != 1 else 0
    out = bytearray([flags, OUTPUT_DTYPES.index(header.output_dtype)])
    for n in header.shape:
        out += write_varint(n)
    out += _RANGE.pack(*header.value_range)
    if a is None:
        return bytes(out)
    out += bytes([a.levels, a.context_size, a.arm_layers, a.arm_width])
    out += bytes([a.residual_channels, a.residual_layers, len(a.synthesis_widths)])
    out += bytes(a.synthesis_widths)
    if flags & _FLAG_EXTENSION:
        out += bytes([extension])
    for t in header.tensors:
        packed = t.exponent | t.scale_index << 5 | t.width_bits << 11
        out += packed.to_bytes(2, "little")
    out += write_varint(header.latent_half_width)
    return bytes(out)


def unpack_header(data: bytes, source: str, tensor_count) -> Header:
    """Parse and check a header; ``tensor_count(architecture, ndim)`` says how many coded
    tensors that architecture has."""
    r = _Reader(data, source, "header")
    flags = r.byte()  # all eight bits have a meaning
    dtype_code = r.byte()
    if dtype_code >= len(OUTPUT_DTYPES):
        raise r.fail(f"unknown output dtype code {dtype_code}")
    ndim = 3 if flags & _FLAG_3D else 2
    shape = tuple(r.varint(MAX_AXIS) for _ in range(ndim))
    if min(shape) < 1:
        raise r.fail(f"an empty shape {shape}")
    voxels = 1
    for n in shape:
        voxels *= n
    if voxels > MAX_VOXELS:
        raise r.fail(f"shape {shape} has more than {MAX_VOXELS} voxels")
    low, high = _RANGE.unpack(r.take(_RANGE.size))
    if not (abs(low) < float("inf") and abs(high) < float("inf") and low <= high):
        raise r.fail(f"bad value range [{low}, {high}]")
    if flags & _FLAG_CONSTANT:
        if flags & ~(_FLAG_3D | _FLAG_CONSTANT):
            raise r.fail(f"a constant image with architecture flags {flags:#04x}")
        if low != high or r.position != len(data):
            raise r.fail("a constant image with a value range or trailing fields")
        return Header(shape, OUTPUT_DTYPES[dtype_code], (low, high), None)
    if low == high:
        raise r.fail("an empty value range for a non-constant image")
    if flags & _FLAG_PER_LEVEL and not flags & _FLAG_LEARNED:
        raise r.fail("per-level upsampling filters without learned upsampling")
    levels, context_size, arm_layers, arm_width = r.take(4)
    residual_channels, residual_layers, hidden = r.take(3)
    widths = tuple(r.take(hidden))
    extension = r.byte() if flags & _FLAG_EXTENSION else 1
    if extension & ~(_EXTENSION_LEVELS_MASK | _EXTENSION_ARM_STABILISER):
        raise r.fail(f"unknown extension flags {extension:#04x}")
    coarser_levels = extension & _EXTENSION_LEVELS_MASK
    if flags & _FLAG_EXTENSION and extension == 1:
        raise r.fail("an extension byte that changes nothing")
    if coarser_levels > 1 and not flags & _FLAG_COARSER:
        raise r.fail("several coarser grids read without the coarser context")
    limits = [
        ("levels", levels, 1, MAX_LEVELS),
        ("context size", context_size, 0, MAX_CONTEXT_SIZE),
        ("entropy model layers", arm_layers, 0, MAX_LAYERS),
        ("entropy model width", arm_width, 1, MAX_WIDTH),
        ("residual channels", residual_channels, 1, MAX_WIDTH),
        ("residual layers", residual_layers, 0, MAX_LAYERS),
        ("synthesis layers", hidden, 1, MAX_LAYERS),
    ] + [("synthesis width", w, 1, MAX_WIDTH) for w in widths]
    limits.append(("coarser grids read", coarser_levels, 1, MAX_LEVELS - 1))
    for what, value, low_limit, high_limit in limits:
        if not low_limit <= value <= high_limit:
            raise r.fail(f"{what} {value} outside [{low_limit}, {high_limit}]")
    architecture = Architecture(
        levels,
        context_size,
        arm_layers,
        arm_width,
        residual_channels,
        residual_layers,
        widths,
        bool(flags & _FLAG_COARSER),
        bool(flags & _FLAG_LEARNED),
        "gelu" if flags & _FLAG_GELU else "relu",
        bool(flags & _FLAG_STABILISER),
        bool(flags & _FLAG_PER_LEVEL),
        coarser_levels,
        bool(extension & _EXTENSION_ARM_STABILISER),
    )
    tensors = []
    for _ in range(tensor_count(architecture, ndim)):
        packed = int.from_bytes(r.take(2), "little")
        coding = TensorCoding(packed & 0x1F, packed >> 5 & 0x3F, packed >> 11 & 0xF)
        if packed >> 15 or coding.exponent > MAX_EXPONENT:
            raise r.fail(f"a tensor's step 2^-{coding.exponent} is outside the format")
        if coding.scale_index >= PARAMETER_LOG_SCALE_STEPS or coding.width_bits > MAX_WIDTH_BITS:
            raise r.fail("a tensor's coding model is outside the format")
        tensors.append(coding)
    latent_half_width = r.varint(MAX_LATENT_HALF_WIDTH)
    if latent_half_width < 1:
        raise r.fail("a latent symbol range of 0")
    if r.position != len(data):
        raise r.fail(f"{len(data) - r.position} unread bytes at its end")
    dtype = OUTPUT_DTYPES[dtype_code]
    return Header(shape, dtype, (low, high), architecture, tuple(tensors), latent_half_width)


# --- framing -------------------------------------------------------------------------------


def frame(header: bytes, payload: bytes) -> bytes:
    body = (
        _PREFIX.pack(MAGIC, FORMAT_VERSION)
        + write_varint(len(header))
        + write_varint(len(payload))
        + header
        + payload
    )
    return body + zlib.crc32(body).to_bytes(CHECKSUM_BYTES, "little")


def unframe(data: bytes, source: str) -> tuple[bytes, bytes]:
    """(header, payload) after checking magic, version, lengths and the CRC-32."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX.size:
        if MAGIC.startswith(data[:8]):
            raise InputError(f"{source}: truncated: {len(data)} bytes, not even a prefix")
        raise InputError(f"{source}: not a volinr container (bad magic)")
    magic, version = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise InputError(f"{source}: not a volinr container (bad magic)")
    if version != FORMAT_VERSION:
        raise InputError(
            f"{source}: container format version {version}; this reader reads the neural "
            f"codec's version {FORMAT_VERSION}"
        )
    r = _Reader(data, source, "container")
    r.position = _PREFIX.size
    header_length = r.varint(MAX_LENGTH)
    payload_length = r.varint(MAX_LENGTH)
    expected = r.position + header_length + payload_length + CHECKSUM_BYTES
    intact = (
        zlib.crc32(data[:-CHECKSUM_BYTES]).to_bytes(CHECKSUM_BYTES, "little")
        == data[-CHECKSUM_BYTES:]
    )
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise InputError(
            f"{source}: {problem}: {len(data)} bytes where its lengths say {expected}"
            + ("" if intact else " (or its length fields are damaged)")
        )
    if not intact:
        raise InputError(f"{source}: checksum mismatch: the file is corrupted")
    start = r.position
    return data[start : start + header_length], data[start + header_length : -CHECKSUM_BYTES]


def words_to_payload(words: np.ndarray) -> bytes:
    return words.astype("<u4").tobytes().rstrip(b"\x00")


def payload_to_words(payload: bytes) -> np.ndarray:
    padded = payload + b"\x00" * (-len(payload) % 4)
    return np.frombuffer(padded, dtype="<u4").astype(np.uint32)
