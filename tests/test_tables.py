import json
import math

import numpy as np
import pandas as pd
import pytest

from volinr.report.paper_tables import build_tables
from volinr.report.table_io import load_published, mean_ci95, notes_for, write_tables

PUBLISHED = "config/published.yaml"


def _metrics(psnr_shift=0.0, seeds=(0, 1)):
    rows = []
    for method in ("ours", "baseline"):
        for layers in (2, 3):
            for seed in seeds:
                rows.append(
                    {
                        "method": method,
                        "layers": layers,
                        "seed": seed,
                        "psnr_8bit_minmax_db": 30 + layers + seed + psnr_shift,
                        "psnr_8bit_tissue_db": 25.0,
                        "psnr_native_db": 28.0,
                        "ssim": 0.9,
                        "parameter_count": {2: 17153, 3: 33665}[layers],
                        "iterations": 100,
                        "fit_best_psnr_db": 40.0,
                        "fit_final_loss": 1e-4,
                        "train_seconds": 5.0,
                        "seconds_per_50k_iterations_extrapolated": 2500.0,
                        "peak_memory_kb": 900.0,
                        "memory_kind": "cpu_peak_rss_increase",
                        "device": "CPU",
                        "compression_rate_paper": 3.6,
                        "compression_rate_16bit": 7.2,
                        "compression_rate_16bit_with_sr": 0.5,
                        "bits_per_voxel": 2.2,
                        "window_minmax": [-3024, 1468],
                        "window_tissue": [-1024, 1468],
                    }
                )
    for method in ("sr", "lanczos", "bicubic"):
        rows.append(
            {
                "method": f"true LR + {method}",
                "ssim": 0.95,
                "psnr_8bit_minmax_db": {"sr": 33.0, "lanczos": 32.5, "bicubic": 32.2}[method],
                "psnr_8bit_tissue_db": 28.0,
                "psnr_native_db": 30.0,
            }
        )
    return pd.DataFrame(rows)


def test_tables_put_the_paper_beside_ours(tmp_path):
    published = load_published(PUBLISHED)
    tables = build_tables(_metrics(), published)
    table4 = tables["table4_ours"]
    assert list(table4["layers"]) == [2, 3]
    assert list(table4["best_psnr_db_paper"]) == [34.670, 34.865]
    assert list(table4["best_psnr_db_ours"]) == [32.5, 33.5]  # mean over the two seeds
    np.testing.assert_allclose(table4["best_psnr_diff_db"], [32.5 - 34.670, 33.5 - 34.865])
    assert table4["best_psnr_ci95_db"].iloc[0] == pytest.approx(12.706 * 0.5, rel=1e-3)
    assert list(tables["table5_baseline"]["best_psnr_db_paper"]) == [25.269, 28.800]
    table6 = tables["table6_side_by_side"]
    assert len(table6) == 6 and table6["paper_says_ours_better"].all()
    assert not table6.loc[table6["quantity"].str.contains("PSNR"), "we_find_ours_better"].any()
    table7 = tables["table7_other_methods"]
    assert "Shen et al. 2016 (stacked autoencoder)" in set(table7["method"])
    sr = tables["table_sr_check"].set_index("method")
    assert sr.loc["true LR + sr", "gain_over_bicubic_db"] == pytest.approx(0.8)
    write_tables(tables, notes_for(_metrics()), tmp_path)
    text = (tmp_path / "table4_ours.md").read_text()
    assert "min..max window" in text and "34.67" in text


def test_non_finite_results_never_reach_a_table():
    metrics = _metrics()
    metrics.loc[0, "psnr_8bit_minmax_db"] = math.nan
    with pytest.raises(FloatingPointError, match="best_psnr_db_ours"):
        build_tables(metrics, load_published(PUBLISHED))


