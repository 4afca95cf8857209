"""A compressed file holding a fitted SIREN: everything a decoder needs, in real bytes.

In the manner of Strümpler et al. (2022) and COIN++, a compression ratio is the size of the
input over the size of this file, not a parameter count times 32 bits: the architecture, the
grid, the intensity window, the quantisation and any reconstruction recipe all count.

Byte layout (all integers little-endian)::

    offset          size  field
    0                  8  magic b"VOLINR\\x00C"
    8                  2  uint16 format version (1)
    10                 4  uint32 header length H
    14                 H  header: UTF-8 JSON, compact, sorted keys
    14+H               8  uint64 payload length P
    22+H               P  payload: the coded tensors, compressed by the header's coder
    22+H+P            32  sha256 of bytes 0 .. 22+H+P (everything before it)

The header::

    {"architecture": Siren.config, "grid_shape": [...], "grid_extent": [...],
     "value_range": [lo, hi], "quantization": {"kind": "float32"|"float16"|"uniform",
     "bits": k | null}, "coder": "zstd"|"lzma"|"none",
     "tensors": [{"name", "shape", "offset_bytes", "length_bytes", "min", "max"}, ...],
     "extra": {...}}

``tensors`` lists the state_dict in sorted-name order; offsets and lengths are in the
*uncompressed* payload, where the tensors lie back to back, each starting on a byte:

- float32: little-endian float32 values (exact);
- float16: little-endian float16 values;
- uniform k-bit (2 <= k <= 16): code = round((w - min) / (max - min) * (2^k - 1)), packed
  densely, k bits per code, least significant bit first (12-bit codes take 1.5 bytes);
  w' = min + code * (max - min) / (2^k - 1), so |w - w'| <= (max - min) / (2^k - 1) / 2.
  A constant tensor (max == min) stores no codes.

Coders: zstd level 19 (imagecodecs), raw LZMA2 at preset 9|extreme (stdlib lzma, no .xz
framing since the sha256 already guards the bytes), or none. Reading checks the magic, the
version and the lengths of the fixed-size fields, then the sha256, and only then parses the
header; every failure is an ``InputError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import torch

from volinr.checkpoints import architecture_shapes
from volinr.decode_recipe import check_decoding
from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.outputs import atomic_path

log = logging.getLogger(__name__)

MAGIC = b"VOLINR\x00C"
FORMAT_VERSION = 1
QUANTIZATIONS = ("float32", "float16", "uniform")
CODERS = ("zstd", "lzma", "none")
MIN_UNIFORM_BITS = 2
MAX_UNIFORM_BITS = 16

ZSTD_LEVEL = 19
LZMA_PRESET = 9 | lzma.PRESET_EXTREME
LZMA_MIN_DICT_BYTES = 4096  # liblzma's smallest dictionary

_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_PAYLOAD_LENGTH = struct.Struct("<Q")
CHECKSUM_BYTES = 32
# A bound on what a header may make the decoder allocate: 256 MiB of float32, some hundred
# times the widest SIREN the workflow fits.
MAX_WEIGHTS = 1 << 26
FLOAT16_MAX = float(np.finfo(np.float16).max)


# --- quantisation ----------------------------------------------------------------------------


def parse_quantization(name: str) -> tuple[str, int | None]:
    """(kind, bits) of a quantization name: float32, float16, or q<bits> -> ("uniform", bits)."""
    if name in ("float32", "float16"):
        return name, None
    match = re.fullmatch(r"q(\d{1,2})", str(name))
    if match:
        bits = int(match.group(1))
        if MIN_UNIFORM_BITS <= bits <= MAX_UNIFORM_BITS:
            return "uniform", bits
    raise ValueError(
        f"unknown quantization {name!r}: expected float32, float16 or q<bits> with "
        f"{MIN_UNIFORM_BITS} <= bits <= {MAX_UNIFORM_BITS} (e.g. q8)"
    )


def quantization_name(kind: str, bits: int | None) -> str:
    """The inverse of ``parse_quantization``: ("uniform", 8) -> "q8"."""
    return f"q{bits}" if kind == "uniform" else kind


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned ``codes`` (each < 2**bits), ``bits`` bits each, least significant bit first;
    the last byte is zero-padded. 12-bit codes take 1.5 bytes each."""
    if not 1 <= bits <= 32:
        raise ValueError(f"cannot pack {bits}-bit codes: 1 to 32 bits are supported")
    codes = np.asarray(codes).reshape(-1)
    if codes.size and (codes.min() < 0 or int(codes.max()) >= 1 << bits):
        raise ValueError(f"codes out of range for {bits} bits")
    codes = codes.astype(np.uint32)
    shifts = np.arange(bits, dtype=np.uint32)
    bit_matrix = ((codes[:, None] >> shifts) & np.uint32(1)).astype(np.uint8)  # (count, bits)
    return np.packbits(bit_matrix.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """The first ``count`` codes of ``bits`` bits each from ``data`` (see ``pack_bits``)."""
    if not 1 <= bits <= 32:
        raise ValueError(f"cannot unpack {bits}-bit codes: 1 to 32 bits are supported")
    needed_bytes = packed_bytes(count, bits)
    if len(data) < needed_bytes:
        raise ValueError(f"{count} codes of {bits} bits need {needed_bytes} bytes, got {len(data)}")
    stream = np.unpackbits(
        np.frombuffer(data, np.uint8, count=needed_bytes), count=count * bits, bitorder="little"
    )
    weights = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))
    return (stream.reshape(count, bits).astype(np.uint64) @ weights).astype(np.uint32)


