import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from loopback_server import server  # noqa: F401  (a fixture: a local HTTP server)

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow/Snakefile")]


# CI has 2 cores; keep tests from oversubscribing them. Set at import too: module-scoped
# fixtures are built before the function-scoped one below runs, and a codec file coded with
# two threads differs from one coded with one (a test run alone saw its fixture's bytes differ).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def workflow_env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_workflow(workdir: Path, configfile: str, *extra: str) -> Path:
    """The whole DAG of a config in ``workdir``, as a user would run it; its results folder."""
    command = SNAKEMAKE + [
        "--directory",
        str(workdir),
        "--configfile",
        str(ROOT / configfile),
        "--cores",
        "2",
        "--resources",
        "gpu=1",
        *extra,
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=workflow_env(), timeout=900)
    if run.returncode != 0:
        logs = "\n".join(
            p.read_text()[-2000:]
            for p in (workdir / "results/logs").rglob("*.log")
            if "Error" in p.read_text()
        )
        pytest.fail(f"workflow failed:\n{run.stderr[-4000:]}\n{logs}")
    return workdir / "results"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return run_workflow(tmp_path_factory.mktemp("tiny"), ".test/config/config.yaml")


@pytest.fixture(scope="session")
def volume_run(tmp_path_factory):
    return run_workflow(tmp_path_factory.mktemp("volume"), ".test/config_volume/config.yaml")
