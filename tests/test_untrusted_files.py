"""Files from elsewhere: model checkpoints that carry code, container files that lie, and
archives that try to write outside their folder.

What test_container.py already covers is not repeated here: wrong magic, versions 0, 7 and a
flipped version bit, byte flips at chosen positions, truncation at chosen lengths, trailing
bytes, headers disagreeing with the architecture, malformed JSON and payloads. Here: every
byte flipped and every truncation of one small file, length fields and tensor tables that lie
under a valid checksum, and claims of models too large to build. Archive members escaping by
'..', an absolute or drive path, symbolic and hard links and FIFOs are in test_download.py;
here the cases it lacks: a '..' member of a tar, a symbolic link in a zip, a member given twice.
"""

import hashlib
import io
import json
import logging
import stat
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from test_container import frame, split
from test_download import assert_nothing_left, dicom_bytes, regular, sha, tar_bytes
from volinr.checkpoints import load_checkpoint, save_checkpoint
from volinr.cli import main
from volinr.data.download import fetch_dataset
from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.siren_container import decode_container, encode_container
from volinr.siren_grid import WEIGHTS_FORMAT

# --- checkpoints that carry code ------------------------------------------------------------


class Payload:
    """Unpickling this creates ``marker``: stands in for any code an attacker would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def torch_file(path: Path, marker: Path, zipped: bool = True) -> None:
    """A checkpoint as torch.save writes it, with the payload inside."""
    model = Siren(3, 8, 2)
    payload = {
        "format": WEIGHTS_FORMAT,
        "config": model.config,
        "state_dict": model.state_dict(),
        "value_range": [0.0, 1.0],
        "grid_shape": [8, 8],
        "grid_extent": [8.0, 8.0],
        "note": Payload(marker),
    }
    torch.save(payload, path, _use_new_zipfile_serialization=zipped)


def legacy_torch_file(path: Path, marker: Path) -> None:
    """torch.save's format before 1.6: one pickle stream, no zip."""
    torch_file(path, marker, zipped=False)


@pytest.mark.parametrize("write", [torch_file, legacy_torch_file])
def test_a_checkpoint_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path, write):
    marker = tmp_path / "code_ran"
    path = tmp_path / "weights.pt"
    write(path, marker)
    # Control: an unrestricted load would run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(InputError, match="not a readable volinr-siren-1 file") as raised:
        load_checkpoint(path, WEIGHTS_FORMAT, Siren)
    assert str(path) in str(raised.value)
    assert not marker.exists()


def test_the_command_line_refuses_it_too(tmp_path, caplog):
    marker = tmp_path / "code_ran"
    torch_file(tmp_path / "weights.pt", marker)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main(["decode", "--weights", str(tmp_path / "weights.pt"), "--out", str(out)])
    assert code == 2 and "weights.pt" in caplog.text and "Weights only load failed" in caplog.text
    assert not marker.exists() and not out.exists()


def test_a_checkpoint_of_plain_tensors_still_loads(tmp_path):
    """The refusal above is of the code, not of every file: a saved model reads back."""
    model = Siren(3, 8, 2)
    save_checkpoint(tmp_path / "w.pt", WEIGHTS_FORMAT, model, grid_shape=[8, 8])
    loaded, payload = load_checkpoint(tmp_path / "w.pt", WEIGHTS_FORMAT, Siren)
    assert payload["grid_shape"] == [8, 8]
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


# --- containers that lie --------------------------------------------------------------------


@pytest.fixture(scope="module")
def container() -> bytes:
    torch.manual_seed(0)
    model = Siren(3, 8, 2)
    return encode_container(
        model.state_dict(), model.config, [4, 4, 4], [4.0, 4.0, 4.0], [0.0, 1.0], "q8", "zstd"
    )


def test_every_flipped_byte_is_caught(container):
    # magic, version and lengths are read before the checksum; a flip anywhere else is caught
    # by it
    problems = "bad magic|format version|corrupted length field|checksum mismatch"
    for position in range(len(container)):
        corrupted = bytearray(container)
        corrupted[position] ^= 0x10
        with pytest.raises(InputError, match=f"^flipped.volinr: .*({problems})"):
            decode_container(bytes(corrupted), "flipped.volinr")


def test_every_truncation_is_caught(container):
    for length in range(len(container)):
        with pytest.raises(InputError, match="truncated"):
            decode_container(container[:length])


def with_lengths(data: bytes, header_length: int | None = None, payload_length: int | None = None):
    """``data`` with its length fields overwritten and a valid checksum: a consistent liar."""
    body = bytearray(data[:-32])
    real_header_length = struct.unpack_from("<I", body, 10)[0]
    if header_length is not None:
        struct.pack_into("<I", body, 10, header_length)
    if payload_length is not None:
        struct.pack_into("<Q", body, 14 + real_header_length, payload_length)
    return bytes(body) + hashlib.sha256(body).digest()


