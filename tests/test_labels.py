"""Every label says what its number counts: the ablation's true-LR rows name the lossless codec
whose bytes give their bits per voxel, the notes and captions say the same, a figure titled
with a PSNR shows that image's PSNR (not the mean over seeds), and the summary's verdict
against JPEG 2000 counts only the settings it could compare."""

import logging
import math

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from volinr.cli import build_parser, main
from volinr.io import read_json, save_array, write_json
from volinr.report import figure_common, paper_figures
from volinr.report.paper_tables import build_tables
from volinr.report.summary import _versus_jpeg2000_lines
from volinr.report.table_io import RATE_NOTE, load_metrics, load_published

PUBLISHED = "config/published.yaml"


@pytest.fixture
def reference_records(tmp_path, rng, caplog):
    """The three true-LR evaluations of a 64x64 image, through `volinr evaluate`."""
    y, x = np.mgrid[:64, :64]
    image = (600 * np.sin(x / 7.0) * np.cos(y / 5.0) + rng.normal(0, 30, (64, 64))).astype(np.int16)
    save_array(tmp_path / "eval.npy", image, {"units": "HU"})
    save_array(tmp_path / "lr.npy", image[::4, ::4].copy(), {"units": "HU"})
    noisy = image + rng.normal(0, 40, image.shape).astype(np.float32)
    save_array(tmp_path / "up.npy", noisy, {"units": "HU"})
    paths = []
    for method in ("sr", "lanczos", "bicubic"):
        out = tmp_path / f"reference_{method}.json"
        with caplog.at_level(logging.INFO):
            code = main(
                ["evaluate", "--reference", str(tmp_path / "eval.npy"), "--reconstruction",
                 str(tmp_path / "up.npy"), "--label", f'{{"method": "true LR + {method}"}}',
                 "--stored-array", str(tmp_path / "lr.npy"), "--out", str(out)]
            )  # fmt: skip
        assert code == 0
        paths.append(out)
    return paths


def _fits(folder):
    """Ours and baseline records (two layer counts, one seed) beside the reference ones."""
    paths = []
    for method in ("ours", "baseline"):
        for layers in (2, 3):
            record = {
                "method": method, "layers": layers, "seed": 0, "psnr_8bit_minmax_db": 30.0,
                "psnr_8bit_tissue_db": 30.0, "psnr_native_db": 30.0, "ssim": 0.9,
                "parameter_count": 100, "iterations": 10, "fit_best_psnr_db": 40.0,
                "fit_final_loss": 1e-4, "train_seconds": 5.0,
                "seconds_per_50k_iterations_extrapolated": 2500.0, "peak_memory_kb": 900.0,
                "memory_kind": "cpu_peak_rss_increase", "device": "CPU",
                "compression_rate_paper": 3.6, "compression_rate_16bit": 7.2,
                "compression_rate_16bit_with_sr": 0.5, "bits_per_voxel": 2.2,
                "window_minmax": [-1000, 1000], "window_tissue": [-1000, 1000],
            }  # fmt: skip
            write_json(folder / f"{method}_{layers}.json", record)
            paths.append(folder / f"{method}_{layers}.json")
    return paths


def test_the_ablation_names_the_codec_whose_bytes_it_counts(tmp_path, reference_records):
    """Before: 'true LR + sr (LR stored raw at 16 bits, no SIREN)' beside the bits per voxel
    of the smallest lossless codec (0.312 on the default slice; raw would be 1.0)."""
    metrics = load_metrics(_fits(tmp_path) + reference_records)
    ablation = build_tables(metrics, load_published(PUBLISHED))["table_ablation"]
    for path in reference_records:
        record = read_json(path)
        codec = record["stored_codec"]
        assert f"({codec}, the smallest)" in record["stored_what"]
        row = ablation[ablation["pipeline"].str.startswith(record["method"] + " (")].iloc[0]
        assert row["pipeline"] == f"{record['method']} (LR coded losslessly by {codec}, no SIREN)"
        assert row["bits_per_voxel"] == pytest.approx(8 * record["stored_bytes"] / 64**2)
        raw_bits = 16 * 16**2 / 64**2  # the 16x16 LR at 2 bytes a voxel: 1.0
        assert row["bits_per_voxel"] != pytest.approx(raw_bits)
    assert not ablation["pipeline"].str.contains("raw").any()


def test_the_sr_check_names_the_codec_too(tmp_path, reference_records):
    metrics = load_metrics(_fits(tmp_path) + reference_records)
    sr = build_tables(metrics, load_published(PUBLISHED))["table_sr_check"]
    codecs = {read_json(p)["method"]: read_json(p)["stored_codec"] for p in reference_records}
    assert dict(zip(sr["method"], sr["lr_coded_losslessly_by"], strict=True)) == codecs


def test_notes_captions_and_help_say_lossless_not_raw():
    assert "lossless" in RATE_NOTE and "weights file's bytes / voxels" not in RATE_NOTE
    for name in ("table_ablation", "table_sr_check"):
        caption = (ROOT / f"workflow/report/{name}.rst").read_text()
        assert "losslessly" in caption and "raw" not in caption
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    help_text = next(a.help for a in evaluate._actions if a.dest == "stored_array")
    assert "lossless" in help_text and "raw" not in help_text


