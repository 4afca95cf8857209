"""Hostile inputs found after the second reliability round, each through the command line:
an array whose header claims more than its file holds, an unknown or half-given method in
``volinr rd``, and a ``--like`` sidecar of another grid. Each must exit 2 naming the problem
and write nothing."""

import json

import numpy as np
import pytest

from volinr.cli import main
from volinr.io import save_array


def test_an_npy_claiming_terabytes_is_refused_before_allocating(tmp_path, caplog):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
        )
        handle.write(b"\0" * 64)
    out = tmp_path / "lr.npy"
    assert main(["downsample", "--input", str(path), "--factor", "2", "--out", str(out)]) == 2
    assert "claims" in caplog.text and "huge.npy" in caplog.text
    assert not out.exists()


def test_a_truncated_npy_is_refused(tmp_path, caplog):
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((16, 16), np.float32))
    path.write_bytes(path.read_bytes()[:-10])
    assert main(["evaluate", "--reference", str(path), "--reconstruction", str(path),
                 "--label", "{}", "--out", str(tmp_path / "m.json")]) == 2  # fmt: skip
    assert "cut.npy" in caplog.text


def _rd(tmp_path, method, settings, group="lambda0.01"):
    image = tmp_path / "img.npy"
    save_array(image, np.zeros((16, 16), np.float32) + np.arange(16), {"spacing_mm": [1, 1]})
    return main(
        [
            "rd", "--method", method, "--group", group, "--image", str(image),
            "--settings", json.dumps(settings), "--inputs", "{}",
            "--tissue-window", "-1024", "nan", "--files-dir", str(tmp_path / "files"),
            "--out", str(tmp_path / "rows.json"), "--threads", "1",
        ]
    )  # fmt: skip


@pytest.mark.parametrize(
    "method, settings, message",
    [
        ("nope", {}, "unknown method family 'nope'"),
        ("neural_codec", {"neural_codec": {"lambdas": [-1]}, "dataset": {}}, "lambdas"),
        ("neural_codec", {"neural_codec": {"iterations": 0}, "dataset": {}}, "iterations"),
        ("neural_codec", {"neural_codec": {"levels": 99}, "dataset": {}}, "levels"),
    ],
)
def test_rd_refuses_an_unknown_method_and_settings_the_schema_refuses(
    tmp_path, caplog, method, settings, message
):
    assert _rd(tmp_path, method, settings) == 2
    assert message in caplog.text
    assert not (tmp_path / "rows.json").exists() and not (tmp_path / "files").exists()


def test_decode_refuses_a_like_sidecar_of_another_grid(tmp_path, caplog):
    target = tmp_path / "t.npy"
    save_array(target, np.random.default_rng(0).random((8, 8), np.float32), {"spacing_mm": [2, 2]})
    weights = tmp_path / "w.pt"
    fit = ["fit", "--target", str(target), "--sine-layers", "2", "--width", "8",
           "--iterations", "2", "--eval-every", "1", "--batch-size", "64", "--threads", "1",
           "--weights", str(weights), "--record", str(tmp_path / "r.json"),
           "--curve", str(tmp_path / "c.csv")]  # fmt: skip
    assert main(fit) == 0
    other = tmp_path / "other.npy"
    save_array(other, np.zeros((16, 16), np.float32), {"spacing_mm": [1, 1]})
    out = tmp_path / "d.npy"
    decode = ["decode", "--weights", str(weights), "--like", str(other.with_suffix(".json")),
              "--out", str(out), "--threads", "1"]  # fmt: skip
    assert main(decode) == 2
    assert "other.json" in caplog.text and "shape" in caplog.text
    assert not out.exists()