def test_mean_ci95():
    assert mean_ci95([1.0])[0] == 1.0 and math.isnan(mean_ci95([1.0])[1])
    mean, half, n = mean_ci95([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.303 * 1 / 3**0.5, rel=1e-3)


def test_versus_codec_interpolates_in_log_rate_and_knows_lossless():
    from volinr.report.rd_tables import versus_codec

    def row(method, setting, family, bits, psnr):
        return {
            "method": method,
            "setting": setting,
            "family": family,
            "bits_per_voxel": bits,
            "bits_per_voxel_with_sr_amortized": bits * 1.5,
            "psnr_8bit_minmax_db": psnr,
            "ssim": 0.9,
        }

    table = pd.DataFrame(
        [
            row("jpeg2000", "40", "codec", 0.01, 20.0),
            row("jpeg2000", "60", "codec", 0.1, 40.0),
            row("jpeg2000", "80", "codec", 1.0, 60.0),
            row("jpeg2000", "lossless", "codec", 3.0, math.inf),
            row("SIREN", "q8", "siren", math.sqrt(0.01 * 0.1), 35.0),  # halfway in log rate
            row("SIREN", "float32", "siren", 4.0, 50.0),
            row("published: SIREN", "published", "published", 0.5, 30.0),
        ]
    )
    versus = versus_codec(table).set_index("setting")
    assert set(versus.index) == {"q8", "float32"}  # codecs and published rows are not compared
    assert versus.loc["q8", "jpeg2000_psnr_at_same_rate_db"] == pytest.approx(30.0)
    assert versus.loc["q8", "gain_over_jpeg2000_db"] == pytest.approx(5.0)
    # 35 dB is three quarters of the way from 0.01 to 0.1 in log rate: 10 ** -1.25
    assert versus.loc["q8", "jpeg2000_bits_per_voxel_at_same_psnr"] == pytest.approx(0.1**1.25)
    assert versus.loc["float32", "jpeg2000_psnr_at_same_rate_db"] == math.inf  # above lossless


def test_a_run_of_the_codecs_alone_writes_its_comparisons_empty_and_summarises_them(tmp_path):
    """A run of classical codecs only (one codec, even) compares no method with them: the
    comparison tables are written with their header and the summary says so (a SLURM test
    run of this kind once ended in an EmptyDataError at the summary)."""
    from volinr.report.rd_tables import versus_best_anchor, versus_codec
    from volinr.report.summary import _rate_distortion_lines

    table = pd.DataFrame(
        [
            {"method": "jpeg2000", "setting": str(q), "family": "codec", "bits_per_voxel": b,
             "psnr_8bit_minmax_db": db, "ssim": 0.9}
            for q, b, db in ((40, 0.01, 20.0), (60, 0.1, 40.0), (80, 1.0, 60.0))
        ]
    )  # fmt: skip
    for name, built in (
        ("table_vs_jpeg2000", versus_codec(table)),
        ("table_vs_best_anchor", versus_best_anchor(table)),
    ):
        assert built.empty and "size_vs_" in " ".join(built.columns)
        built.to_csv(tmp_path / f"{name}.csv", index=False)
        assert len(pd.read_csv(tmp_path / f"{name}.csv").columns) == len(built.columns)
    lines = _rate_distortion_lines(tmp_path)
    assert "nothing is compared with JPEG 2000" in lines[0]


def test_each_methods_counts_is_a_note_and_its_style_comes_from_its_class():
    from volinr import methods
    from volinr.report import rd_figure, rd_tables

    classical, codec = methods.family("classical"), methods.family("neural_codec")
    points = pd.DataFrame(
        [
            {"family": "classical", "what_bytes_count": classical.counts},
            {"family": "classical", "what_bytes_count": classical.counts},
            {"family": "neural_codec", "what_bytes_count": codec.counts},
        ]
    )
    assert rd_tables.counts_notes(points) == [
        f"Bytes of classical: {classical.counts}.",
        f"Bytes of neural_codec: {codec.counts}.",
    ]
    styles = rd_figure.method_styles()
    assert styles["neural codec"] is codec and styles["neural codec"].joined
    assert styles["codec"].marker == "." and not styles["codec"].joined


def test_a_margin_within_the_machines_spread_or_the_seeds_interval_is_not_resolved():
    from volinr.report.paper_tables import side_by_side

    def method(psnrs, intervals):
        return pd.DataFrame(
            {
                "layers": [2, 3, 4],
                "best_psnr_db_paper": [30.0, 31.0, 32.0],
                "best_psnr_db_ours": psnrs,
                "best_psnr_ci95_db": intervals,
                "train_seconds_per_50k_paper": [1.0] * 3,
                "train_seconds_per_50k_ours": [1.0] * 3,
                "memory_kb_paper": [1.0] * 3,
                "memory_kb_ours": [1.0] * 3,
            }
        )

    ours = method([35.3, 36.0, 37.0], [math.nan, math.nan, 1.0])
    baseline = method([35.0, 35.0, 36.0], [math.nan, math.nan, 1.0])
    table = side_by_side(ours, baseline, verdict_margin_db=0.5)
    psnr = table[table["quantity"].str.contains("PSNR")].set_index("layers")
    assert psnr.loc[2, "verdict"] == "not resolved"  # 0.3 dB < 0.5 dB
    assert psnr.loc[3, "verdict"] == "ours better"  # 1.0 dB, no interval
    assert psnr.loc[4, "verdict"] == "not resolved"  # 1.0 dB < sqrt(1 + 1)
    assert psnr.loc[4, "resolution_db"] == pytest.approx(math.sqrt(2))
    assert side_by_side(ours, baseline, 0.2).set_index("layers").loc[2, "verdict"].iloc[0] == (
        "ours better"
    )


def test_rows_measured_on_two_images_are_never_set_side_by_side(tmp_path):
    from volinr.errors import InputError
    from volinr.report.table_io import load_rows

    row = {"method": "zstd", "family": "classical", "kind": "codec", "setting": "lossless",
           "bits_per_voxel": 1.0, "psnr_8bit_minmax_db": 40.0}  # fmt: skip
    for name, fingerprint in (("a", "1" * 64), ("b", "2" * 64), ("c", "1" * 64)):
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"image_sha256": fingerprint, "rows": [row]})
        )
    assert len(load_rows([tmp_path / "a.json", tmp_path / "c.json"])) == 2
    with pytest.raises(InputError, match=r"b\.json: its rows were measured on another image"):
        load_rows([tmp_path / "a.json", tmp_path / "b.json"])


