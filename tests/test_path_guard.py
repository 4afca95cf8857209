"""The one guard every subcommand's paths go through (``arguments.check_paths``): no output may
replace an input or an input's sidecar, whatever names it (JSON options, links, ``..``), and an
output folder may not hold an input. Each case exits 2 before anything runs, and every input
byte stays as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from volinr.cli import main


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("scan.npy", np.arange(64, dtype=np.int16).reshape(4, 4, 4))
    Path("scan.json").write_text('{"spacing_zyx_mm": [1, 1, 1], "units": "HU"}\n')
    np.save("lr.npy", np.zeros((2, 2), np.float32))
    Path("lr.json").write_text("{}\n")
    return tmp_path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(work: Path, capsys, argv: list[str], fragment: str) -> None:
    before = _snapshot(work)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's refusal of an option
        code = exit_.code
    assert code == 2
    assert fragment in capsys.readouterr().err
    assert _snapshot(work) == before  # every input byte, nothing new


RD = ["rd", "--method", "classical", "--group", "zstd", "--image", "scan.npy", "--settings", "{}"]


def test_a_path_inside_a_json_option_is_an_input(work, capsys):
    spec = json.dumps({"kind": "array", "path": "scan.npy"})
    argv = ["prepare-volume", "--spec", spec, "--volume-out", "scan.npy", "--out", "e.npy"]
    _refused(work, capsys, argv, "would overwrite a file given as --spec")
    argv = [*RD, "--inputs", '{"lr": "lr.npy"}', "--files-dir", "files", "--out", "lr.json"]
    _refused(work, capsys, argv, "would overwrite a file given as --inputs")


def test_an_outputs_sidecar_may_not_replace_an_inputs(work, capsys):
    # downsample writes hr.lr and its array sidecar hr.json: here scan.json, the input's
    argv = ["downsample", "--input", "scan.npy", "--out", "scan.lr"]
    _refused(work, capsys, argv, "scan.json")


def test_an_output_folder_may_not_hold_an_input(work, capsys):
    argv = [*RD, "--keep-reconstruction", "--files-dir", ".", "--out", "rows/rows.json"]
    _refused(work, capsys, argv, "is the folder of")


@pytest.mark.parametrize(
    ("alias", "fragment"),
    [
        ("symlink", "symbolic link"),
        ("hardlink", "given as --input"),
        ("dotdot", "given as --input"),
    ],
)
def test_links_and_dotdot_name_the_input_they_lead_to(work, capsys, alias, fragment):
    Path("sub").mkdir()
    if alias == "symlink":
        os.symlink(work / "scan.npy", "sub/other.npy")
        out = "sub/other.npy"
    elif alias == "hardlink":
        os.link("scan.npy", "sub/other.npy")
        out = "sub/other.npy"
    else:
        out = "sub/../scan.npy"
    _refused(work, capsys, ["downsample", "--input", "scan.npy", "--out", out], fragment)


def test_nan_in_a_json_option_is_bad_input_not_a_numerical_failure(work, capsys):
    spec = '{"kind": "phantom", "phantom": {"spacing_mm": [NaN, 1, 1]}}'
    argv = ["prepare-volume", "--spec", spec, "--volume-out", "v.npy", "--out", "e.npy"]
    _refused(work, capsys, argv, "NaN is not a JSON number")


def test_a_files_folder_holding_a_file_volinr_did_not_write_is_refused(work, capsys):
    # before: rd replaced the user's files/lossless.bin with its own point's file
    from volinr.io import save_array

    save_array("ct.npy", np.arange(256, dtype=np.int16).reshape(16, 16), {"units": "HU"})
    Path("files").mkdir()
    Path("files/lossless.bin").write_text("the user's own notes\n")
    settings = json.dumps({"classical": {}, "dataset": {}})
    argv = ["rd", "--method", "classical", "--group", "zstd", "--image", "ct.npy",
            "--settings", settings, "--files-dir", "files", "--out", "rows.json"]  # fmt: skip
    _refused(work, capsys, argv, "lossless.bin: --files-dir files holds a file volinr did not")
    # what a run of volinr wrote there (each file with its provenance) is replaced on a rerun
    Path("files/lossless.bin").unlink()
    Path("files/.snakemake_timestamp").write_text("")  # hidden: Snakemake's, no point's name
    assert main(argv) == 0
    first = _snapshot(work / "files")
    assert main(argv) == 0
    assert _snapshot(work / "files").keys() == first.keys()


def test_a_group_without_an_input_it_reads_is_refused_naming_it(work, caplog):
    # before: a KeyError traceback from inside the method (exit 1)
    settings = json.dumps({"volume": {}, "dataset": {}, "downsample_factor": 4})
    argv = ["rd", "--method", "true_lr", "--group", "lanczos", "--image", "scan.npy",
            "--settings", settings, "--inputs", "{}", "--files-dir", "files",
            "--out", "rows.json"]  # fmt: skip
    before = _snapshot(work)
    assert main(argv) == 2
    assert "--inputs: true_lr lanczos needs lr" in caplog.text
    assert _snapshot(work) == before