def test_a_figure_titles_its_image_with_that_images_psnr(tmp_path, monkeypatch):
    """Before: the seed shown was titled with the mean PSNR over all seeds (Table 4's)."""
    results = tmp_path / "results"
    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    save_array(results / "data/eval.npy", image, {})
    save_array(results / "data/lr.npy", image[::4, ::4].copy(), {})
    for family, psnr in (("siren_lr_sr", 31.0), ("siren_hr", 27.0)):
        # the method group of the seed shown: its float32 point is the paper's reconstruction
        save_array(results / f"rd/{family}/L2_s1/float32.npy", image, {})
        rows = [{"point": "q8"}, {"point": "float32", "paper_view": {"psnr_8bit_minmax_db": psnr}}]
        write_json(results / f"rd/{family}/L2_s1.json", {"rows": rows})
    save_array(results / "rd/siren_lr_sr/L2_s1/float32.lr.npy", image[::4, ::4].copy(), {})
    tables = tmp_path / "tables"
    tables.mkdir()
    mean = pd.DataFrame({"layers": [2], "best_psnr_db_ours": [35.5]})  # mean over seeds
    mean.to_csv(tables / "table4_ours.csv", index=False)
    mean.to_csv(tables / "table5_baseline.csv", index=False)
    titles = []
    monkeypatch.setattr(
        paper_figures, "show_image", lambda ax, array, window, title: titles.append(title)
    )
    inputs = figure_common.FigureInputs(results, tables, seed=1)
    paper_figures.pipeline_figure(inputs, 2, tmp_path / "pipeline.png")
    assert titles[-1] == "reconstructed HR (SRDenseNet), seed 1: 31.00 dB"
    paper_figures.comparison_figure(inputs, [2], tmp_path / "comparison.png")
    assert "SIREN on HR, 2 layers, seed 1\n27.00 dB" in titles
    assert "ours, 2 layers, seed 1\n31.00 dB" in titles
    assert not any("35.50" in t for t in titles)


def test_the_verdict_against_jpeg2000_counts_only_what_it_compared():
    """Before: 'none of the stored-image methods beats JPEG 2000' counted a setting outside
    JPEG 2000's sweep (n/a) as compared."""
    versus = pd.DataFrame(
        {
            "method": ["a", "b", "c"],
            "setting": ["q8", "q8", "float16"],
            "bits_per_voxel": [0.5, 1.0, 9.0],
            "psnr_8bit_minmax_db": [30.0, 31.0, 32.0],
            "jpeg2000_psnr_at_same_rate_db": [40.0, 29.0, math.nan],
            "gain_over_jpeg2000_db": [-10.0, 2.0, math.nan],
            "jpeg2000_bits_per_voxel_at_same_psnr": [0.1, 1.2, 0.2],
            "size_vs_jpeg2000_at_same_psnr": [5.0, 1.0 / 1.2, 45.0],
        }
    )
    lines = _versus_jpeg2000_lines(versus)
    verdict = lines[0]
    # each method's best point is shown, the best first
    assert lines[2].splitlines()[2].startswith("| b ")
    assert "1 of the 2 settings with a JPEG 2000 point at their rate" in verdict
    assert "(1 outside its sweep: n/a)" in verdict


def test_true_lr_with_sr_counts_the_sr_model_like_the_containers(tmp_path, reference_records):
    """Before: the 'true LR + sr' rows had no SR-counted rates (n/a beside every SIREN row's)."""
    from volinr.report.rd_tables import rate_distortion_table

    model = tmp_path / "sr.pt"
    model.write_bytes(b"\0" * 4096)
    out = tmp_path / "with_sr.json"
    code = main(
        ["evaluate", "--reference", str(tmp_path / "eval.npy"), "--reconstruction",
         str(tmp_path / "up.npy"), "--label", '{"method": "true LR + sr"}',
         "--stored-array", str(tmp_path / "lr.npy"), "--sr-model", str(model),
         "--sr-amortize-over", "8", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    record = read_json(out)
    stored = record["stored_bytes"]
    assert record["bits_per_voxel_with_sr"] == pytest.approx(8 * (stored + 4096) / 64**2)
    assert record["bits_per_voxel_with_sr_amortized"] == pytest.approx(
        8 * (stored + 4096 / 8) / 64**2
    )
    lanczos = read_json(reference_records[1])  # no SR model: nothing added
    assert lanczos["bits_per_voxel_with_sr"] == lanczos["bits_per_voxel"]
    # the evaluate record as a method group's point of the true-LR kind
    points = load_metrics([out]).assign(kind="lr + upsampling", setting="")
    table = rate_distortion_table(points, None)
    assert (
        table["method"].iloc[0] == f"true LR + sr (LR coded losslessly by {record['stored_codec']})"
    )
    assert table["bits_per_voxel_with_sr"].iloc[0] == pytest.approx(
        record["bits_per_voxel_with_sr"]
    )
