"""The suite's aggregation over datasets: confidence intervals, the claim counted, mean curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from volinr.report import suite


def test_the_mean_and_its_student_t_interval():
    values = [1.0, 2.0, 4.0, 7.0]
    mean, low, high = suite.mean_ci95(values)
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(3.5)
    assert (low, high) == pytest.approx(expected)
    one = suite.mean_ci95([2.5])
    assert one[0] == 2.5 and math.isnan(one[1]) and math.isnan(one[2])
    assert math.isnan(suite.mean_ci95([math.nan])[0])


def _dataset(tmp_path, name, bd_rates, claim, sr_gain):
    tables = tmp_path / name
    tables.mkdir()
    rows = [
        {"method": "neural codec", "family": "neural codec", "anchor": anchor, "psnr": p,
         "bd_rate_percent": rate, "bd_psnr_db": -rate / 10}
        for anchor, rate in bd_rates.items()
        for p in ("psnr_8bit_minmax_db", "psnr_native_db")
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tables / "table_bd_rate.csv", index=False)
    claim_rows = [
        {"quantity": suite.CLAIM, "layers": layers, "ours_measured": ours,
         "baseline_measured": base, "resolution_db": 2.0,
         "verdict": "not resolved" if abs(ours - base) < 2 else None}
        for layers, (ours, base) in claim.items()
    ]  # fmt: skip
    claim_rows.append(
        {"quantity": "training seconds", "layers": 2, "ours_measured": 1, "baseline_measured": 9}
    )
    pd.DataFrame(claim_rows).to_csv(tables / "table6_side_by_side.csv", index=False)
    pd.DataFrame(
        [{"method": "true LR + sr", "psnr_8bit_minmax_db": 30.0, "gain_over_lanczos_db": sr_gain}]
    ).to_csv(tables / "table_sr_check.csv", index=False)
    return suite.Dataset(name, tables, "head", True)


def test_bd_rates_claims_and_sr_gains_are_set_side_by_side_and_counted(tmp_path):
    datasets = [
        _dataset(tmp_path, "a", {"jpeg2000": -30, "hevc": 40}, {2: (35, 30)}, 3.0),
        _dataset(tmp_path, "b", {"jpeg2000": -10, "hevc": 60}, {2: (28, 31)}, 0.5),
        _dataset(tmp_path, "c", {"jpeg2000": -20}, {2: (33, 32)}, 1.0),
    ]
    per_dataset, means = suite.bd_rate_tables(datasets)
    assert len(per_dataset) == 5  # 8-bit PSNR only; c has no HEVC overlap
    jpeg = means[means["anchor"] == "jpeg2000"].iloc[0]
    assert jpeg["mean_bd_rate_percent"] == pytest.approx(-20)
    assert jpeg["datasets"] == 3 and jpeg["of_datasets"] == 3
    assert jpeg["bd_rate_ci95_low"] < -20 < jpeg["bd_rate_ci95_high"]
    hevc = means[means["anchor"] == "hevc"].iloc[0]
    assert hevc["datasets"] == 2 and hevc["mean_bd_rate_percent"] == pytest.approx(50)
    claims = suite.paper_claim_table(datasets)
    assert list(claims["claim_holds"]) == [True, False, True]
    counts = suite.claim_counts(claims).iloc[0]
    assert (counts["holds_on"], counts["of_datasets"]) == (2, 3)
    assert counts["mean_margin_db"] == pytest.approx(1.0)
    # a margin within what its dataset's verdict needed is counted apart
    assert list(claims["verdict"]) == ["ours better", "baseline better", "not resolved"]
    assert (counts["resolved_ours_better"], counts["not_resolved"]) == (1, 1)
    assert counts["resolved_baseline_better"] == 1
    sr = suite.sr_gain_table(datasets)
    assert list(sr["sr_gain_over_lanczos_db"]) == [3.0, 0.5, 1.0]
    text = suite.suite_summary(datasets, means, suite.claim_counts(claims), sr)
    assert text.startswith("# Suite verdict over 3 datasets")
    assert "holds on 2 of 3 datasets (resolved: ours better on 1, baseline better on 1; " in text


def test_a_missing_table_names_the_dataset_and_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match=r"empty.*table_bd_rate"):
        suite.bd_rate_tables([suite.Dataset("empty", tmp_path / "empty", "head", True)])


def test_mean_curves_average_where_every_dataset_has_a_curve():
    points = pd.DataFrame(
        [
            {"dataset": d, "method": "m", "bits_per_voxel": r, "psnr_8bit_minmax_db": p + shift}
            for d, shift in (("a", 0.0), ("b", 2.0))
            for r, p in ((0.1, 30.0), (1.0, 40.0))
        ]
        + [{"dataset": "a", "method": "only_a", "bits_per_voxel": 0.5, "psnr_8bit_minmax_db": 1}]
    )
    curves = suite.mean_curves(points, samples=3)
    assert set(curves["method"]) == {"m"}
    assert list(curves["psnr_8bit_minmax_db"]) == pytest.approx([31.0, 36.0, 41.0])
