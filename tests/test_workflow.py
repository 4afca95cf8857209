"""The whole DAG on the tiny config, in a temporary folder, as a user would run it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, SNAKEMAKE, run_workflow, workflow_env
from volinr.metrics import psnr_native


@pytest.mark.slow
def test_every_table_has_finite_values_and_the_expected_rows(tiny_run):
    tables = tiny_run / "tables"
    table4 = pd.read_csv(tables / "table4_ours.csv")
    table5 = pd.read_csv(tables / "table5_baseline.csv")
    for table in (table4, table5):
        assert list(table["layers"]) == [2, 3]
        for column in (
            "best_psnr_db_paper",
            "best_psnr_db_ours",
            "best_psnr_diff_db",
            "train_seconds_ours",
            "memory_kb_ours",
            "ssim_ours",
            "compression_rate_ours_paper_convention",
            "bits_per_voxel_ours",
        ):
            assert np.isfinite(table[column]).all(), column
    assert list(table4["best_psnr_db_paper"]) == [34.670, 34.865]
    assert list(table5["best_psnr_db_paper"]) == [25.269, 28.800]
    table6 = pd.read_csv(tables / "table6_side_by_side.csv")
    assert len(table6) == 3 * 2 and np.isfinite(table6["ours_measured"]).all()
    table7 = pd.read_csv(tables / "table7_other_methods.csv")
    assert len(table7) == 2 + 2 * 2
    sr = pd.read_csv(tables / "table_sr_check.csv")
    assert set(sr["method"]) == {"true LR + sr", "true LR + lanczos", "true LR + bicubic"}
    assert np.isfinite(sr["gain_over_bicubic_db"]).all()
    ablation = pd.read_csv(tables / "table_ablation.csv")
    assert len(ablation) == 3 + 2 * 2 and np.isfinite(ablation["bits_per_voxel"]).all()
    for name in ("table4_ours", "table6_side_by_side", "table_ablation"):
        assert "|" in (tables / f"{name}.md").read_text()


@pytest.mark.slow
def test_every_figure_and_the_records_exist(tiny_run):
    figures = {p.name for p in (tiny_run / "figures").glob("*.png")}
    expected = {
        f"fig{k}_L{n}.png" for k in ("4-6_lr_fit", "7-9_pipeline", "10-12_baseline") for n in (2, 3)
    }
    assert (
        expected
        | {
            "fig13_bars.png",
            "fig14_comparison.png",
            "fig_sr_training.png",
            "fig_rate_distortion.png",
        }
        == figures
    )
    split = json.loads((tiny_run / "data/split.json").read_text())
    assert split["evaluation"]["source"] == "pydicom-data:693_UNCR.dcm"
    assert all(r["correlation_with_eval"] < 0.5 for r in split["training"])
    fit = json.loads((tiny_run / "fits/lr/L2_s0/fit.json").read_text())
    assert fit["parameter_count"] == 17153 and fit["weights_bytes"] > 17153 * 4
    assert "Table 6" in (tiny_run / "summary.md").read_text()
    # No temporary files left behind by the atomic writes.
    assert not [p for p in tiny_run.rglob(".*.tmp")]


@pytest.mark.slow
def test_rates_come_from_real_files_that_decompress_to_the_pipelines_image(tiny_run):
    from volinr.cli import main

    for family in ("siren_lr_sr", "siren_hr"):
        container = tiny_run / f"rd/{family}/L2_s0/float32.volinr"
        rows = json.loads((tiny_run / f"rd/{family}/L2_s0.json").read_text())["rows"]
        metrics = next(row for row in rows if row["point"] == "float32")
        size = container.stat().st_size
        assert metrics["container_bytes"] == size
        assert metrics["bits_per_voxel"] == pytest.approx(8 * size / metrics["voxels"], rel=1e-12)
        # `volinr decompress` rebuilds the image from the file alone (and the SR model it
        # names): the very image the method's job evaluated and the figures show
        out = tiny_run.parent / f"decompressed_{family}.npy"
        sr = ["--sr-model", str(tiny_run / "sr/srdensenet.pt")] if family == "siren_lr_sr" else []
        argv = ["decompress", "--container", str(container), "--out", str(out), *sr]
        assert main([*argv, "--threads", "1"]) == 0
        pipeline = np.load(tiny_run / f"rd/{family}/L2_s0/float32.npy")
        np.testing.assert_array_equal(np.load(out), pipeline)
    q8 = tiny_run / "rd/siren_lr_sr/L2_s0/q8.volinr"
    assert q8.stat().st_size < (tiny_run / "rd/siren_lr_sr/L2_s0/float32.volinr").stat().st_size
    table = pd.read_csv(tiny_run / "tables/table_rate_distortion.csv")
    assert {"siren", "lr + upsampling", "codec", "neural codec", "published"} == set(
        table["family"]
    )
    assert {"jpeg2000", "zstd"} <= set(table["method"])
    versus = pd.read_csv(tiny_run / "tables/table_vs_jpeg2000.csv")
    compared = ["siren", "lr + upsampling", "neural codec"]
    assert len(versus) == len(table[table["family"].isin(compared)])
    # the neural codec's file, decoded by `volinr decompress` alone, is the image it measured
    row = json.loads((tiny_run / "rd/neural_codec/lambda0.002.json").read_text())["rows"][0]
    file = tiny_run.parent / row["file"]
    assert row["bytes"] == file.stat().st_size
    out = tiny_run.parent / "decompressed_neural_codec.npy"
    assert main(["decompress", "--container", str(file), "--out", str(out)]) == 0
    original = np.load(tiny_run / "data/eval.npy")
    assert psnr_native(original, np.load(out)) == pytest.approx(row["psnr_native_db"], abs=1e-9)
    assert "Against JPEG 2000" in (tiny_run / "summary.md").read_text()


@pytest.mark.slow
def test_the_report_builds(tiny_run):
    workdir = tiny_run.parent
    command = SNAKEMAKE + [
        "--directory",
        str(workdir),
        "--configfile",
        str(ROOT / ".test/config/config.yaml"),
        "--report",
        "report.html",
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=workflow_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (workdir / "report.html").stat().st_size > 100_000


def test_the_default_and_paper_configs_build_their_dags(tmp_path):
    for extra in ([], ["--configfile", str(ROOT / "config/paper.yaml")]):
        run = subprocess.run(
            SNAKEMAKE
            + ["--directory", str(tmp_path), "-n", "--cores", "4", "--resources", "gpu=1", *extra],
            capture_output=True,
            text=True,
            env=workflow_env(),
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        # the fits of both targets and the figures (rules renamed by the catalog layout)
        assert "fit_siren" in run.stdout and "figures" in run.stdout


def test_a_bad_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("siren:\n  iterations: 0\n")
    run = subprocess.run(
        SNAKEMAKE + ["--directory", str(tmp_path), "-n", "--cores", "1", "--configfile", str(bad)],
        capture_output=True,
        text=True,
        env=workflow_env(),
        timeout=300,
    )
    assert run.returncode != 0 and "iterations" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


SNAKEFMT = shutil.which(
    "snakefmt", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
)


@pytest.mark.skipif(SNAKEFMT is None, reason="snakefmt not installed (pip install -e .[test])")
def test_workflow_is_linted_and_formatted():
    lint = subprocess.run(
        SNAKEMAKE + ["--lint"],
        capture_output=True,
        text=True,
        env=workflow_env(),
        cwd=ROOT,
        timeout=300,
    )
    assert "Lints for" not in lint.stdout + lint.stderr, lint.stdout[-3000:]
    fmt = subprocess.run(
        [SNAKEFMT, "--check", "workflow"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fmt.returncode == 0, fmt.stderr


@pytest.mark.slow
def test_a_suite_runs_each_dataset_as_its_own_run_and_sets_them_side_by_side(tmp_path):
    results = run_workflow(
        tmp_path, ".test/config/config.yaml", "--configfile",
        str(ROOT / ".test/config/config.yaml"), str(ROOT / ".test/config_suite/config.yaml"),
    )  # fmt: skip
    suite = results / "suite"
    assert (suite / "head/tables/table6_side_by_side.csv").is_file()
    # the abdomen is a run of the codecs alone: their tables, no paper tables, and why
    abdomen_run = suite / "abdomen"
    made = {p.stem for p in (abdomen_run / "tables").glob("*.csv")}
    assert {"table_rate_distortion", "table_bd_rate", "table_vs_jpeg2000"} <= made
    assert not made & {"table4_ours", "table6_side_by_side"}
    assert not (abdomen_run / "sr").exists() and not (abdomen_run / "fits").exists()
    families = set(pd.read_csv(abdomen_run / "tables/table_rate_distortion.csv")["family"])
    assert not families & {"siren", "lr + upsampling"}
    assert {"codec", "neural codec"} <= families
    abdomen_summary = (abdomen_run / "summary.md").read_text()
    assert "the paper's tables and figures were not made" in abdomen_summary
    assert "siren_lr_sr, siren_hr, true_lr left out" in abdomen_summary
    head = pd.read_csv(suite / "head/tables/table_rate_distortion.csv")
    abdomen = pd.read_csv(suite / "abdomen/tables/table_rate_distortion.csv")
    assert set(head["bits_per_voxel"]) != set(abdomen["bits_per_voxel"])  # two images
    bd = pd.read_csv(suite / "tables/suite_bd_rate.csv")
    assert set(bd["dataset"]) == {"head", "abdomen"}
    means = pd.read_csv(suite / "tables/suite_bd_rate_mean.csv")
    codec = means[(means["method"] == "neural codec (2D)") & (means["anchor"] == "jpeg2000")]
    assert codec["of_datasets"].iloc[0] == 2
    claims = pd.read_csv(suite / "tables/suite_paper_claim_counts.csv")
    assert set(claims["of_datasets"]) == {1}  # the claim only where the paper's tables exist
    summary = (suite / "summary.md").read_text()
    assert summary.startswith("# Suite verdict over 2 datasets (abdomen, head)")
    assert (suite / "figures/fig_suite_rate_distortion.png").stat().st_size > 10_000
