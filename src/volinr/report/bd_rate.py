"""Bjøntegaard metrics: every method's rate-distortion curve against the JPEG 2000, HEVC and AV1
anchors' curves, as BD-rate (%) and BD-PSNR (dB), on 8-bit and on native PSNR, over the range
both curves cover and never beyond it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import bjontegaard as bd
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ANCHORS = ("jpeg2000", "hevc", "av1")  # the anchors the issue and the suite report name
PSNR_COLUMNS = ("psnr_8bit_minmax_db", "psnr_native_db")
# PCHIP: monotone data give a monotone interpolant (no overshoot between sparse points), and
# unlike the classic cubic fit it needs only two points.
INTERPOLATION = "pchip"
MIN_POINTS = {"pchip": 2, "akima": 2, "cubic": 4}  # what each interpolation can be built from

BD_NOTE = (
    f"Bjøntegaard metrics (package bjontegaard {bd.__version__}, {INTERPOLATION.upper()} "
    "interpolation in log10 rate): each method's curve (its points grouped by method label, "
    "several seeds averaged as in the rate-distortion table) against the JPEG 2000 and the HEVC "
    "anchor's sweep, on the PSNR named in column psnr (8-bit min..max window, or native). "
    "BD-rate (%): the average rate difference at equal quality over the PSNR range both curves "
    "cover (overlap_psnr_*), relative to the anchor; negative = fewer bits than the anchor. "
    "BD-PSNR (dB): the average PSNR difference at equal rate over the rate range both cover "
    "(overlap_bits_per_voxel_*); positive = better than the anchor. Rates: bits per voxel from "
    "the real files' bytes (SR model not counted). Never extrapolated: curves that do not "
    f"overlap, or a curve of fewer than {MIN_POINTS[INTERPOLATION]} points, give an empty cell "
    "with the reason in bd_note. Left out: lossless points (infinite PSNR), points without that "
    "PSNR and the published points. The library neither sorts nor repairs a curve (its "
    "interpolation needs strictly increasing PSNR for BD-rate and rate for BD-PSNR), so a point "
    "that is not better than a cheaper point of the same curve (dominated) is dropped. An "
    "anchor against itself is omitted."
)


@dataclass(frozen=True)
class Curve:
    """A curve's usable points, both coordinates strictly increasing."""

    bits_per_voxel: np.ndarray
    psnr_db: np.ndarray
    dropped: int  # dominated points left out

    def __len__(self) -> int:
        return len(self.bits_per_voxel)

    def span(self) -> str:
        if not len(self):
            return "no usable point"
        return (
            f"{self.psnr_db[0]:.4g}..{self.psnr_db[-1]:.4g} dB, "
            f"{self.bits_per_voxel[0]:.4g}..{self.bits_per_voxel[-1]:.4g} bits per voxel"
        )


def rd_curve(points: pd.DataFrame, psnr_column: str) -> Curve:
    """The points with a finite positive rate and a finite ``psnr_column``, sorted by rate,
    keeping only those that beat every cheaper point (the Pareto front)."""
    if psnr_column not in points:
        return Curve(np.empty(0), np.empty(0), 0)
    bits = points["bits_per_voxel"].to_numpy(float)
    psnr = points[psnr_column].to_numpy(float)
    usable = np.isfinite(bits) & (bits > 0) & np.isfinite(psnr)
    bits, psnr = bits[usable], psnr[usable]
    order = np.lexsort((-psnr, bits))  # by rate; at equal rate the best first
    kept_bits: list[float] = []
    kept_psnr: list[float] = []
    for rate, db in zip(bits[order], psnr[order], strict=True):
        if not kept_bits or (rate > kept_bits[-1] and db > kept_psnr[-1]):
            kept_bits.append(float(rate))
            kept_psnr.append(float(db))
    return Curve(np.array(kept_bits), np.array(kept_psnr), len(bits) - len(kept_bits))


def _overlap(low_a: float, high_a: float, low_b: float, high_b: float) -> tuple[float, float]:
    low, high = max(low_a, low_b), min(high_a, high_b)
    return (low, high) if high > low else (math.nan, math.nan)