def packed_bytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def _tensor_bytes(count: int, kind: str, bits: int | None, constant: bool) -> int:
    """Bytes one tensor takes in the uncompressed payload."""
    if kind == "float32":
        return 4 * count
    if kind == "float16":
        return 2 * count
    return 0 if constant else packed_bytes(count, bits)


def _encode_tensor(
    values: np.ndarray, kind: str, bits: int | None, name: str
) -> tuple[bytes, float, float]:
    """(payload bytes, min, max) of one float32 tensor's values."""
    values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"tensor {name} holds NaN or Inf values")
    # Python floats: exact copies of the float32 extremes, and exact through JSON (repr).
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if kind == "float32":
        return values.astype("<f4").tobytes(), lo, hi
    if kind == "float16":
        if max(abs(lo), abs(hi)) > FLOAT16_MAX:
            raise ValueError(f"tensor {name} exceeds the float16 range (|w| > {FLOAT16_MAX})")
        return values.astype("<f2").tobytes(), lo, hi
    if hi == lo:
        return b"", lo, hi
    levels = (1 << bits) - 1
    scaled = (values.astype(np.float64) - lo) / (hi - lo) * levels
    codes = np.clip(np.rint(scaled), 0, levels).astype(np.uint32)
    return pack_bits(codes, bits), lo, hi


def _decode_tensor(
    data: bytes, shape: Sequence[int], kind: str, bits: int | None, lo: float, hi: float
) -> torch.Tensor:
    """The float32 tensor a decoder sees; shared by the writer's and the reader's path."""
    count = math.prod(shape)
    if kind == "float32":
        values = np.frombuffer(data, "<f4", count=count).astype(np.float32)
    elif kind == "float16":
        values = np.frombuffer(data, "<f2", count=count).astype(np.float32)
    elif hi == lo:
        values = np.full(count, lo, np.float32)
    else:
        codes = unpack_bits(data, bits, count)
        step = (hi - lo) / ((1 << bits) - 1)
        values = (lo + codes.astype(np.float64) * step).astype(np.float32)
    return torch.from_numpy(values.reshape(tuple(shape)).copy())