@pytest.mark.parametrize(
    "lengths",
    [
        {"header_length": 2**32 - 1},
        {"header_length": 10},
        {"payload_length": 2**64 - 1},
        {"payload_length": 0},
    ],
    ids=["huge-header", "short-header", "huge-payload", "empty-payload"],
)
def test_length_fields_that_lie(container, lengths):
    with pytest.raises(InputError, match="length fields .* checksum verifies: a malformed"):
        decode_container(with_lengths(container, **lengths))


def lie(container: bytes, change) -> bytes:
    _, header, payload = split(container)
    header = json.loads(json.dumps(header))
    change(header)
    return frame(header, payload)


def set_tensor(index: int, **fields):
    return lambda header: header["tensors"][index].update(fields)


def wider(width: int):
    """A header claiming a SIREN of ``width``, its tensor table agreeing: constant tensors, so
    the (unchanged) payload of zero bytes is consistent with it."""

    def change(header):
        header["architecture"]["hidden_features"] = width
        for entry in header["tensors"]:
            entry["shape"] = [width if n == 8 else n for n in entry["shape"]]  # 8: the width
            entry.update(offset_bytes=0, length_bytes=0, min=0.0, max=0.0)

    return change


def deeper(layers: int):
    # only the architecture: building it is what must stay cheap
    return lambda header: header["architecture"].update(sine_layers=layers)


@pytest.mark.parametrize(
    "change, problem",
    [
        (set_tensor(0, length_bytes=10**12), "expected offset 0, 8 bytes"),
        (set_tensor(1, offset_bytes=-5), "tensor net.0.linear.weight at offset -5"),
        (set_tensor(2, min=1.0, max=0.0), "bad range"),
        (set_tensor(2, min=float("nan")), "bad range"),
        # A constant tensor stores no bytes: the claim alone would make the decoder allocate it.
        # Both are refused by the limits on width and depth before any layer is built.
        (wider(10**6), "hidden_features 1000000: an integer from 1 to 1024"),
        (deeper(10**9), "sine_layers 1000000000: an integer from 1 to 16"),
        (lambda h: h.update(grid_shape=[0, 4, 4]), "bad grid"),
        (lambda h: h.update(grid_shape=[2] * 4, grid_extent=[2.0] * 4), "bad grid"),
        (lambda h: h["architecture"].update(in_features=2), "the decoder needs 3 and 1"),
        (lambda h: h["architecture"].update(omega_0=0.0), "omega_0 0.0"),
        (lambda h: h["architecture"].update(omega_0=float("nan")), "omega_0 nan"),
        (lambda h: h.update(value_range=[0.0, "inf"]), "bad value_range"),
    ],
    ids=[
        "tensor-length",
        "tensor-offset",
        "tensor-range",
        "tensor-nan",
        "huge-model",
        "deep-model",
        "empty-grid",
        "4d-grid",
        "2d-inputs",
        "omega-zero",
        "omega-nan",
        "value-range",
    ],
)
def test_a_header_that_lies_under_a_valid_checksum(container, change, problem):
    with pytest.raises(InputError, match=problem):
        decode_container(lie(container, change))


# --- archives -------------------------------------------------------------------------------


def fetch(server, tmp_path, name: str, data: bytes):
    url = server.put(name, data)
    out_dir = tmp_path / "data" / "dataset"
    with pytest.raises(InputError) as raised:
        fetch_dataset([url], [sha(data)], out_dir, tmp_path / "downloads", progress=False)
    assert_nothing_left(tmp_path, out_dir)
    return str(raised.value)


@pytest.mark.parametrize("name", ["../evil.dcm", "series/../../evil.dcm", "./../evil.dcm"])
def test_a_tar_with_a_dot_dot_member_is_refused(server, tmp_path, name):
    data = tar_bytes([regular("series/slice00.dcm", dicom_bytes(0)), regular(name, b"evil")])
    message = fetch(server, tmp_path, "dotdot.tar.gz", data)
    assert "dotdot.tar.gz" in message and repr(name) in message and "'..'" in message


def zip_of(*members: tuple[str | zipfile.ZipInfo, bytes]) -> bytes:
    """A zip of members in order (test_download.zip_bytes takes a dict: no repeats, no modes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def test_a_zip_with_a_symbolic_link_is_refused(server, tmp_path):
    link = zipfile.ZipInfo("series/link.dcm")
    link.create_system = 3  # Unix: external_attr holds the file mode
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    target = str(tmp_path / "evil_target.dcm").encode()  # a link's data is its target
    data = zip_of(("series/slice00.dcm", dicom_bytes(0)), (link, target))
    message = fetch(server, tmp_path, "link.zip", data)
    assert "link.zip" in message and "'series/link.dcm'" in message
    assert "symbolic link" in message


def test_a_member_given_twice_is_refused(server, tmp_path):
    name = "series/slice00.dcm"
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = zip_of((name, dicom_bytes(0)), (name, b"evil: would replace the slice"))
    message = fetch(server, tmp_path, "twice.zip", data)
    assert "twice.zip" in message and "would overwrite a file already extracted" in message
