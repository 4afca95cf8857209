"""The benchmark scripts in ``benchmarks/`` stay runnable as the package changes: each one
imports, and the speed benchmark's plain-autograd model still computes the codec's loss (it
had gone stale once: its upsampling lacked the per-level filters, and it crashed)."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from volinr.data.phantom import synthetic_head_phantom
from volinr.neural_codec.settings import CodecSettings

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py"))


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their siblings


def test_there_are_benchmark_scripts():
    assert "neural_codec_speed" in SCRIPTS and len(SCRIPTS) >= 10


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_benchmark_script_imports_and_has_a_main(name):
    module = importlib.import_module(name)
    assert callable(getattr(module, "main", None)), f"benchmarks/{name}.py has no main()"
    sys.modules.pop(name, None)


@pytest.mark.parametrize("shape", [(40, 48), (12, 16, 20)])
def test_the_speed_benchmark_times_the_same_model_three_ways(shape):
    """The codec step, its blocked variant and the plain-autograd model give one loss on the
    same latents (the check the benchmark runs before timing), and a step of each runs."""
    speed = importlib.import_module("neural_codec_speed")
    image = synthetic_head_phantom((12, *shape[-2:]) if len(shape) == 2 else shape, seed=0)
    voxels = image.voxels[6] if len(shape) == 2 else image.voxels
    result = speed.training_seconds(voxels, CodecSettings.make(), steps=1)
    assert result["seconds_per_iteration"] > 0
    assert result["plain_autograd_seconds_per_iteration"] > 0


def test_the_speed_benchmarks_check_fails_on_a_different_model():
    """The agreement check is not vacuous: a plain model with another output bias gives another
    loss, and the benchmark refuses to time it."""
    speed = importlib.import_module("neural_codec_speed")
    voxels = synthetic_head_phantom((12, 40, 48), seed=0).voxels[6]
    settings = CodecSettings.make()
    target = torch.from_numpy(((voxels - voxels.min()) / np.ptp(voxels)).astype("float32"))
    trainers = {}
    for name, make in (("codec", speed.LatentCodecModel), ("naive", speed.NaiveModel)):
        torch.manual_seed(0)
        model = make(voxels.shape, settings)
        if name == "naive":
            with torch.no_grad():
                model.output_bias += 0.01  # another model
        trainers[name] = speed.Trainer(model, target, 1e-3, settings, torch.Generator())
    with pytest.raises(SystemExit, match="losses differ"):
        speed.check_same_loss(trainers)