def _float32_arrays(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, tensor in state_dict.items():
        if not torch.is_floating_point(tensor):
            raise ValueError(f"tensor {name} is {tensor.dtype}, not floating point")
        arrays[name] = tensor.detach().cpu().to(torch.float32).contiguous().numpy()
    return arrays


def quantize_state_dict(
    state_dict: Mapping[str, torch.Tensor], quantization: str
) -> dict[str, torch.Tensor]:
    """The float32 weights a decoder of a ``quantization`` container sees (bitwise equal to
    ``decode_container``'s); float32 gives exact copies."""
    kind, bits = parse_quantization(quantization)
    quantized = {}
    for name, values in _float32_arrays(state_dict).items():
        data, lo, hi = _encode_tensor(values, kind, bits, name)
        quantized[name] = _decode_tensor(data, values.shape, kind, bits, lo, hi)
    return quantized


# --- encoding --------------------------------------------------------------------------------


def _compress(raw: bytes, coder: str) -> bytes:
    if coder == "zstd":
        return bytes(imagecodecs.zstd_encode(raw, level=ZSTD_LEVEL))
    if coder == "lzma":
        return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters(len(raw), True))
    return raw


def _lzma_filters(raw_bytes: int, encoding: bool) -> list[dict[str, Any]]:
    # A dictionary larger than the payload finds no more matches, so cap it there: the same
    # bytes as preset 9e's 64 MiB dictionary without its ~670 MB of encoder tables.
    lzma2: dict[str, Any] = {
        "id": lzma.FILTER_LZMA2,
        "dict_size": max(LZMA_MIN_DICT_BYTES, raw_bytes),
    }
    if encoding:
        lzma2["preset"] = LZMA_PRESET
    return [lzma2]


