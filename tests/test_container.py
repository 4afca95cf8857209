import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from volinr.container import write_container
from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.siren_container import (
    decode_container,
    encode_container,
    read_container,
    siren_from_container,
)
from volinr.siren_grid import decode_siren
from volinr.weights_coding import pack_bits, parse_quantization, quantize_state_dict, unpack_bits

GRID_SHAPE = [4, 6, 5]
GRID_EXTENT = [8.0, 6.0, 5.0]
VALUE_RANGE = [-1024.0, 3071.0]
# a complete SR recipe (the decoder refuses one without the SR model's sha256); non-ASCII on
# purpose
EXTRA = {"upsample": "sr", "target_shape": [8, 12, 10], "sr_model_sha256": "0" * 64, "note": "µ"}


@pytest.fixture
def siren():
    torch.manual_seed(0)
    return Siren(3, 32, 2, 1, 30.0).eval()


def encode(siren, quantization="float32", coder="zstd", extra=EXTRA):
    return encode_container(
        siren.state_dict(),
        siren.config,
        GRID_SHAPE,
        GRID_EXTENT,
        VALUE_RANGE,
        quantization=quantization,
        coder=coder,
        extra=extra,
    )


def split(data):
    """(version, header dict, payload) by the documented layout, read independently."""
    magic, version, header_length = struct.unpack_from("<8sHI", data)
    assert magic == b"VOLINR\x00C"
    header = json.loads(data[14 : 14 + header_length])
    (payload_length,) = struct.unpack_from("<Q", data, 14 + header_length)
    payload = data[22 + header_length : 22 + header_length + payload_length]
    assert len(data) == 22 + header_length + payload_length + 32
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    return version, header, payload


def frame(header, payload, version=1):
    """A well-formed file (valid checksum) around any header and payload."""
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = (
        struct.pack("<8sHI", b"VOLINR\x00C", version, len(header_bytes))
        + header_bytes
        + struct.pack("<Q", len(payload))
        + payload
    )
    return body + hashlib.sha256(body).digest()


def assert_bitwise_equal(decoded, expected):
    assert list(decoded) == list(expected)
    for name, tensor in expected.items():
        assert decoded[name].dtype == torch.float32
        assert decoded[name].shape == tensor.shape
        assert torch.equal(decoded[name].view(torch.int32), tensor.float().view(torch.int32)), name


def test_parse_quantization():
    assert parse_quantization("float32") == ("float32", None)
    assert parse_quantization("float16") == ("float16", None)
    assert parse_quantization("q8") == ("uniform", 8)
    assert parse_quantization("q12") == ("uniform", 12)
    for bad in ("q1", "q17", "int8", "q", "uniform", "q08x"):
        with pytest.raises(ValueError, match=bad):
            parse_quantization(bad)