def test_records_without_the_fields_the_tables_read_are_named_with_their_file(tmp_path):
    from volinr.errors import InputError
    from volinr.report.table_io import load_metrics, load_rows

    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"rows": [{"method": "x", "family": "classical"}]}))
    with pytest.raises(InputError, match=r"rows\.json: a record without kind"):
        load_rows([rows])
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"method": "ours", "psnr_8bit_minmax_db": 30}))
    with pytest.raises(InputError, match=r"m\.json: a record without layers, seed"):
        load_metrics([metrics])


def test_a_replicate_runs_interval_is_quoted_and_widens_a_verdict_only_on_its_own_image(
    tmp_path,
):
    from volinr.errors import InputError
    from volinr.io import read_json
    from volinr.report.replicates import load_reference, quote_reference, reference_from_rows
    from volinr.report.table_io import settings_fingerprint

    def SETTINGS(seeds, learning_rate=1.5e-3):  # noqa: N802
        return {"siren": {"seeds": seeds, "learning_rate": learning_rate}}

    # a replicate run's rd files: three seeds, ours 1 dB above the baseline, seeds 2 dB apart
    image = "a" * 64
    paths = []
    for method in ("ours", "baseline"):
        for seed in (0, 1, 2):
            view = {"method": method, "layers": 2, "seed": seed, "iterations": 100,
                    "parameter_count": 17153,
                    "psnr_8bit_minmax_db": 30.0 + (method == "ours") + 2.0 * seed}  # fmt: skip
            path = tmp_path / f"{method}_s{seed}.json"
            provenance = {"git_commit": "abc", "config": {"settings": SETTINGS(seeds=[0, 1, 2])}}
            path.write_text(json.dumps({"image_sha256": image, "rows": [{"paper_view": view}],
                                        "provenance": provenance}))  # fmt: skip
            paths.append(path)
    out = tmp_path / "reference.json"
    out.write_text(json.dumps(reference_from_rows(paths)))
    reference = load_reference(out)
    assert set(reference["seeds"]) == {3}
    expected_half = 4.303 * 2.0 / math.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
    assert reference["ci95_db"].iloc[0] == pytest.approx(expected_half, rel=1e-3)

    # this run: seed 0 alone, the same image and iterations, ours 1 dB better: beyond the
    # 0.5 dB spread but within the seeds' interval, so not resolved
    metrics = _metrics(seeds=(0,))
    metrics["image_sha256"] = image
    # the one-seed run's settings: the same but for its seeds
    metrics["settings_sha256"] = settings_fingerprint(
        {"provenance": {"config": {"settings": SETTINGS(seeds=[0])}}}
    )
    metrics = metrics[metrics["layers"].isna() | (metrics["layers"] == 2)]
    metrics.loc[metrics["method"] == "ours", "psnr_8bit_minmax_db"] += 1.0
    table6 = build_tables(metrics, load_published(PUBLISHED))["table6_side_by_side"]
    assert table6.loc[0, "verdict"] == "ours better"
    quoted, notes = quote_reference(table6, metrics, reference, 0.5)
    assert quoted.loc[0, "verdict"] == "not resolved"
    assert quoted.loc[0, "ours_replicates_ci95_db"] == pytest.approx(expected_half, rel=1e-3)
    assert quoted.loc[0, "resolution_db"] == pytest.approx(expected_half * math.sqrt(2), 1e-3)
    assert "replicate run" in notes[0]

    # other settings (a learning rate): not used, and the note says why
    other = metrics.assign(settings_sha256=settings_fingerprint(
        {"provenance": {"config": {"settings": SETTINGS(seeds=[0], learning_rate=1e-3)}}}
    ))  # fmt: skip
    quoted, notes = quote_reference(table6, other, reference, 0.5)
    assert quoted.loc[0, "verdict"] == "ours better" and "other settings" in notes[-1]

    # another image: not used, and the note says why
    metrics["image_sha256"] = "b" * 64
    quoted, notes = quote_reference(table6, metrics, reference, 0.5)
    assert quoted.loc[0, "verdict"] == "ours better"
    assert quoted["ours_replicates_ci95_db"].isna().all()
    assert "not used" in notes[0] and "another image" in notes[0]
    assert notes[0].count("another image") == 1  # one reason, said once for every fit

    # a seed listed twice would narrow the interval: refused
    with pytest.raises(InputError, match="listed twice"):
        reference_from_rows(paths + paths[:1])

    # one seed is no interval: refused when it is kept
    with pytest.raises(InputError, match="at least 2 seeds"):
        reference_from_rows(paths[:1] + paths[3:4])
    assert read_json(out)["git_commits"] == ["abc"]
