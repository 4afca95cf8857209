"""Byte-level pieces of the codec streams: compact integer fields and slice framing."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from volinr.errors import InputError


def put_varint(value: int) -> bytes:
    """An unsigned integer as LEB128: 7 bits a byte, the high bit set on all but the last."""
    if value < 0:
        raise ValueError(f"varints are unsigned, got {value}")
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def put_signed_varint(value: int) -> bytes:
    """A signed integer zigzag-mapped (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...) then LEB128."""
    return put_varint(2 * value if value >= 0 else -2 * value - 1)


class ByteReader:
    """Reads fields from the front of a stream; running out is an InputError naming ``what``."""

    MAX_VARINT_BYTES = 10  # 64 bits

    def __init__(self, data: bytes | memoryview, what: str):
        self.view = memoryview(data).cast("B")
        self.position = 0
        self.what = what

    def varint(self) -> int:
        value = 0
        for index in range(self.MAX_VARINT_BYTES):
            if self.position >= len(self.view):
                raise InputError(f"{self.what}: truncated header ({len(self.view)} bytes)")
            byte = self.view[self.position]
            self.position += 1
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                return value
        raise InputError(f"{self.what}: corrupted header (an integer field runs on)")

    def signed_varint(self) -> int:
        value = self.varint()
        return value // 2 if value % 2 == 0 else -(value + 1) // 2

    def take(self, count: int) -> memoryview:
        if count < 0 or self.position + count > len(self.view):
            raise InputError(
                f"{self.what}: header promises {count} more bytes at offset {self.position}, "
                f"the stream has {len(self.view)} (truncated or corrupted)"
            )
        chunk = self.view[self.position : self.position + count]
        self.position += count
        return chunk

    def rest(self) -> memoryview:
        return self.take(len(self.view) - self.position)


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