@pytest.mark.parametrize("bits", [1, 2, 3, 8, 10, 12, 13, 16, 32])
@pytest.mark.parametrize("count", [0, 1, 7, 9, 1001])
def test_pack_unpack_round_trip(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    codes = rng.integers(0, 1 << bits, count, dtype=np.uint64)
    if count:
        codes[0] = (1 << bits) - 1  # the largest code survives
    packed = pack_bits(codes, bits)
    assert len(packed) == (count * bits + 7) // 8  # dense: 12-bit codes take 1.5 bytes
    unpacked = unpack_bits(packed, bits, count)
    assert unpacked.shape == (count,)
    np.testing.assert_array_equal(unpacked, codes)


def test_pack_bits_is_least_significant_bit_first():
    assert pack_bits(np.array([1, 2]), 3) == bytes([0b00010001])
    assert pack_bits(np.array([0xABC, 0x123]), 12) == bytes([0xBC, 0x3A, 0x12])
    with pytest.raises(ValueError):
        pack_bits(np.array([8]), 3)
    with pytest.raises(ValueError):
        unpack_bits(b"\x00", 12, 1)


def test_float32_round_trip_is_bitwise_and_decodes_identically(siren, tmp_path):
    data = encode(siren)
    state_dict, header = decode_container(data)
    assert_bitwise_equal(state_dict, siren.state_dict())
    assert header["architecture"] == siren.config
    assert header["grid_shape"] == GRID_SHAPE and header["grid_extent"] == GRID_EXTENT
    assert header["value_range"] == VALUE_RANGE and header["extra"] == EXTRA
    assert header["quantization"] == {"kind": "float32", "bits": None}
    assert_bitwise_equal(quantize_state_dict(siren.state_dict(), "float32"), siren.state_dict())

    path = tmp_path / "sub" / "model.volinr"
    assert write_container(path, data) == len(data) == path.stat().st_size
    model, header = siren_from_container(path)
    assert not model.training
    expected = decode_siren(siren, GRID_SHAPE, VALUE_RANGE, extent=GRID_EXTENT, progress=False)
    decoded = decode_siren(
        model, header["grid_shape"], header["value_range"], extent=header["grid_extent"]
    )
    np.testing.assert_array_equal(decoded, expected)
    from_bytes, _ = siren_from_container(data)
    np.testing.assert_array_equal(
        decode_siren(from_bytes, GRID_SHAPE, VALUE_RANGE, extent=GRID_EXTENT), expected
    )


def test_quantized_round_trips_match_quantize_state_dict(siren):
    original = siren.state_dict()
    sizes = {}
    for quantization in ("float32", "float16", "q12", "q10", "q8"):
        data = encode(siren, quantization)
        sizes[quantization] = len(data)
        decoded, header = decode_container(data)
        assert_bitwise_equal(decoded, quantize_state_dict(original, quantization))
        if quantization == "float16":
            for name, tensor in original.items():
                assert torch.equal(decoded[name], tensor.half().float())
        if quantization.startswith("q"):
            bits = int(quantization[1:])
            assert header["quantization"] == {"kind": "uniform", "bits": bits}
            for entry in header["tensors"]:
                weights = original[entry["name"]].double()
                assert entry["min"] == weights.min().item()
                assert entry["max"] == weights.max().item()
                bound = (entry["max"] - entry["min"]) / (2**bits - 1) / 2
                error = (decoded[entry["name"]].double() - weights).abs().max().item()
                assert error <= bound + 1e-7 * weights.abs().max().item(), entry["name"]
                # it really was quantized (a one-element tensor is constant: exact)
                assert (error > 0) == (weights.numel() > 1)
    assert sizes["float32"] > sizes["float16"] > sizes["q12"] > sizes["q10"] > sizes["q8"]


def test_constant_tensor_stores_no_codes(siren):
    state_dict = siren.state_dict()
    state_dict["output.bias"] = torch.full((1,), 0.25)
    state_dict["net.1.linear.bias"] = torch.full((32,), -0.5)
    data = encode_container(
        state_dict, siren.config, GRID_SHAPE, GRID_EXTENT, VALUE_RANGE, quantization="q8"
    )
    decoded, header = decode_container(data)
    entries = {entry["name"]: entry for entry in header["tensors"]}
    assert entries["net.1.linear.bias"]["length_bytes"] == 0
    assert torch.equal(decoded["net.1.linear.bias"], torch.full((32,), -0.5))
    assert torch.equal(decoded["output.bias"], torch.full((1,), 0.25))


@pytest.mark.parametrize("coder", ["zstd", "lzma", "none"])
def test_coders(siren, coder):
    data = encode(siren, "q10", coder)
    decoded, header = decode_container(data)
    assert header["coder"] == coder
    assert_bitwise_equal(decoded, quantize_state_dict(siren.state_dict(), "q10"))
    raw_bytes = sum(entry["length_bytes"] for entry in header["tensors"])
    _, _, payload = split(data)
    assert (len(payload) == raw_bytes) == (coder == "none")


def test_layout_header_is_compact_and_bytes_are_deterministic(siren):
    data = encode(siren, "q8")
    assert data == encode(siren, "q8")
    torch.manual_seed(0)
    assert data == encode(Siren(3, 32, 2, 1, 30.0), "q8")  # equal weights, a fresh model
    version, header, _ = split(data)
    assert version == 1
    header_length = struct.unpack_from("<I", data, 10)[0]
    compact = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert data[14 : 14 + header_length] == compact.encode()
    assert [entry["name"] for entry in header["tensors"]] == sorted(siren.state_dict())
    offsets = [entry["offset_bytes"] for entry in header["tensors"]]
    lengths = [entry["length_bytes"] for entry in header["tensors"]]
    assert offsets == [0, *np.cumsum(lengths)[:-1].tolist()]
    assert lengths[:2] == [32, 96]  # net.0.linear.bias, .weight: 32 and 96 codes of 8 bits


def test_every_byte_flip_is_caught(siren):
    data = encode(siren, "q12")
    header_length = struct.unpack_from("<I", data, 10)[0]
    header_positions = [0, 5, 14, 14 + header_length // 2, 14 + header_length - 1]
    payload_positions = [22 + header_length, (22 + header_length + len(data) - 32) // 2]
    trailer_positions = [len(data) - 32, len(data) - 1]
    for position in header_positions + payload_positions + trailer_positions:
        corrupted = bytearray(data)
        corrupted[position] ^= 0x40
        with pytest.raises(InputError, match="checksum|magic") as caught:
            decode_container(bytes(corrupted), source="flip.volinr")
        assert "flip.volinr" in str(caught.value)


def test_truncated_files_are_rejected(siren, tmp_path):
    data = encode(siren)
    for length in (0, 3, 8, 13, 20, 100, len(data) // 2, len(data) - 33, len(data) - 1):
        path = tmp_path / f"cut{length}.volinr"
        path.write_bytes(data[:length])
        with pytest.raises(InputError, match="truncated") as caught:
            read_container(path)
        assert str(path) in str(caught.value)
    with pytest.raises(InputError, match="trailing"):
        decode_container(data + b"\x00")


def test_missing_file_and_wrong_magic(siren, tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_container(tmp_path / "missing.volinr")
    path = tmp_path / "weights.pt"
    torch.save(siren.state_dict(), path)
    with pytest.raises(InputError, match="bad magic"):
        read_container(path)
    with pytest.raises(InputError, match="bad magic"):
        decode_container(b"VOLINR\x00D" + encode(siren)[8:])


def test_newer_version_is_rejected(siren):
    _, header, payload = split(encode(siren))
    with pytest.raises(InputError, match="format version 7 is newer than this volinr reads"):
        decode_container(frame(header, payload, version=7))
    with pytest.raises(InputError, match="version 0"):
        decode_container(frame(header, payload, version=0))
    decode_container(frame(header, payload))  # the re-framing alone is fine
    flipped = bytearray(encode(siren))
    flipped[9] ^= 0x01  # a bit flip in the version field: says it may be corruption
    with pytest.raises(InputError, match=r"version 257 is newer .*or the file is corrupted"):
        decode_container(bytes(flipped))


def test_header_that_disagrees_with_the_architecture(siren):
    _, header, payload = split(encode(siren, "q8"))
    wrong_shape = json.loads(json.dumps(header))
    wrong_shape["tensors"][2]["shape"] = [3, 32]  # net.0.linear.weight is (32, 3)
    with pytest.raises(InputError, match="shape"):
        decode_container(frame(wrong_shape, payload))
    wider = json.loads(json.dumps(header))
    wider["architecture"]["hidden_features"] = 64
    with pytest.raises(InputError, match="architecture|shape"):
        decode_container(frame(wider, payload))
    missing = json.loads(json.dumps(header))
    del missing["tensors"][0]
    with pytest.raises(InputError, match="do not match"):
        decode_container(frame(missing, payload))
    bad_architecture = json.loads(json.dumps(header))
    bad_architecture["architecture"]["depth"] = 3
    with pytest.raises(InputError, match="cannot build"):
        decode_container(frame(bad_architecture, payload))


def test_malformed_header_and_payload(siren):
    _, header, payload = split(encode(siren, "q8"))
    body = b"{not json"
    framed = (
        struct.pack("<8sHI", b"VOLINR\x00C", 1, len(body)) + body + struct.pack("<Q", len(payload))
    )
    framed += payload
    with pytest.raises(InputError, match="not UTF-8 JSON"):
        decode_container(framed + hashlib.sha256(framed).digest())
    with pytest.raises(InputError, match="payload"):
        decode_container(frame(header, payload[:-4]))
    with pytest.raises(InputError, match="payload size mismatch"):
        decode_container(frame({**header, "coder": "none"}, payload))
    with pytest.raises(InputError, match="coder"):
        decode_container(frame({**header, "coder": "gzip"}, payload))
    with pytest.raises(InputError, match="bits"):
        decode_container(
            frame({**header, "quantization": {"kind": "uniform", "bits": 40}}, payload)
        )


def test_encoder_refuses_bad_input(siren):
    state_dict = siren.state_dict()
    with pytest.raises(ValueError, match="q7x"):
        encode(siren, "q7x")
    with pytest.raises(ValueError, match="coder"):
        encode(siren, coder="gzip")
    with pytest.raises(ValueError, match="does not match"):
        encode_container(
            {k: v for k, v in state_dict.items() if k != "output.bias"},
            siren.config,
            GRID_SHAPE,
            GRID_EXTENT,
            VALUE_RANGE,
        )
    nan_state = dict(state_dict, **{"output.bias": torch.tensor([float("nan")])})
    with pytest.raises(ValueError, match="NaN"):
        encode_container(nan_state, siren.config, GRID_SHAPE, GRID_EXTENT, VALUE_RANGE)
    with pytest.raises(ValueError, match="JSON"):
        encode(siren, extra={"bad": object()})
