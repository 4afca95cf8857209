"""The file format every neural method of this benchmark writes: magic, format version,
lengths, header, payload and a trailing sha256, so a damaged, truncated or foreign file is
refused before anything is built from it. What the header and payload hold depends on the
format version: version 1 is a SIREN's weights (``volinr.siren_container``).

Byte layout (all integers little-endian)::

    offset          size  field
    0                  8  magic b"VOLINR\\x00C"
    8                  2  uint16 format version
    10                 4  uint32 header length H
    14                 H  header
    14+H               8  uint64 payload length P
    22+H               P  payload
    22+H+P            32  sha256 of bytes 0 .. 22+H+P (everything before it)

Reading checks the magic, the version and the lengths of the fixed-size fields, then the
sha256, and only then hands the header on; every failure is an ``InputError`` naming the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct

from volinr.errors import InputError
from volinr.outputs import atomic_path

log = logging.getLogger(__name__)


MAGIC = b"VOLINR\x00C"


FORMAT_VERSION = 1
NEURAL_CODEC_VERSION = 2  # volinr.neural_codec.bitstream lays that version out


_PREFIX = struct.Struct("<8sHI")  # magic, version, header length


_PAYLOAD_LENGTH = struct.Struct("<Q")


CHECKSUM_BYTES = 32


def frame_container(header_bytes: bytes, payload: bytes, version: int = FORMAT_VERSION) -> bytes:
    """Magic, version, lengths, header, payload and the trailing sha256, as documented above."""
    body = b"".join(
        [
            _PREFIX.pack(MAGIC, version, len(header_bytes)),
            header_bytes,
            _PAYLOAD_LENGTH.pack(len(payload)),
            payload,
        ]
    )
    return body + hashlib.sha256(body).digest()


def format_version(data: bytes) -> int | None:
    """The format version a volinr container's prefix names (1: a SIREN, 2: the neural
    codec), or None when the bytes do not start like one; nothing else is checked here."""
    if len(data) < _PREFIX.size or data[: len(MAGIC)] != MAGIC:
        return None
    return _PREFIX.unpack_from(data)[1]


def write_container(path: str | os.PathLike, data: bytes) -> int:
    """Write ``data`` to ``path`` atomically; returns the bytes written."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    log.info("wrote %s (%d bytes)", path, len(data))
    return len(data)


def unframe(data: bytes, source: str) -> tuple[bytes, bytes]:
    """(header bytes, payload) after checking magic, version, lengths and the sha256."""
    data = bytes(data)
    size = len(data)
    if size < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        # a short file that is a prefix of the magic is a truncated container, not a stranger
        if size < len(MAGIC) and MAGIC.startswith(bytes(data)):
            raise InputError(f"{source}: truncated: {size} bytes, expected at least {_PREFIX.size}")
        raise InputError(f"{source}: not a volinr container (bad magic)")
    if size < _PREFIX.size:
        raise InputError(f"{source}: truncated: {size} bytes, expected at least {_PREFIX.size}")
    _, version, header_length = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        # A later format may lay out the rest differently, so the version is read before the
        # checksum; but when the trailer does not verify, a flipped bit is as likely a cause.
        intact = size > CHECKSUM_BYTES and checksum_matches(data)
        maybe_corrupted = "" if intact else " (or the file is corrupted)"
        if version > FORMAT_VERSION:
            raise InputError(
                f"{source}: format version {version} is newer than this volinr reads "
                f"({FORMAT_VERSION}){maybe_corrupted}"
            )
        raise InputError(
            f"{source}: unsupported format version {version} (this volinr reads "
            f"{FORMAT_VERSION}){maybe_corrupted}"
        )

    # The checksum is the last 32 bytes whatever the length fields say: when it verifies, a
    # disagreement of sizes is not damage but a file written with wrong length fields.
    def lying_lengths() -> InputError | None:
        if size > CHECKSUM_BYTES and checksum_matches(data):
            return InputError(
                f"{source}: {size} bytes, but its length fields (header {header_length} bytes, "
                f"payload {payload_length}) say otherwise, and its checksum verifies: a "
                "malformed container, not a damaged one"
            )
        return None

    payload_start = _PREFIX.size + header_length + _PAYLOAD_LENGTH.size
    payload_length: int | str = "unread"
    if size < payload_start + CHECKSUM_BYTES:
        raise lying_lengths() or InputError(
            f"{source}: truncated: {size} bytes, expected at least "
            f"{payload_start + CHECKSUM_BYTES} (header of {header_length} bytes; or a corrupted "
            "length field)"
        )
    (payload_length,) = _PAYLOAD_LENGTH.unpack_from(data, payload_start - _PAYLOAD_LENGTH.size)
    expected_size = payload_start + payload_length + CHECKSUM_BYTES
    if size < expected_size:
        raise lying_lengths() or InputError(
            f"{source}: truncated: {size} bytes, expected {expected_size} (or a corrupted "
            "length field)"
        )
    if size > expected_size:
        raise lying_lengths() or InputError(
            f"{source}: {size} bytes, expected {expected_size}: trailing data after the "
            f"checksum, or a corrupted length field"
        )
    if not checksum_matches(data):
        raise InputError(f"{source}: checksum mismatch: the file is corrupted")
    return bytes(data[_PREFIX.size : _PREFIX.size + header_length]), bytes(
        data[payload_start:-CHECKSUM_BYTES]
    )


def checksum_matches(data: bytes) -> bool:
    return hashlib.sha256(data[:-CHECKSUM_BYTES]).digest() == data[-CHECKSUM_BYTES:]
