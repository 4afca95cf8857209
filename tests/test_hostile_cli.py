"""The command line against a hostile user (issue 13, classes 1, 6 and 7): every refusal exits 2
naming the file and the problem, leaves no output (not even a hidden temporary), and never
removes or replaces a file volinr did not write; a stage's outputs appear all together or not
at all; Ctrl-C and SIGTERM exit 130 and 143 with one line and clean up.

Each case goes through ``volinr.cli.main`` (or ``python -m volinr`` where a signal or the exit
status of the process matters).
"""

import errno
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from volinr.checkpoints import save_checkpoint
from volinr.cli import main
from volinr.io import save_array
from volinr.models.siren import Siren
from volinr.models.srdensenet import SRDenseNet
from volinr.siren_grid import WEIGHTS_FORMAT
from volinr.super_resolution import SR_FORMAT
from volinr.training.siren_blocked import BlockedSirenStep
from volinr.training.siren_resume import RESUME_FORMAT

FIT = ["--sine-layers", "2", "--width", "8", "--iterations", "20", "--eval-every", "10",
       "--batch-size", "64", "--threads", "1"]  # fmt: skip


def volinr(caplog, capsys, *args) -> tuple[int, str]:
    """Exit status and every error message of one command, run in this process (argparse's
    refusals included: they exit 2 through SystemExit and print to stderr)."""
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    return code, "\n".join(errors + [capsys.readouterr().err])


