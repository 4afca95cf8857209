"""Bjøntegaard metrics and the strongest-anchor comparison on synthetic curves whose answer is
known in closed form."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volinr.report.bd_rate import bd_metrics, bd_rate_table, rd_curve
from volinr.report.rd_tables import versus_best_anchor

# A codec-like curve: PSNR rises 6 dB a doubling of the rate (log-linear, as codecs roughly do).
ANCHOR_BITS = np.geomspace(0.05, 2.0, 6)
DB_PER_DOUBLING = 6.0


def _psnr(bits):
    return 30.0 + DB_PER_DOUBLING * np.log2(np.asarray(bits) / ANCHOR_BITS[0])


def _row(method, setting, family, bits, psnr_db, native_db=None):
    return {
        "method": method,
        "setting": setting,
        "family": family,
        "bits_per_voxel": bits,
        "psnr_8bit_minmax_db": psnr_db,
        "psnr_native_db": psnr_db if native_db is None else native_db,
        "ssim": 0.9,
    }


def _curve(method, family, bits, psnr_db):
    return [
        _row(method, f"p{i}", family, b, p)
        for i, (b, p) in enumerate(zip(bits, psnr_db, strict=True))
    ]


def _bd(test_bits, test_db, anchor_bits=ANCHOR_BITS, anchor_db=None):
    anchor_db = _psnr(anchor_bits) if anchor_db is None else anchor_db
    test = rd_curve(pd.DataFrame({"bits_per_voxel": test_bits, "psnr_db": test_db}), "psnr_db")
    anchor = rd_curve(
        pd.DataFrame({"bits_per_voxel": anchor_bits, "psnr_db": anchor_db}), "psnr_db"
    )
    return bd_metrics(test, anchor)


def test_half_the_rate_at_every_psnr_is_minus_fifty_percent():
    # the test curve reaches each anchor PSNR with half the bits
    result = _bd(ANCHOR_BITS / 2, _psnr(ANCHOR_BITS))
    assert result["bd_rate_percent"] == pytest.approx(-50.0, abs=1.0)
    # at equal rate it is one doubling ahead: +6 dB
    assert result["bd_psnr_db"] == pytest.approx(DB_PER_DOUBLING, abs=0.1)
    assert result["bd_note"] == ""
    # the overlap is the PSNR range both cover, and the rate range both cover
    assert result["overlap_psnr_low_db"] == pytest.approx(_psnr(ANCHOR_BITS)[0])
    assert result["overlap_bits_per_voxel_low"] == pytest.approx(ANCHOR_BITS[0])
    assert result["overlap_bits_per_voxel_high"] == pytest.approx(ANCHOR_BITS[-1] / 2)


def test_identical_curves_give_zero():
    result = _bd(ANCHOR_BITS, _psnr(ANCHOR_BITS))
    assert result["bd_rate_percent"] == pytest.approx(0.0, abs=1e-9)
    assert result["bd_psnr_db"] == pytest.approx(0.0, abs=1e-9)


def test_curves_that_do_not_overlap_give_nan_and_say_why():
    # far cheaper and far worse than anything the anchor covers: no common PSNR, no common rate
    bits = np.array([0.001, 0.002])
    result = _bd(bits, np.array([10.0, 12.0]))
    assert math.isnan(result["bd_rate_percent"]) and math.isnan(result["bd_psnr_db"])
    assert math.isnan(result["overlap_psnr_low_db"])
    assert "PSNR ranges do not overlap" in result["bd_note"]
    assert "rate ranges do not overlap" in result["bd_note"]


def test_a_method_with_one_point_gives_nan():
    result = _bd(np.array([0.1]), np.array([35.0]))
    assert math.isnan(result["bd_rate_percent"]) and math.isnan(result["bd_psnr_db"])
    assert "1 lossy point" in result["bd_note"] and result["points"] == 1


def test_the_classic_cubic_needs_four_points():
    anchor = rd_curve(pd.DataFrame({"bits_per_voxel": ANCHOR_BITS, "p": _psnr(ANCHOR_BITS)}), "p")
    three = rd_curve(
        pd.DataFrame({"bits_per_voxel": ANCHOR_BITS[:3], "p": _psnr(ANCHOR_BITS[:3])}), "p"
    )
    assert math.isnan(bd_metrics(three, anchor, "cubic")["bd_rate_percent"])
    assert not math.isnan(bd_metrics(three, anchor, "pchip")["bd_rate_percent"])


def test_dominated_points_are_dropped_so_both_axes_increase():
    points = pd.DataFrame(
        {"bits_per_voxel": [0.4, 0.1, 0.2, 0.3, 0.2], "psnr_db": [33.0, 30.0, 34.0, 33.5, 31.0]}
    )
    curve = rd_curve(points, "psnr_db")
    assert list(curve.bits_per_voxel) == [0.1, 0.2]  # 0.3 and 0.4 cost more for less
    assert list(curve.psnr_db) == [30.0, 34.0] and curve.dropped == 3


def test_the_table_ignores_lossless_and_published_rows_and_omits_self():
    anchor_db = _psnr(ANCHOR_BITS)
    rows = (
        _curve("jpeg2000", "codec", ANCHOR_BITS, anchor_db)
        + [_row("jpeg2000", "lossless", "codec", 4.0, math.inf, math.inf)]
        + _curve("hevc", "codec", ANCHOR_BITS / 2, anchor_db)
        + _curve("SIREN", "siren", ANCHOR_BITS / 2, anchor_db)
        # lossless: infinite PSNR on 8-bit, none native; would ruin the curve if kept
        + [_row("SIREN", "lossless", "siren", 8.0, math.inf, math.nan)]
        + [_row("published: SIREN", "published", "published", 0.5, 99.0, math.nan)]
    )
    table = bd_rate_table(pd.DataFrame(rows)).set_index(["method", "anchor", "psnr"])
    assert "published: SIREN" not in table.index.get_level_values("method")
    assert ("jpeg2000", "jpeg2000", "psnr_8bit_minmax_db") not in table.index
    assert table.loc[("jpeg2000", "hevc", "psnr_8bit_minmax_db"), "anchor_points"] == 6
    for psnr in ("psnr_8bit_minmax_db", "psnr_native_db"):
        siren = table.loc[("SIREN", "jpeg2000", psnr)]
        assert siren["points"] == 6 and siren["bd_rate_percent"] == pytest.approx(-50, abs=1)
        assert table.loc[("SIREN", "hevc", psnr), "bd_rate_percent"] == pytest.approx(0, abs=1e-9)
    hevc = table.loc[("hevc", "jpeg2000", "psnr_8bit_minmax_db")]
    assert hevc["bd_rate_percent"] == pytest.approx(-50, abs=1)


def test_the_strongest_anchor_is_the_codec_best_at_that_rate_and_is_named():
    bits = np.array([0.01, 0.1, 1.0])
    rows = (
        _curve("jpeg2000", "codec", bits, [20.0, 30.0, 40.0])
        + _curve("hevc", "codec", bits, [24.0, 34.0, 38.0])  # better at low rates only
        + [_row("zstd", "lossless", "codec", 3.0, math.inf)]  # no lossy sweep: never an anchor
        + [_row("SIREN", "low", "siren", math.sqrt(0.01 * 0.1), 27.0)]
        + [_row("SIREN", "high", "siren", 1.0, 39.0)]
        + [_row("SIREN", "beyond", "siren", 2.0, 45.0)]
        + [_row("published: SIREN", "published", "published", 0.5, 30.0)]
    )
    versus = versus_best_anchor(pd.DataFrame(rows)).set_index("setting")
    assert set(versus.index) == {"low", "high", "beyond"}
    low, high = versus.loc["low"], versus.loc["high"]
    assert low["best_anchor"] == "hevc" and high["best_anchor"] == "jpeg2000"
    assert low["best_anchor_psnr_at_same_rate_db"] == pytest.approx(29.0)  # halfway in log rate
    assert low["gain_over_best_anchor_db"] == pytest.approx(-2.0)
    # HEVC reaches 27 dB three tenths of the way from 0.01 to 0.1 in log rate
    assert low["best_anchor_bits_per_voxel_at_same_psnr"] == pytest.approx(0.01 * 10**0.3)
    assert high["best_anchor_bits_per_voxel_at_same_psnr"] == pytest.approx(0.1 * 10**0.9)
    assert low["anchors_at_this_rate"] == "hevc, jpeg2000"
    beyond = versus.loc["beyond"]  # no sweep reaches 2 bits per voxel
    assert pd.isna(beyond["best_anchor"]) and math.isnan(beyond["gain_over_best_anchor_db"])


def test_the_stage_writes_both_tables_with_their_notes(tmp_path):
    import json

    from volinr.cli import main

    def group(family, kind, rows):
        path = tmp_path / f"{family}.json"
        rows = [dict(r, kind=kind, family=family) for r in rows]
        path.write_text(json.dumps({"family": family, "kind": kind, "group": "g", "rows": rows}))
        return str(path)

    anchor_db = list(_psnr(ANCHOR_BITS))
    rows = [
        group("classical", "codec", _curve("jpeg2000", "codec", ANCHOR_BITS, anchor_db)),
        group("hevc_only", "codec", _curve("hevc", "codec", ANCHOR_BITS / 2, anchor_db)),
        group("siren_hr", "siren", _curve("SIREN", "siren", ANCHOR_BITS[1:3], anchor_db[1:3])),
    ]
    published = Path(__file__).resolve().parents[1] / "config/published.yaml"
    argv = ["rate-distortion", "--rows", *rows, "--published", str(published)]
    argv += ["--mode", "volume", "--out-dir", str(tmp_path), "--figure", str(tmp_path / "rd.png")]
    assert main(argv) == 0
    bd = pd.read_csv(tmp_path / "table_bd_rate.csv").set_index(["method", "anchor", "psnr"])
    siren = bd.loc[("SIREN", "jpeg2000", "psnr_8bit_minmax_db")]
    assert siren["bd_rate_percent"] == pytest.approx(0.0, abs=1e-9)
    assert "PCHIP" in (tmp_path / "table_bd_rate.md").read_text()
    best = pd.read_csv(tmp_path / "table_vs_best_anchor.csv")
    assert set(best["best_anchor"]) == {"hevc"}  # half the bits for the same PSNR everywhere
    assert "Strongest anchor" in (tmp_path / "table_vs_best_anchor.md").read_text()
    assert "Bjøntegaard" not in (tmp_path / "table_vs_jpeg2000.md").read_text()


def test_the_summary_gives_each_method_its_bd_rate_against_both_anchors():
    from volinr.report.summary import _bd_rate_lines

    rows = (
        _curve("jpeg2000", "codec", ANCHOR_BITS, _psnr(ANCHOR_BITS))
        + _curve("hevc", "codec", ANCHOR_BITS / 2, _psnr(ANCHOR_BITS))
        + [_row("true LR", "", "lr + upsampling", 0.3, 40.0)]
    )
    lines = _bd_rate_lines(bd_rate_table(pd.DataFrame(rows)))
    top_db = _psnr(ANCHOR_BITS)[-1]
    assert f"- hevc: vs jpeg2000 -50.0% over 30..{top_db:.4g} dB" in lines
    assert "- true LR: vs jpeg2000 n/a, vs hevc n/a" in lines


def test_tables_say_when_the_values_are_not_hu():
    import pandas as pd

    from volinr.report.table_io import units_notes

    assert units_notes(pd.DataFrame({"units": ["HU", "HU"]})) == []
    assert units_notes(pd.DataFrame({"psnr": [1.0]})) == []
    (note,) = units_notes(pd.DataFrame({"units": ["raw scanner values (not HU-calibrated)"]}))
    assert "raw scanner values" in note and "not HU" in note
