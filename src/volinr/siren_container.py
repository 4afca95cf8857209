"""A fitted SIREN as a container file (format version 1): everything a decoder needs, in real
bytes.

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

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from volinr.checkpoints import architecture_shapes
from volinr.container import frame_container, unframe
from volinr.decode_recipe import check_decoding
from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.weights_coding import (
    CODERS,
    MAX_UNIFORM_BITS,
    MAX_WEIGHTS,
    MIN_UNIFORM_BITS,
    QUANTIZATIONS,
    compress_payload,
    decode_tensor,
    decompress_payload,
    encode_tensor,
    float32_arrays,
    parse_quantization,
    tensor_bytes,
)

log = logging.getLogger(__name__)


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
    arrays = float32_arrays(state_dict)
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
        data, tensor_min, tensor_max = encode_tensor(arrays[name], kind, bits, name)
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
    payload = compress_payload(b"".join(chunks), coder)
    return frame_container(header_bytes, payload)


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
        # sizes are ints, not bools (true == 1 in Python)
        sizes = isinstance(shape, list) and all(type(n) is int for n in shape)
        if not sizes or tuple(shape) != shapes[name]:
            raise InputError(
                f"{source}: tensor {name} has shape {shape}, the architecture's is "
                f"{list(shapes[name])}"
            )
        lo, hi = entry.get("min"), entry.get("max")
        if not (_is_number(lo) and _is_number(hi) and lo <= hi):
            raise InputError(f"{source}: tensor {name} has a bad range [{lo!r}, {hi!r}]")
        expected_length = tensor_bytes(math.prod(shape), kind, bits, hi == lo)
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


def decode_container(
    data: bytes, source: str = "container"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(dequantized float32 state_dict, header); any failure is an InputError naming
    ``source``."""
    header_bytes, payload = unframe(data, source)
    header = _parse_header(header_bytes, source)
    kind, bits, shapes = _check_header(header, source)
    tensors = header["tensors"]
    raw_bytes = sum(entry["length_bytes"] for entry in tensors)
    raw = decompress_payload(payload, header["coder"], raw_bytes, source)
    decoded = {}
    for entry in tensors:
        start = entry["offset_bytes"]
        decoded[entry["name"]] = decode_tensor(
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
    path_or_bytes: str | os.PathLike | bytes,
    device: torch.device | str = "cpu",
    source: str = "container",
) -> tuple[Siren, dict[str, Any]]:
    """The SIREN (eval mode, on ``device``) with the container's dequantized weights, and the
    header; errors name ``source`` (bytes) or the path."""
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        state_dict, header = decode_container(bytes(path_or_bytes), source)
    else:
        state_dict, header = read_container(path_or_bytes)
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = Siren(**header["architecture"])
    model.load_state_dict(state_dict, assign=True)
    return model.to(device).eval(), header
