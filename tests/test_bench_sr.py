import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from volinr.io import read_json
from volinr.models import SRDenseNet
from volinr.super_resolution import default_execution, resolve_execution, super_resolve
from volinr.tools.bench_sr import DEFAULT_MODEL, run_sr_benchmark, write_sr_results

ROOT = Path(__file__).resolve().parents[1]
TINY = {"blocks": 1, "layers_per_block": 2, "growth": 4, "bottleneck": 8, "global_residual": True}


def test_the_benchmark_measures_the_pipelines_model():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    assert config["sr"]["model"] == DEFAULT_MODEL


def test_sr_benchmark_table_has_every_variant_with_finite_values(tmp_path):
    table = run_sr_benchmark("cpu", steps=2, patch=6, batch=2, slice_size=32, model_config=TINY)
    assert list(table["variant"]) == [
        "fp32_contiguous",
        "fp32_channels_last",
        "bf16_autocast_channels_last",
    ]
    assert list(table["device_default"]) == [False, True, False]
    assert table["slice"].iloc[0] == "8x8 -> 32x32"
    timed = ["train_seconds_per_step", "train_steps_per_second", "infer_seconds_per_slice",
             "train_last_l1", "peak_memory_mb", "max_abs_diff_vs_fp32_contiguous"]  # fmt: skip
    assert np.isfinite(table[timed].to_numpy(float)).all()
    assert (table[["train_steps_per_second", "infer_seconds_per_slice"]] > 0).all().all()
    psnr = table.set_index("variant")["psnr_vs_fp32_contiguous_db"]
    assert psnr["fp32_contiguous"] == math.inf  # the reference itself
    # float32 in another layout agrees closely; bfloat16 (8 significant bits) less so.
    assert 60 < psnr["fp32_channels_last"] and 20 < psnr["bf16_autocast_channels_last"] < 90
    assert psnr["bf16_autocast_channels_last"] < psnr["fp32_channels_last"]
    meta = {"device": "CPU", "torch": "x", "git_commit": "abc", "command": "test",
            "inference_weights": "seeded random"}  # fmt: skip
    write_sr_results(table, meta, tmp_path, "sr_bench")
    text = (tmp_path / "sr_bench.json").read_text()
    assert "Infinity" not in text and "NaN" not in text  # strict JSON
    rows = json.loads(text)["rows"]
    assert [r["variant"] for r in rows] == list(table["variant"])
    assert rows[0]["psnr_vs_fp32_contiguous_db"] is None
    assert (
        read_json(tmp_path / "sr_bench.json")["rows"][0]["psnr_vs_fp32_contiguous_db"] == math.inf
    )
    text = (tmp_path / "sr_bench.md").read_text()
    assert "fp32_channels_last" in text and "getrusage" in text
    table.loc[1, "infer_seconds_per_slice"] = math.nan
    with pytest.raises(FloatingPointError, match="infer_seconds_per_slice"):
        write_sr_results(table, meta, tmp_path, "bad")
    assert not (tmp_path / "bad.json").exists()


def test_execution_defaults_per_device_type():
    assert default_execution("cpu").channels_last and default_execution("cpu").precision == (
        "float32"
    )
    assert default_execution("cuda").precision == "float16"
    with pytest.raises(ValueError, match="float16 autocast is for CUDA"):
        resolve_execution("cpu", precision="float16")
    with pytest.raises(ValueError, match="precision"):
        resolve_execution("cpu", precision="int8")


def test_inference_layouts_agree_and_leave_the_model_as_it_was(rng):
    torch.manual_seed(0)
    model = SRDenseNet(**TINY).eval()
    torch.nn.init.normal_(model.reconstruction.weight, std=0.1)
    lr = rng.normal(0, 100, size=(20, 16)).astype(np.float32)
    contiguous = super_resolve(model, lr, channels_last=False)
    channels_last = super_resolve(model, lr, channels_last=True)
    bf16 = super_resolve(model, lr, precision="bfloat16")
    np.testing.assert_allclose(channels_last, contiguous, atol=1e-3)
    assert not np.array_equal(bf16, contiguous)
    np.testing.assert_allclose(bf16, contiguous, atol=0.02 * np.ptp(contiguous))
    assert bf16.dtype == np.float32
    assert all(p.is_contiguous() for p in model.parameters())