def _architecture_shapes(
    architecture: Mapping[str, Any], max_tensors: int
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the state_dict of ``Siren(**architecture)``, built without memory, nor
    time: a claim of more than ``max_tensors`` tensors is a ValueError."""
    return architecture_shapes(Siren, dict(architecture), max_tensors)


def encode_container(
    state_dict: Mapping[str, torch.Tensor],
    architecture: Mapping[str, Any],
    grid_shape: Sequence[int],
    grid_extent: Sequence[float],
    value_range: Sequence[float],
    quantization: str = "float32",
    coder: str = "zstd",
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The container's bytes (deterministic for equal inputs); see the module docstring."""
    kind, bits = parse_quantization(quantization)
    if coder not in CODERS:
        raise ValueError(f"unknown coder {coder!r}: expected one of {', '.join(CODERS)}")
    architecture = json.loads(json.dumps(dict(architecture)))  # plain JSON types
    arrays = _float32_arrays(state_dict)
    try:
        expected_shapes = _architecture_shapes(architecture, len(arrays))
    except ValueError as err:
        raise ValueError(f"the state_dict does not match the architecture ({err})") from None
    actual_shapes = {name: tuple(values.shape) for name, values in arrays.items()}
    if actual_shapes != expected_shapes:
        raise ValueError(
            f"the state_dict does not match the architecture {architecture}: "
            f"{actual_shapes} != {expected_shapes}"
        )
    lo, hi = (float(v) for v in value_range)
    grid_shape = [int(n) for n in grid_shape]
    grid_extent = [float(e) for e in grid_extent]
    # never write a file the decoder would refuse (InputError: the inputs are at fault)
    check_decoding(
        "the container to write", grid_shape, grid_extent, [lo, hi], architecture, dict(extra or {})
    )

    tensors, chunks, offset_bytes = [], [], 0
    for name in sorted(arrays):
        data, tensor_min, tensor_max = _encode_tensor(arrays[name], kind, bits, name)
        tensors.append(
            {
                "name": name,
                "shape": list(arrays[name].shape),
                "offset_bytes": offset_bytes,
                "length_bytes": len(data),
                "min": tensor_min,
                "max": tensor_max,
            }
        )
        chunks.append(data)
        offset_bytes += len(data)
    header = {
        "architecture": architecture,
        "grid_shape": grid_shape,
        "grid_extent": grid_extent,
        "value_range": [lo, hi],
        "quantization": {"kind": kind, "bits": bits},
        "coder": coder,
        "tensors": tensors,
        "extra": dict(extra or {}),
    }
    try:
        header_bytes = json.dumps(
            header, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ValueError(f"the container header is not plain JSON ({err})") from None
    payload = _compress(b"".join(chunks), coder)
    return frame_container(header_bytes, payload)


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


def write_container(path: str | os.PathLike, data: bytes) -> int:
    """Write ``data`` to ``path`` atomically; returns the bytes written."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    log.info("wrote %s (%d bytes)", path, len(data))
    return len(data)


# --- decoding --------------------------------------------------------------------------------


def _unframe(data: bytes, source: str) -> tuple[bytes, bytes]:
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
        intact = size > CHECKSUM_BYTES and _checksum_matches(data)
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
        if size > CHECKSUM_BYTES and _checksum_matches(data):
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
    if not _checksum_matches(data):
        raise InputError(f"{source}: checksum mismatch: the file is corrupted")
    return bytes(data[_PREFIX.size : _PREFIX.size + header_length]), bytes(
        data[payload_start:-CHECKSUM_BYTES]
    )


def _checksum_matches(data: bytes) -> bool:
    return hashlib.sha256(data[:-CHECKSUM_BYTES]).digest() == data[-CHECKSUM_BYTES:]


def _parse_header(header_bytes: bytes, source: str) -> dict[str, Any]:
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{source}: the header is not UTF-8 JSON ({err})") from None
    if not isinstance(header, dict):
        raise InputError(f"{source}: the header is not a JSON object")
    missing = {
        "architecture",
        "grid_shape",
        "grid_extent",
        "value_range",
        "quantization",
        "coder",
        "tensors",
    } - set(header)
    if missing:
        raise InputError(f"{source}: the header lacks {', '.join(sorted(missing))}")
    header.setdefault("extra", {})
    return header


def _check_header(header: dict[str, Any], source: str) -> tuple[str, int | None, dict]:
    """(kind, bits, architecture shapes) after checking the header's fields agree."""
    quantization = header["quantization"]
    if not isinstance(quantization, dict):
        raise InputError(f"{source}: bad quantization {quantization!r}")
    kind, bits = quantization.get("kind"), quantization.get("bits")
    if kind not in QUANTIZATIONS:
        raise InputError(f"{source}: unknown quantization kind {kind!r}")
    if kind == "uniform":
        if type(bits) is not int or not MIN_UNIFORM_BITS <= bits <= MAX_UNIFORM_BITS:
            raise InputError(f"{source}: uniform quantization with {bits!r} bits")
    else:
        bits = None
    if header["coder"] not in CODERS:
        raise InputError(f"{source}: unknown coder {header['coder']!r}")
    tensors = header["tensors"]
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise InputError(f"{source}: tensors is not a list of objects")
    architecture = header["architecture"]
    # grid, intensity range, architecture and upsampling recipe, against volinr.limits
    check_decoding(
        source,
        header["grid_shape"],
        header["grid_extent"],
        header["value_range"],
        architecture,
        header["extra"],
    )
    try:
        # room for a few more than listed, so that a missing tensor is named below
        shapes = _architecture_shapes(architecture, len(tensors) + 16)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{source}: cannot build a SIREN from {architecture} ({err})") from None
    names = [t.get("name") for t in tensors]
    if names != sorted(shapes):
        raise InputError(
            f"{source}: tensors {names} do not match the architecture's {sorted(shapes)}"
        )
    weights = sum(math.prod(shape) for shape in shapes.values())
    if weights > MAX_WEIGHTS:
        # decoding allocates every weight, and a constant tensor stores none of its bytes
        raise InputError(
            f"{source}: the architecture {architecture} has {weights} weights, more than the "
            f"{MAX_WEIGHTS} a container may hold"
        )
    offset_bytes = 0
    for entry in tensors:
        name = entry["name"]
        shape = entry.get("shape")
        if not isinstance(shape, list) or tuple(shape) != shapes[name]:
            raise InputError(
                f"{source}: tensor {name} has shape {shape}, the architecture's is "
                f"{list(shapes[name])}"
            )
        lo, hi = entry.get("min"), entry.get("max")
        if not (_is_number(lo) and _is_number(hi) and lo <= hi):
            raise InputError(f"{source}: tensor {name} has a bad range [{lo!r}, {hi!r}]")
        expected_length = _tensor_bytes(math.prod(shape), kind, bits, hi == lo)
        if entry.get("offset_bytes") != offset_bytes or entry.get("length_bytes") != (
            expected_length
        ):
            raise InputError(
                f"{source}: tensor {name} at offset {entry.get('offset_bytes')!r}, "
                f"{entry.get('length_bytes')!r} bytes; expected offset {offset_bytes}, "
                f"{expected_length} bytes"
            )
        offset_bytes += expected_length
    return kind, bits, shapes


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _decompress(payload: bytes, coder: str, raw_bytes: int, source: str) -> bytes:
    """The uncompressed payload, never more than ``raw_bytes`` + 1 bytes of output."""
    try:
        if coder == "zstd":
            # out= caps the output: a frame claiming more than the tensors need fails
            raw = bytes(imagecodecs.zstd_decode(payload, out=raw_bytes))
        elif coder == "lzma":
            decompressor = lzma.LZMADecompressor(
                format=lzma.FORMAT_RAW, filters=_lzma_filters(raw_bytes, False)
            )
            raw = decompressor.decompress(payload, max_length=raw_bytes + 1)
            if not decompressor.eof or decompressor.unused_data:
                raise ValueError("the LZMA2 stream does not end with the payload")
        else:
            raw = payload
    except (imagecodecs.ZstdError, lzma.LZMAError, ValueError) as err:
        raise InputError(
            f"{source}: the payload does not decompress with {coder} ({err})"
        ) from None
    if len(raw) != raw_bytes:
        raise InputError(
            f"{source}: payload size mismatch: {len(raw)} bytes decompressed, the tensors "
            f"need {raw_bytes}"
        )
    return raw


def decode_container(
    data: bytes, source: str = "container"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(dequantized float32 state_dict, header); any failure is an InputError naming
    ``source``."""
    header_bytes, payload = _unframe(data, source)
    header = _parse_header(header_bytes, source)
    kind, bits, shapes = _check_header(header, source)
    tensors = header["tensors"]
    raw_bytes = sum(entry["length_bytes"] for entry in tensors)
    raw = _decompress(payload, header["coder"], raw_bytes, source)
    decoded = {}
    for entry in tensors:
        start = entry["offset_bytes"]
        decoded[entry["name"]] = _decode_tensor(
            raw[start : start + entry["length_bytes"]],
            entry["shape"],
            kind,
            bits,
            entry["min"],
            entry["max"],
        )
    # the model's own order, as model.state_dict() lists it
    return {name: decoded[name] for name in shapes}, header


def read_container(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``decode_container`` of the file at ``path``; errors name the path."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: container file not found") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the container ({err})") from None
    return decode_container(data, source=str(path))


def siren_from_container(
    path_or_bytes: str | os.PathLike | bytes, device: torch.device | str = "cpu"
) -> tuple[Siren, dict[str, Any]]:
    """The SIREN (eval mode, on ``device``) with the container's dequantized weights, and the
    header."""
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        state_dict, header = decode_container(bytes(path_or_bytes))
    else:
        state_dict, header = read_container(path_or_bytes)
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = Siren(**header["architecture"])
    model.load_state_dict(state_dict, assign=True)
    return model.to(device).eval(), header
