import json
import subprocess
import sys

import numpy as np

from volinr.cli import main
from volinr.io import load_array, save_array


def test_prepare_and_downsample_by_hand(tmp_path):
    assert (
        main(["prepare", "--source", "pydicom:CT_small.dcm", "--out", str(tmp_path / "a.npy")]) == 0
    )
    assert (
        main(
            [
                "downsample",
                "--input",
                str(tmp_path / "a.npy"),
                "--factor",
                "4",
                "--out",
                str(tmp_path / "lr.npy"),
            ]
        )
        == 0
    )
    lr, meta = load_array(tmp_path / "lr.npy")
    assert lr.shape == (32, 32) and meta["downsampling"]["factor"] == 4
    assert meta["spacing_mm"][0] == np.float64(0.661468) * 4


def test_bad_input_exits_non_zero_naming_the_file_and_leaves_no_output(tmp_path):
    bogus = tmp_path / "scan.dcm"
    bogus.write_bytes(b"\x00" * 300)
    out = tmp_path / "out.npy"
    run = subprocess.run(
        [sys.executable, "-m", "volinr", "prepare", "--source", str(bogus), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "scan.dcm" in run.stderr and "not a readable DICOM" in run.stderr
    assert list(tmp_path.iterdir()) == [bogus]


def test_sr_dataset_refuses_a_re_encoding_of_the_evaluation_image(tmp_path, caplog):
    main(["prepare", "--source", "pydicom-data:693_UNCR.dcm", "--out", str(tmp_path / "e.npy")])
    code = main(
        [
            "sr-dataset",
            "--eval",
            str(tmp_path / "e.npy"),
            "--source",
            "pydicom:CT_small.dcm",
            "--source",
            "pydicom-data:693_UNCI.dcm",
            "--out",
            str(tmp_path / "t.npz"),
            "--split",
            str(tmp_path / "s.json"),
        ]
    )
    assert code == 2 and "693_UNCI.dcm" in caplog.text
    assert not (tmp_path / "t.npz").exists() and not (tmp_path / "s.json").exists()


def test_evaluate_refuses_mismatched_shapes(tmp_path, caplog):
    save_array(tmp_path / "ref.npy", np.zeros((8, 8), np.float32), {})
    save_array(tmp_path / "rec.npy", np.zeros((4, 4), np.float32), {})
    code = main(
        [
            "evaluate",
            "--reference",
            str(tmp_path / "ref.npy"),
            "--reconstruction",
            str(tmp_path / "rec.npy"),
            "--label",
            json.dumps({}),
            "--out",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 2 and "rec.npy" in caplog.text and not (tmp_path / "m.json").exists()


def test_a_stage_waits_passively_unless_told_otherwise_and_sets_it_before_torch_loads(
    monkeypatch,
):
    """OMP_WAIT_POLICY is read once, when torch's OpenMP runtime loads: the stages set it
    first (a spinning thread beside a busy process holds the core its partner needs)."""
    import os

    from volinr.cli import passive_thread_waits

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_thread_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    for users in ("ACTIVE", ""):  # the user's choice, the runtime's default included, stays
        monkeypatch.setenv("OMP_WAIT_POLICY", users)
        passive_thread_waits()
        assert os.environ["OMP_WAIT_POLICY"] == users
    probe = (
        "import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); import volinr.cli as c; "
        "loaded = 'torch' in sys.modules; c.passive_thread_waits(); import torch; "
        "print(loaded, os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "PASSIVE"]
