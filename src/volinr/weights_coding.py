"""Network weights as bytes: float32, float16 or K-bit uniform quantization per tensor,
bit-packed, then compressed by zstd or LZMA (see ``volinr.siren_container`` for the layout).
"""

from __future__ import annotations

import lzma
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import imagecodecs
import numpy as np
import torch

from volinr.errors import InputError

QUANTIZATIONS = ("float32", "float16", "uniform")


CODERS = ("zstd", "lzma", "none")


MIN_UNIFORM_BITS = 2


MAX_UNIFORM_BITS = 16


ZSTD_LEVEL = 19


LZMA_PRESET = 9 | lzma.PRESET_EXTREME


LZMA_MIN_DICT_BYTES = 4096  # liblzma's smallest dictionary


# A bound on what a header may make the decoder allocate: 256 MiB of float32, some hundred
# times the widest SIREN the workflow fits.
MAX_WEIGHTS = 1 << 26


FLOAT16_MAX = float(np.finfo(np.float16).max)


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


def tensor_bytes(count: int, kind: str, bits: int | None, constant: bool) -> int:
    """Bytes one tensor takes in the uncompressed payload."""
    if kind == "float32":
        return 4 * count
    if kind == "float16":
        return 2 * count
    return 0 if constant else packed_bytes(count, bits)


def encode_tensor(
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


def decode_tensor(
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


def float32_arrays(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
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
    for name, values in float32_arrays(state_dict).items():
        data, lo, hi = encode_tensor(values, kind, bits, name)
        quantized[name] = decode_tensor(data, values.shape, kind, bits, lo, hi)
    return quantized


def compress_payload(raw: bytes, coder: str) -> bytes:
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


def decompress_payload(payload: bytes, coder: str, raw_bytes: int, source: str) -> bytes:
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
