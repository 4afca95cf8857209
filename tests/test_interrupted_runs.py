"""A workflow killed (SIGKILL, the whole process group) while a `volinr fit` job trains, then
rerun with --rerun-incomplete, ends with the results of an uninterrupted run."""

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import ROOT, SNAKEMAKE, workflow_env

# The baseline's 2-layer fit and its method group (its files, decoded and measured): the
# shortest path through a fit in the tests' config.
FIT = "fits/hr/L2_s0"
METRICS = "rd/siren_hr/L2_s0.json"
# Resume checkpoints every 2 iterations (tiny.yaml's fits write none): one appearing shows
# that the fit is training, and the rerun continues from it. The interval is not a result
# setting, so the default run (`tiny_run`) is the reference. Where `volinr fit` takes no
# --checkpoint-every, the kill lands a moment after the fit's memory check instead (just
# before training) and the rerun starts the fit over.
EXTRA_CONFIG = "siren:\n  checkpoint_every: 2\n"
OUTPUTS = {"siren.pt", "fit.json", "curve.csv"}
TRAINING_LOG_LINE = "estimated working set"
# Quantities that are timings or say where a run happened, not what it computed.
NOT_RESULTS = ("seconds", "memory", "provenance", "device")


def _command(workdir: Path, extra_config: Path, *extra: str) -> list[str]:
    # targets and flags first: --configfile and --resources take every word after them
    return SNAKEMAKE + [
        *extra, "--directory", str(workdir), "--cores", "2", "--resources", "gpu=1",
        "--configfile", str(ROOT / ".test/config/config.yaml"), str(extra_config),
    ]  # fmt: skip


def _group_members(pgid: int) -> dict[int, str]:
    """Live processes of a process group, with their command lines."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ProcessLookupError):
            continue
        if state != "Z":
            members[int(entry.name)] = command
    return members


def _checkpoints(folder: Path) -> list[str]:
    """Files in a fit's folder besides its outputs, their sidecars and temporary files."""
    if not folder.is_dir():
        return []
    return [
        p.name
        for p in folder.iterdir()
        if p.name.split(".provenance")[0] not in OUTPUTS and not p.name.endswith(".tmp")
    ]


def _kill_during_fit(run: subprocess.Popen, results: Path) -> dict:
    """SIGKILL the run's process group while its fit trains; what was seen at the kill."""
    log = results / "logs/fit_siren/hr_L2_s0.log"
    training_since = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if run.poll() is not None:
            pytest.fail(f"the workflow ended (exit {run.returncode}) before the fit was killed")
        fitting = [
            c
            for c in _group_members(run.pid).values()
            if "volinr fit --target" in c and f"{FIT}/siren.pt" in c
        ]
        checkpoints = _checkpoints(results / FIT)
        if fitting and training_since is None and TRAINING_LOG_LINE in _read(log):
            training_since = time.monotonic()
        resumable = any("--checkpoint-every" in c for c in fitting)
        if fitting and (
            checkpoints
            or (not resumable and training_since and time.monotonic() - training_since > 0.3)
        ):
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
            return {"checkpoints": checkpoints, "weights": (results / FIT / "siren.pt").exists()}
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    pytest.fail("the fit neither checkpointed nor trained within 300 s")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _results(group: dict) -> dict:
    """Every operating point's results (and its paper view's), by point and key."""
    found = {}
    for row in group["rows"]:
        for record, prefix in ((row, ""), (row.get("paper_view", {}), "paper view ")):
            for k, v in record.items():
                if not any(word in k for word in NOT_RESULTS) and isinstance(v, int | float | str):
                    found[f"{row['point']}: {prefix}{k}"] = v
    return found


@pytest.mark.slow
def test_a_run_killed_during_a_fit_and_rerun_matches_an_uninterrupted_one(tiny_run, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    extra = tmp_path / "checkpoints.yaml"
    extra.write_text(EXTRA_CONFIG)
    results = workdir / "results"
    run = subprocess.Popen(
        _command(workdir, extra, f"results/{METRICS}"),
        env=workflow_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes snakemake and its jobs
    )
    try:
        seen = _kill_during_fit(run, results)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert not seen["weights"], "the kill landed after the fit had finished"
    for _ in range(100):  # SIGKILL is asynchronous: wait until every member has gone
        if not _group_members(run.pid):
            break
        time.sleep(0.05)
    assert not _group_members(run.pid), "a job outlived the kill of its process group"
    assert not (results / METRICS).exists()

    # The killed snakemake left its lock behind: --unlock, then the rerun.
    for extra_args in (["--unlock"], ["--rerun-incomplete", f"results/{METRICS}"]):
        rerun = subprocess.run(
            _command(workdir, extra, *extra_args),
            env=workflow_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert rerun.returncode == 0, rerun.stderr[-4000:]

    for (key, a), (other, b) in zip(
        _state(tiny_run / FIT / "siren.pt").items(),
        _state(results / FIT / "siren.pt").items(),
        strict=True,
    ):
        assert key == other and torch.equal(a, b), f"{key} differs from the uninterrupted fit"
    reference = pd.read_csv(tiny_run / FIT / "curve.csv")
    pd.testing.assert_frame_equal(pd.read_csv(results / FIT / "curve.csv"), reference)
    expected = _results(json.loads((tiny_run / METRICS).read_text()))
    found = _results(json.loads((results / METRICS).read_text()))
    assert "float32: psnr_8bit_minmax_db" in expected
    assert "float32: paper view fit_best_psnr_db" in expected
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        same = value == found[key] or (
            isinstance(value, float) and math.isnan(value) and math.isnan(found[key])
        )
        assert same, f"{key}: {found[key]} after the kill, {value} uninterrupted"
    slices = METRICS.replace(".json", "/float32.slices.csv")
    pd.testing.assert_frame_equal(pd.read_csv(results / slices), pd.read_csv(tiny_run / slices))
    assert not _checkpoints(results / FIT), "the finished fit left its checkpoint behind"
