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