def bd_metrics(test: Curve, anchor: Curve, method: str = INTERPOLATION) -> dict[str, Any]:
    """BD-rate and BD-PSNR of ``test`` against ``anchor`` with the overlaps they are taken
    over; NaN where there is no number, and why in ``bd_note``."""
    needed = MIN_POINTS[method]
    result: dict[str, Any] = {
        "points": len(test),
        "anchor_points": len(anchor),
        "bd_rate_percent": math.nan,
        "bd_psnr_db": math.nan,
        "overlap_psnr_low_db": math.nan,
        "overlap_psnr_high_db": math.nan,
        "overlap_bits_per_voxel_low": math.nan,
        "overlap_bits_per_voxel_high": math.nan,
        "bd_note": "",
    }
    for name, curve in (("method", test), ("anchor", anchor)):
        if len(curve) < needed:
            dropped = f", {curve.dropped} dominated dropped" if curve.dropped else ""
            result["bd_note"] = (
                f"{name} curve has {len(curve)} lossy point(s) with this PSNR{dropped}; "
                f"{method} needs {needed}"
            )
            return result
    reasons = []
    # BD-rate averages over the PSNR both curves cover, BD-PSNR over the rates both cover
    for metric, axis, columns in (
        (bd.bd_rate, "PSNR", ("bd_rate_percent", "overlap_psnr_low_db", "overlap_psnr_high_db")),
        (bd.bd_psnr, "rate", ("bd_psnr_db", "overlap_bits_per_voxel_low",
                              "overlap_bits_per_voxel_high")),
    ):  # fmt: skip
        values = "psnr_db" if axis == "PSNR" else "bits_per_voxel"
        low, high = _overlap(*getattr(test, values)[[0, -1]], *getattr(anchor, values)[[0, -1]])
        if math.isnan(low):
            name = "BD-rate" if axis == "PSNR" else "BD-PSNR"
            reasons.append(f"{name}: the {axis} ranges do not overlap")
            continue
        result[columns[0]] = float(
            metric(
                anchor.bits_per_voxel, anchor.psnr_db, test.bits_per_voxel, test.psnr_db,
                method=method, require_matching_points=False, min_overlap=0,
            )
        )  # fmt: skip
        result[columns[1]], result[columns[2]] = low, high
    if reasons:
        result["bd_note"] = f"{'; '.join(reasons)} (method {test.span()}; anchor {anchor.span()})"
    return result


def bd_rate_table(table: pd.DataFrame, method: str = INTERPOLATION) -> pd.DataFrame:
    """Every method of the rate-distortion table (its rows grouped by method label, published
    rows left out) against each anchor present, on each PSNR; an anchor against itself is
    omitted."""
    measured = table[table["family"] != "published"]
    anchors = [a for a in ANCHORS if a in set(measured["method"])]
    for absent in sorted(set(ANCHORS) - set(anchors)):
        log.info("%s is not in this run: no Bjøntegaard metrics against it", absent)
    rows = []
    for label, points in measured.groupby("method", sort=False):
        for anchor in anchors:
            if label == anchor:
                continue
            anchor_points = measured[measured["method"] == anchor]
            for psnr_column in PSNR_COLUMNS:
                test_curve = rd_curve(points, psnr_column)
                anchor_curve = rd_curve(anchor_points, psnr_column)
                rows.append(
                    {
                        "method": label,
                        "family": points["family"].iloc[0],
                        "anchor": anchor,
                        "psnr": psnr_column,
                        **bd_metrics(test_curve, anchor_curve, method),
                    }
                )
    return pd.DataFrame(rows, columns=_COLUMNS)


_COLUMNS = [
    "method",
    "family",
    "anchor",
    "psnr",
    "points",
    "anchor_points",
    "bd_rate_percent",
    "bd_psnr_db",
    "overlap_psnr_low_db",
    "overlap_psnr_high_db",
    "overlap_bits_per_voxel_low",
    "overlap_bits_per_voxel_high",
    "bd_note",
]