def leftovers(folder: Path) -> list[str]:
    """Outputs and hidden temporaries under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def assert_refused(outcome, out: Path, *expected) -> None:
    code, message = outcome
    assert code == 2, message
    assert "Traceback" not in message
    for text in expected:
        assert str(text) in message, f"{text!r} not in {message!r}"
    assert leftovers(out) == [], "output left behind"


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with a small slice, its LR version, a 3D volume, a tiny image, an SR model and
    a note of the user's; outputs go to out/ (relative paths, as a user types them)."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    hr = rng.normal(0, 200, (32, 32)).astype(np.int16)
    save_array("hr.npy", hr, {"source": "test"})
    save_array("lr.npy", hr[::4, ::4].copy(), {"source": "test"})
    save_array("vol.npy", rng.normal(0, 100, (8, 16, 16)).astype(np.int16), {"spacing_mm": [1] * 3})
    save_array("a4d.npy", np.arange(256, dtype=np.float32).reshape(2, 2, 8, 8), {})
    save_array("a1d.npy", np.arange(64, dtype=np.float32), {})
    save_array("tiny.npy", rng.normal(size=(5, 5)).astype(np.float32), {})
    save_checkpoint("sr.pt", SR_FORMAT, SRDenseNet(1, 2, 4, 8), training={}, curve=[])
    Path("notes.txt").write_text("the user's notes\n")
    return tmp_path


def fit(caplog, capsys, *extra, target="lr.npy", out="out/w"):
    outputs = ["--weights", f"{out}.pt", "--record", f"{out}.json", "--curve", f"{out}.csv"]
    return volinr(caplog, capsys, "fit", "--target", target, *FIT, *outputs, *extra)


@pytest.fixture
def weights(work):
    """SIREN weights as `volinr fit` writes them (for the 8x8 LR slice)."""
    path = work / "w.pt"
    save_checkpoint(path, WEIGHTS_FORMAT, Siren(3, 8, 2), value_range=[-300.0, 300.0],
                    grid_shape=[8, 8], grid_extent=[8.0, 8.0])  # fmt: skip
    return path


# --- class 1: the program removes only files it wrote ---------------------------------------


def another_fits_checkpoint(path: Path) -> None:
    torch.save({"format": RESUME_FORMAT, "fingerprint": "another fit"}, path)


def truncated_checkpoint(path: Path) -> None:
    torch.save({"format": RESUME_FORMAT, "fingerprint": "x", "model": torch.zeros(512)}, path)
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize(
    "make, resume, problem",
    [
        (None, "notes.txt", "not a readable SIREN resume checkpoint"),
        (None, "lr.npy", "cannot be the --target file"),
        (lambda p: p.mkdir(), "somedir", "the resume path is not a regular file"),
        (another_fits_checkpoint, "other.pt", "a resume checkpoint of another fit"),
        (truncated_checkpoint, "cut.pt", "not a readable SIREN resume checkpoint"),
        (None, "out/w.pt", "cannot be the --weights file"),
    ],
    ids=["text-file", "the-target", "directory", "another-fit", "truncated", "the-weights"],
)
def test_fit_refuses_a_resume_path_that_is_not_its_checkpoint_and_keeps_it(
    work, caplog, capsys, make, resume, problem
):
    path = work / resume
    if make:
        make(path)
    before = path.read_bytes() if path.is_file() else None
    outcome = fit(caplog, capsys, "--resume", resume, "--checkpoint-every", "5")
    assert_refused(outcome, work / "out", resume, problem)
    assert (path.read_bytes() if path.is_file() else None) == before
    assert path.is_dir() == (resume == "somedir")


def test_the_default_resume_path_keeps_what_volinr_did_not_write(work, caplog, capsys):
    Path("out").mkdir()
    Path("out/w.resume.pt").write_text("mine\n")
    outcome = fit(caplog, capsys)
    code, message = outcome
    assert code == 2 and "out/w.resume.pt: not a readable SIREN resume checkpoint" in message
    assert leftovers(work / "out") == ["w.resume.pt"]
    assert Path("out/w.resume.pt").read_text() == "mine\n"


class _Killed(Exception):
    pass


def test_the_default_resume_path_continues_this_fit_and_replaces_an_earlier_jobs(
    work, caplog, capsys, monkeypatch
):
    Path("out").mkdir()
    another_fits_checkpoint(Path("out/w.resume.pt"))  # this job, earlier, other settings
    real_step = BlockedSirenStep.__call__
    calls = []

    def killed_at_step_13(self, x, y):
        calls.append(1)
        if len(calls) == 13:
            raise _Killed
        return real_step(self, x, y)

    monkeypatch.setattr(BlockedSirenStep, "__call__", killed_at_step_13)
    with pytest.raises(_Killed):
        fit(caplog, capsys, "--checkpoint-every", "5")
    assert "other data or settings; starting over" in caplog.text
    assert leftovers(work / "out") == ["w.resume.pt"]  # this fit's, at iteration 10
    monkeypatch.setattr(BlockedSirenStep, "__call__", real_step)
    assert fit(caplog, capsys, "--checkpoint-every", "5")[0] == 0
    record = json.loads(Path("out/w.json").read_text())
    assert record["resumed_from_iteration"] == 10
    assert not Path("out/w.resume.pt").exists()  # its own checkpoint, removed when done


@pytest.mark.parametrize(
    "command",
    [
        ["fit", "--target", "lr.npy", *FIT, "--weights", "lr.npy", "--record", "out/r.json",
         "--curve", "out/c.csv"],
        ["fit", "--target", "lr.npy", *FIT, "--weights", "out/w.pt", "--record", "lr.json",
         "--curve", "out/c.csv"],
        ["downsample", "--input", "hr.npy", "--out", "hr.npy"],
        ["decode", "--weights", "w.pt", "--out", "w.pt"],
    ],
    ids=["weights-is-target", "record-is-targets-sidecar", "out-is-input", "out-is-weights"],
)  # fmt: skip
def test_an_output_that_is_an_input_is_refused(work, weights, caplog, capsys, command):
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    outcome = volinr(caplog, capsys, *command)
    assert_refused(outcome, work / "out", "would overwrite a file given as --")
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before


def test_two_outputs_naming_one_file_are_refused(work, caplog, capsys):
    outputs = ["--weights", "out/w.pt", "--record", "out/w.pt", "--curve", "out/w.csv"]
    outcome = volinr(caplog, capsys, "fit", "--target", "lr.npy", *FIT, *outputs)
    assert_refused(outcome, work / "out", "out/w.pt: --record and --weights name the same")


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_download_never_replaces_a_dataset_folder_it_did_not_write(work, caplog, capsys, kind):
    source = work / "scan.dcm"
    source.write_bytes(b"DICM" * 8)
    if kind == "folder":
        Path("mydata").mkdir()
        Path("mydata/keep.txt").write_text("precious")
    else:
        Path("mydata").write_text("precious")
    outcome = volinr(caplog, capsys, "download", "--url", source.as_uri(), "--out-dir",
                     "mydata", "--downloads-dir", "out/dl", "--manifest", "out/m.json")  # fmt: skip
    expected = (
        "was not extracted by volinr" if kind == "folder" else "the output path is a regular file"
    )
    assert_refused(outcome, work / "out", "mydata", expected)
    assert Path("mydata/keep.txt" if kind == "folder" else "mydata").read_text() == "precious"


def test_download_never_replaces_a_file_it_did_not_download(work, caplog, capsys):
    source = work / "scan.dcm"
    source.write_bytes(b"DICM" * 8)
    Path("dl").mkdir()
    Path("dl/scan.dcm").write_text("precious")  # same name, other content
    outcome = volinr(caplog, capsys, "download", "--url", source.as_uri(), "--sha256", "0" * 64,
                     "--out-dir", "out/ds", "--downloads-dir", "dl",
                     "--manifest", "out/m.json")  # fmt: skip
    assert_refused(outcome, work / "out", "dl/scan.dcm", "volinr did not download this file")
    assert Path("dl/scan.dcm").read_text() == "precious"


# --- class 6: errors a user can cause exit 2 naming the file and the problem ----------------


HOSTILE = {
    # the list
    "fit-4d": (["fit", "--target", "a4d.npy", *FIT, "--weights", "out/w.pt", "--record",
                "out/w.json", "--curve", "out/w.csv"], ["a4d.npy", "shape (2, 2, 8, 8)"]),
    "fit-1d": (["fit", "--target", "a1d.npy", *FIT, "--weights", "out/w.pt", "--record",
                "out/w.json", "--curve", "out/w.csv"], ["a1d.npy", "an array of shape (64,)"]),
    "downsample-4d": (["downsample", "--input", "a4d.npy", "--factor", "2", "--out", "out/d.npy"],
                      ["a4d.npy", "expected a 2D slice or a 3D volume"]),
    "downsample-1d": (["downsample", "--input", "a1d.npy", "--factor", "2", "--out", "out/d.npy"],
                      ["a1d.npy", "expected a 2D slice or a 3D volume"]),
    "decode-shape-0": (["decode", "--weights", "w.pt", "--shape", "0", "32", "--out", "out/d.npy"],
                       ["--shape", "must be a positive integer, got 0"]),
    "omega0-0": (["fit", "--omega0", "0"], ["--omega0", "must be positive, got 0"]),
    "omega0-negative": (["fit", "--omega0", "-30"], ["--omega0", "must be positive, got -30"]),
    "learning-rate-nan": (["fit", "--learning-rate", "nan"],
                          ["--learning-rate", "must be a finite number, got 'nan'"]),
    "out-is-a-directory": (["downsample", "--input", "hr.npy", "--out", "out/dir.npy"],
                           ["out/dir.npy: the output path is a directory"]),
    "weights-is-a-directory": (["fit", "--weights", "out/dir.npy"],
                               ["out/dir.npy: the output path is a directory"]),
    "unknown-volume-kind": (["prepare-volume", "--spec", '{"kind": "bogus"}', "--volume-out",
                             "out/v.npy"], ["--spec", "unknown volume kind 'bogus'"]),
    "quantization-q1": (["compress", "--weights", "w.pt", "--quantization", "q1", "--out",
                         "out/c.volinr"], ["--quantization", "unknown quantization 'q1'"]),
    "missing-sr-model": (["upsample", "--input", "lr.npy", "--method", "sr", "--sr-model",
                          "missing.pt", "--reference", "hr.npy", "--out", "out/u.npy"],
                         ["missing.pt", "file not found"]),
    "too-small-for-ssim": (["evaluate", "--reference", "tiny.npy", "--reconstruction", "tiny.npy",
                            "--label", "{}", "--out", "out/e.json"],
                           ["tiny.npy", "5x5 are too small for SSIM"]),
    # found by trying every subcommand
    "learning-rate-inf": (["fit", "--learning-rate", "inf"], ["--learning-rate", "finite"]),
    "learning-rate-negative": (["fit", "--learning-rate", "-1"], ["must be positive, got -1"]),
    "omega0-inf": (["fit", "--omega0", "inf"], ["--omega0", "must be a finite number"]),
    "lr-factor-above-1": (["fit", "--divergence-lr-factor", "2"],
                          ["--divergence-lr-factor", "between 0 and 1"]),
    "checkpoint-every-negative": (["fit", "--checkpoint-every", "-3"], ["must be 0 or more"]),
    "retries-negative": (["fit", "--divergence-retries", "-1"], ["must be 0 or more, got -1"]),
    "threads-negative": (["fit", "--threads", "-2"], ["--threads", "must be 0 or more"]),
    "device-unknown": (["fit", "--device", "bogus"], ["--device bogus"]),
    "record-under-a-file": (["fit", "--record", "notes.txt/w.json"],
                            ["notes.txt/w.json: notes.txt is not a folder"]),
    "decode-shape-negative": (["decode", "--weights", "w.pt", "--shape", "-4", "32", "--out",
                               "out/d.npy"], ["must be a positive integer, got -4"]),
    "like-is-a-directory": (["decode", "--weights", "w.pt", "--like", "out/dir.npy", "--out",
                             "out/d.npy"], ["out/dir.npy: cannot read (Is a directory)"]),
    "like-is-a-list": (["decode", "--weights", "w.pt", "--like", "list.json", "--out",
                        "out/d.npy"], ["list.json: expected a JSON object, found list"]),
    "upsample-4d": (["upsample", "--input", "a4d.npy", "--method", "lanczos", "--reference",
                     "hr.npy", "--out", "out/u.npy"], ["a4d.npy", "2D slice or a 3D volume"]),
    "label-not-an-object": (["evaluate", "--reference", "hr.npy", "--reconstruction", "hr.npy",
                             "--label", "[1, 2]", "--out", "out/e.json"],
                            ["--label", "expected a JSON object"]),
    "tissue-window-nan": (["evaluate", "--reference", "hr.npy", "--reconstruction", "hr.npy",
                           "--label", "{}", "--tissue-window", "nan", "nan", "--out",
                           "out/e.json"], ["--tissue-window nan nan: low must be a finite number"]),
    "fit-record-a-list": (["evaluate", "--reference", "hr.npy", "--reconstruction", "hr.npy",
                           "--label", "{}", "--fit-record", "list.json", "--out", "out/e.json"],
                          ["list.json: expected a JSON object"]),
    "container-missing": (["evaluate", "--reference", "hr.npy", "--reconstruction", "hr.npy",
                           "--label", "{}", "--container", "missing.volinr", "--out",
                           "out/e.json"], ["missing.volinr: No such file or directory"]),
    "compress-sr-model-missing": (["compress", "--weights", "w.pt", "--upsample", "sr",
                                   "--reference", "hr.npy", "--sr-model", "missing.pt", "--out",
                                   "out/c.volinr"], ["missing.pt: No such file or directory"]),
    "spec-not-an-object": (["prepare-volume", "--spec", "[1]", "--volume-out", "out/v.npy"],
                           ["--spec", "expected a JSON object"]),
    "phantom-shape-0": (["prepare-volume", "--spec",
                         '{"kind": "phantom", "phantom": {"shape": [0, 8, 8]}}', "--volume-out",
                         "out/v.npy"], ["phantom shape must be 3 sizes of at least 4"]),
    "max-correlation-nan": (["sr-dataset", "--eval", "hr.npy", "--volume", "vol.npy",
                             "--max-correlation", "nan", "--out", "out/t.npz", "--split",
                             "out/s.json"], ["--max-correlation", "finite"]),
    "exclude-slices-reversed": (["sr-dataset", "--eval", "hr.npy", "--volume", "vol.npy",
                                 "--exclude-slices", "5", "2", "--out", "out/t.npz", "--split",
                                 "out/s.json"],
                                ["--exclude-slices 5 2 --margin 0: need 0 <= START < STOP"]),
    "sr-settings-unknown": (["pretrain-sr", "--training", "t.npz", "--split", "list.json",
                             "--model", "{}", "--settings", '{"bogus": 1}', "--out",
                             "out/sr.pt", "--curve", "out/c.csv"],
                            ["--settings", "unexpected keyword argument 'bogus'"]),
    "sr-settings-negative": (["pretrain-sr", "--training", "t.npz", "--split", "list.json",
                              "--model", "{}", "--settings", '{"steps": -5}', "--out",
                              "out/sr.pt", "--curve", "out/c.csv"],
                             ["--settings: steps -5"]),
    "export-geometry-without-spacing": (["export", "--reconstruction", "vol.npy", "--geometry",
                                         "shape.json", "--description", "x", "--nifti",
                                         "out/v.nii.gz", "--dicom", "out/dcm"],
                                        ["shape.json: geometry unusable", "spacing_mm"]),
    "codecs-1d": (["codecs", "--input", "a1d.npy", "--out", "out/c.csv"],
                  ["a1d.npy", "2D slice or a 3D volume"]),
}  # fmt: skip
FIT_DEFAULTS = ["--target", "lr.npy", *FIT, "--weights", "out/w.pt", "--record", "out/w.json",
                "--curve", "out/w.csv"]  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_argument_exits_2_naming_the_file_and_the_problem(
    work, weights, caplog, capsys, case
):
    command, expected = HOSTILE[case]
    if command[0] == "fit" and "--target" not in command:
        command = command + FIT_DEFAULTS  # argparse keeps the last of a repeated option
    Path("out/dir.npy").mkdir(parents=True)
    Path("list.json").write_text("[1, 2]\n")
    Path("shape.json").write_text('{"shape": [8, 16, 16]}\n')
    outcome = volinr(caplog, capsys, *command)
    code, message = outcome
    assert code == 2, message
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    assert leftovers(work / "out") == ["dir.npy"], "output left behind"
    assert Path("notes.txt").read_text() == "the user's notes\n"


def test_a_read_only_output_folder_is_named(work, caplog, capsys, monkeypatch):
    folder = work / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anywhere: the refusal the OS would give
        real_mkstemp = tempfile.mkstemp

        def refused(suffix=None, prefix=None, dir=None, **kwargs):
            if Path(dir) == folder:
                name = str(folder / f"{prefix}a1b2c3{suffix}")  # as mkstemp names it
                raise PermissionError(errno.EACCES, "Permission denied", name)
            return real_mkstemp(suffix=suffix, prefix=prefix, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refused)
    outcome = volinr(caplog, capsys, "downsample", "--input", "hr.npy", "--out", folder / "d.npy")
    assert_refused(outcome, folder, folder / "d.npy", "cannot write (Permission denied)")


# --- class 7: output hygiene ----------------------------------------------------------------


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_device(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can make a device node")
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null


def make_link(path: Path) -> None:
    path.symlink_to(Path("notes.txt").resolve())


@pytest.mark.parametrize(
    "make, kind",
    [(make_fifo, "a FIFO"), (make_device, "a character device"), (make_link, "a symbolic link")],
    ids=["fifo", "device", "symlink"],
)
def test_a_non_regular_file_at_the_output_path_is_refused_and_kept(
    work, caplog, capsys, make, kind
):
    out = work / "out"
    out.mkdir()
    make(out / "d.npy")
    before = (out / "d.npy").lstat()
    outcome = volinr(caplog, capsys, "downsample", "--input", "hr.npy", "--out", "out/d.npy")
    code, message = outcome
    assert code == 2 and f"out/d.npy: the output path is {kind}" in message
    after = (out / "d.npy").lstat()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert leftovers(out) == ["d.npy"] and Path("notes.txt").read_text() == "the user's notes\n"


def disk_full_at(monkeypatch, name: str) -> None:
    """The disk fills up when the output ``name`` (a file or a folder) is being written."""
    for function in ("mkstemp", "mkdtemp"):
        real = getattr(tempfile, function)

        def full(*args, prefix=None, _real=real, **kwargs):
            if prefix == f".{name}.":
                raise OSError(errno.ENOSPC, "No space left on device", f"{prefix}tmp")
            return _real(*args, prefix=prefix, **kwargs)

        monkeypatch.setattr(tempfile, function, full)


STAGES = {
    "fit": (["fit", *FIT_DEFAULTS], "w.json"),
    "decode": (["decode", "--weights", "w.pt", "--out", "out/d.npy"], "d.json"),
    "prepare-volume": (["prepare-volume", "--spec",
                        '{"kind": "phantom", "phantom": {"shape": [8, 16, 16]}}',
                        "--evaluation-slices", "0", "4", "--factor", "2", "--volume-out",
                        "out/v.npy", "--out", "out/s.npy"], "s.json"),
    "sr-dataset": (["sr-dataset", "--eval", "hr.npy", "--volume", "vol.npy", "--out",
                    "out/t.npz", "--split", "out/s.json"], "s.json"),
    "evaluate-per-slice": (["evaluate", "--reference", "vol.npy", "--reconstruction", "vol.npy",
                            "--label", "{}", "--per-slice", "out/p.csv", "--out", "out/e.json"],
                           "e.json"),
    "export": (["export", "--reconstruction", "vol.npy", "--geometry", "vol.json",
                "--description", "x", "--nifti", "out/v.nii.gz", "--dicom", "out/dcm"], "dcm"),
}  # fmt: skip


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_full_disk_leaves_none_of_a_stages_outputs(work, weights, caplog, capsys, monkeypatch,
                                                     stage):  # fmt: skip
    command, last = STAGES[stage]
    disk_full_at(monkeypatch, last)
    outcome = volinr(caplog, capsys, *command)
    assert_refused(outcome, work / "out", f"out/{last}: cannot write (No space left on device)")


def test_a_failed_rerun_keeps_the_earlier_complete_outputs(work, caplog, capsys, monkeypatch):
    assert fit(caplog, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in Path("out").iterdir()}
    disk_full_at(monkeypatch, "w.json")
    code, message = fit(caplog, capsys, "--seed", "1")
    assert code == 2 and "out/w.json: cannot write" in message
    assert {p.name: p.read_bytes() for p in Path("out").iterdir()} == before


SLOW_WRITE = """
import signal, sys, time
import numpy as np
from volinr.cli import main

# as when started from a terminal: a test run launched in the background of a shell without job
# control inherits an ignored SIGINT (POSIX), and then no Ctrl-C could reach the command
signal.signal(signal.SIGINT, signal.default_int_handler)

real_save = np.save


def slow_save(handle, array, **kwargs):  # a large write: half of it, then a pause
    handle.write(b"x" * 4096)
    handle.flush()
    print("writing", file=sys.stderr, flush=True)
    time.sleep(60)
    real_save(handle, array, **kwargs)


np.save = slow_save
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "signum, status, line",
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
    ids=["sigterm", "ctrl-c"],
)
def test_a_signal_during_a_write_exits_with_one_line_and_cleans_up(work, signum, status, line):
    env = dict(
        os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, "downsample", "--input", "hr.npy", "--out",
         "out/d.npy"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while "writing" not in process.stderr.readline():
        assert time.monotonic() < deadline and process.poll() is None, "never started writing"
    assert [p.name for p in (work / "out").iterdir()][0].endswith(".tmp")  # mid-write
    process.send_signal(signum)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == status, rest
    errors = [text for text in rest.splitlines() if text.strip()]
    assert len(errors) == 1 and line in errors[0] and "Traceback" not in rest, rest
    assert leftovers(work / "out") == []
