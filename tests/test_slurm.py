"""A suite of two datasets over the tiny workflow (.test/config_slurm/: one job of each kind)
through profiles/slurm on a real single-node SLURM cluster: one job per dataset's rule, the
suite's tables at the end.

Skipped, with the reason, where SLURM cannot run (not installed, not root, or a SLURM of the
machine's own at /etc/slurm). `.ci/run` installs it from Debian's packages.
"""

import json
import re
import subprocess

import numpy as np
import pytest
import torch

from conftest import ROOT, SNAKEMAKE, workflow_env
from slurm_cluster import job_records, slurm_cluster, unavailable_reason

REASON = unavailable_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REASON is not None, reason=f"no test SLURM cluster: {REASON}"),
]
# Without slurmdbd the plugin must poll squeue (sacct would hang) and submit without an
# account; short polling intervals keep the test quick.
TEST_CLUSTER_ARGS = [
    "--seconds-between-status-checks",
    "3",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
]


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm")
    workdir, cluster = base / "work", base / "cluster"
    workdir.mkdir()
    cluster.mkdir()
    with slurm_cluster(cluster) as env:
        env = {
            **workflow_env(),
            **env,
            "VOLINR_SLURM_CPU_PARTITION": "cpu",
            "VOLINR_SLURM_GPU_PARTITION": "gpu",
            "VOLINR_SLURM_ACCOUNT": "",
        }
        command = [
            "timeout",
            "-s",
            "INT",
            "1500",
            *SNAKEMAKE,
            "--directory",
            str(workdir),
            "--configfile",
            str(ROOT / ".test/config/config.yaml"),
            str(ROOT / ".test/config_slurm/config.yaml"),
            "--profile",
            str(ROOT / "profiles/slurm"),
            *TEST_CLUSTER_ARGS,
        ]
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr[-4000:]
        gpu_jobs = [r["JobId"] for r in job_records(cluster) if r.get("Partition") == "gpu"]
        shown = {
            job: subprocess.run(
                ["scontrol", "show", "job", job], env=env, capture_output=True, text=True
            ).stdout
            for job in gpu_jobs
        }
    steps = re.findall(r"(\d+) of \1 steps \(100%\) done", run.stderr)
    return workdir / "results", job_records(cluster), shown, int(steps[-1])


def test_every_job_went_through_slurm_and_completed(slurm_run):
    _, records, _, steps = slurm_run
    # Every job but the local `all` target is a SLURM job with a completion record.
    assert len(records) == steps - 1
    assert {r["JobState"] for r in records} == {"COMPLETED"}
    partitions = {r["Partition"] for r in records}
    assert partitions == {"cpu", "gpu"}


def test_gpu_requests_reach_slurm(slurm_run):
    _, records, shown, _ = slurm_run
    assert len(shown) == 3  # SR pretraining, the SIREN fit, its decoding with SR
    for job, text in shown.items():
        assert "TresPerJob=gres:gpu:1" in text, f"job {job} did not ask for a GPU:\n{text}"


def _state(path):
    payload = torch.load(path, weights_only=True)
    return payload["state_dict"]


def test_the_suite_fanned_out_one_job_per_dataset_rule(slurm_run):
    results, records, _, steps = slurm_run
    # each dataset's groups ran as their own jobs (every step but `all` is a SLURM job)
    for dataset in ("head", "abdomen"):
        assert (results / f"suite/{dataset}/rd/classical/jpeg2000.json").is_file(), dataset
    assert list((results / "suite/head/rd/siren_lr_sr").glob("*.json"))
    assert len(records) == steps - 1
    assert (results / "suite/tables/suite_bd_rate_mean.csv").is_file()
    assert (results / "suite/summary.md").read_text().startswith("# Suite verdict over 2")


def test_outputs_equal_those_of_a_local_run(slurm_run, tiny_run):
    """The suite's head dataset is a subset of the tiny config's jobs, each unchanged: the same
    outputs, to the bit."""
    remote = slurm_run[0] / "suite/head"
    for name in ("data/eval.json", "data/lr.json", "data/split.json"):
        local_json = json.loads((tiny_run / name).read_text())
        remote_json = json.loads((remote / name).read_text())
        local_json.pop("provenance", None)  # names its own output path and commit
        remote_json.pop("provenance", None)
        assert local_json == remote_json, name
    weights = sorted(remote.glob("fits/*/*/siren.pt")) + [remote / "sr/srdensenet.pt"]
    assert len(weights) == 2  # the 2-layer fit of the LR image, the SR model
    for other in weights:
        local = tiny_run / other.relative_to(remote)
        for (key, a), b in zip(_state(local).items(), _state(other).values(), strict=True):
            assert torch.equal(a, b), f"{other.relative_to(remote)}: {key} differs"
    metrics_files = sorted(remote.glob("rd/*/*.json"))
    assert len(metrics_files) == 2  # jpeg2000, siren_lr_sr L2
    for metrics in metrics_files:
        remote_rows = json.loads(metrics.read_text())["rows"]
        local_rows = json.loads((tiny_run / metrics.relative_to(remote)).read_text())["rows"]
        for local_m, remote_m in zip(local_rows, remote_rows, strict=True):
            for key in ("psnr_8bit_minmax_db", "psnr_8bit_tissue_db", "psnr_native_db", "ssim"):
                a, b = local_m[key], remote_m[key]
                same = a == b or np.isclose(a, b, rtol=0, atol=1e-9)  # None: lossless
                assert same, (metrics, local_m["point"], key)
