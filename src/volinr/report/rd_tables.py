"""Rate-distortion tables: every method's points on the same image, and each method against a
classical anchor (JPEG 2000, or the strongest codec at its rate) at the same rate and at the
same quality.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from volinr.errors import InputError
from volinr.report.paper_tables import mean_of
from volinr.report.table_io import mean_ci95

log = logging.getLogger(__name__)

RD_NOTE = (
    "Rate-distortion: bits per voxel = 8 x bytes / voxels of the full-resolution original, "
    "bytes taken from real files: the volinr container (SIREN weights quantized and "
    "entropy-coded, with architecture, grid, intensity scaling and the decoding recipe), the "
    "codec's own output stream, or the LR image coded losslessly. 'with SR' adds the whole "
    "SRDenseNet checkpoint; 'SR amortized' adds it divided by the number of volumes sharing it "
    "(rate_distortion.sr_amortize_over). Published points: the paper's compression rate read as "
    "8-bit bytes / weights bytes, i.e. 8 / rate bits per voxel. Decode seconds: rebuilding the "
    "full-resolution image from the stored bytes (SIREN evaluation + SR, or the codec's decoder); "
    "for a 'true LR' row, the LR image's lossless decode and its upsampling; for the neural "
    "codec, its file's entropy decoding and synthesis."
)


BEST_ANCHOR_NOTE = (
    "Strongest anchor: at each point's bits per voxel, every classical codec with a lossy sweep "
    "is interpolated piecewise linearly in log rate on its PSNR-monotone sweep (as for JPEG "
    "2000), and the one with the highest PSNR there is named (ties: the first by name); "
    "anchors_at_this_rate lists the codecs whose sweep covers the rate. Its bits per voxel at "
    "the same PSNR: empty where the point's PSNR is outside that codec's sweep."
)


TRAINING_FLAG_NOTE = (
    "Training flag (trained methods): 'dominated by lambda L' where another point of the same "
    "method and seed has no more bits and no less PSNR (8-bit, min..max) than this one (at a "
    "smaller lambda, fewer bits or more PSNR too), the sign of a training that ended worse "
    "than it should have; 'loss rose at the end' where the "
    "last sampled hard-rounded loss ended above the best one (the file holds the best state); "
    "'N restarts' where training diverged and went back to its best state N times; "
    "'quantising the networks lost X dB' where the coded networks' synthesis is more than "
    "1 dB (in MSE) worse than the trained float networks'."
)


# Quantising a trained codec's networks should cost a fraction of a dB; more is flagged.
QUANTISATION_LOSS_FLAG_DB = 1.0


def training_flags(points: pd.DataFrame) -> pd.Series:
    """Per point of a trained method (rows with a ``lambda``), what went wrong in training:
    domination by another point of the same method and seed (a larger lambda should give
    fewer bits, a smaller one more PSNR: either failing shows), a loss that rose at the end,
    restarts; '' for a clean point and for methods without a lambda."""
    flags = pd.Series("", index=points.index, dtype=object)
    if "lambda" not in points:
        return flags
    trained = points[points["lambda"].notna()]
    keys = ["method"] + [k for k in ("seed",) if k in trained]
    for _, same in trained.groupby(keys, sort=False, dropna=False):
        for index, row in same.iterrows():
            found = []
            bits, psnr = same["bits_per_voxel"], same["psnr_8bit_minmax_db"]
            no_worse = (bits <= row["bits_per_voxel"]) & (psnr >= row["psnr_8bit_minmax_db"])
            # an equal point at a smaller lambda is this point's own failure, not its
            strictly = (bits < row["bits_per_voxel"]) | (psnr > row["psnr_8bit_minmax_db"])
            larger = same["lambda"] > row["lambda"]
            smaller = same["lambda"] < row["lambda"]
            better = same[no_worse & (larger | (smaller & strictly))]
            if len(better):
                lambdas = ", ".join(f"{v:g}" for v in sorted(better["lambda"], reverse=True))
                found.append(f"dominated by lambda {lambdas}")
            if bool(row.get("training_loss_rose_at_end", False) is True):
                found.append("loss rose at the end (the best state is coded)")
            lost = row.get("network_quantisation_loss_db", 0.0)
            if isinstance(lost, int | float) and lost > QUANTISATION_LOSS_FLAG_DB:
                found.append(f"quantising the networks lost {lost:.1f} dB")
            restarts = row.get("training_restarts", 0)
            if isinstance(restarts, int | float) and restarts > 0:
                found.append(f"{int(restarts)} restarts")
            flags[index] = "; ".join(found)
    return flags


def _rd_row(method: str, setting: str, group: pd.DataFrame, family: str) -> dict[str, Any]:
    psnr, ci, seeds = mean_ci95(group["psnr_8bit_minmax_db"])
    flags = sorted({flag for flag in group["training_flag"] if flag})
    return {
        "method": method,
        "setting": setting,
        "family": family,
        "bits_per_voxel": mean_of(group, "bits_per_voxel"),
        "bits_per_voxel_with_sr_amortized": mean_of(group, "bits_per_voxel_with_sr_amortized"),
        "bits_per_voxel_with_sr": mean_of(group, "bits_per_voxel_with_sr"),
        "psnr_8bit_minmax_db": psnr,
        "psnr_ci95_db": ci,
        "psnr_native_db": mean_of(group, "psnr_native_db"),
        "ssim": mean_of(group, "ssim"),
        "max_abs_error_hu": mean_of(group, "max_abs_error_hu"),
        "decode_seconds": mean_of(group, "decode_seconds"),
        "seeds": seeds,
        "training_flag": " / ".join(flags),
    }


def _row_label(row: pd.Series) -> str:
    """A method's name in the table; an image stored losslessly names its codec."""
    codec = row.get("stored_codec")
    if isinstance(codec, str):
        return f"{row['method']} (LR coded losslessly by {codec})"
    return str(row["method"])


def counts_notes(points: pd.DataFrame) -> list[str]:
    """What each method's bytes count (its class's ``counts``, carried by every row)."""
    if "what_bytes_count" not in points:
        return []
    pairs = points[["family", "what_bytes_count"]].dropna().drop_duplicates()
    return [f"Bytes of {family}: {counts}." for family, counts in pairs.itertuples(index=False)]


def rate_distortion_table(points: pd.DataFrame, published: dict[str, Any] | None) -> pd.DataFrame:
    """Every method's rate and quality on the same image, one row per operating point
    (``volinr rd``'s rows; points of several seeds averaged), with the paper's published
    points where they apply."""
    labelled = points.assign(
        label=points.apply(_row_label, axis=1), training_flag=training_flags(points)
    )
    rows = [
        _rd_row(label, str(setting), group, str(group["kind"].iloc[0]))
        for (label, setting), group in labelled.groupby(["label", "setting"], sort=False)
    ]
    if published is not None:
        for key, label in (
            ("ours", "SIREN on LR + SR (paper)"),
            ("baseline_full_res_siren", "SIREN on HR"),
        ):
            paper = published[key]
            for layers, rate in paper["compression_rate"].items():
                rows.append(
                    {
                        "method": f"published: {label}, {layers} layers",
                        "setting": "published",
                        "family": "published",
                        "bits_per_voxel": 8.0 / rate,
                        "psnr_8bit_minmax_db": paper["best_psnr_db"][layers],
                    }
                )
    table = pd.DataFrame(rows)
    return table.sort_values(["family", "method", "bits_per_voxel"], ignore_index=True)


def _monotone_curve(curve: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A codec's (log bits per voxel, PSNR) with PSNR made non-decreasing in rate, so that it
    can be inverted; the sweep's points are sorted by rate."""
    curve = curve.sort_values("bits_per_voxel")
    log_rate = np.log(curve["bits_per_voxel"].to_numpy(float))
    psnr = np.maximum.accumulate(curve["psnr_8bit_minmax_db"].to_numpy(float))
    return log_rate, psnr


@dataclass(frozen=True)
class CodecCurve:
    """A codec's lossy sweep, interpolated piecewise linearly in log rate: its PSNR at a rate
    and the rate at which it reaches a PSNR; outside the sweep: NaN; at or above the codec's
    lossless rate: PSNR inf (the codec stores the image exactly)."""

    codec: str
    log_rate: np.ndarray
    psnr_db: np.ndarray
    lossless_bits_per_voxel: float

    def psnr_at(self, bits: float) -> float:
        if np.isfinite(bits) and bits >= self.lossless_bits_per_voxel:
            return math.inf  # at this rate the codec stores the image losslessly
        if not np.isfinite(bits) or not self.log_rate[0] <= math.log(bits) <= self.log_rate[-1]:
            return math.nan
        return float(np.interp(math.log(bits), self.log_rate, self.psnr_db))

    def bits_at(self, target_db: float) -> float:
        if not self.psnr_db[0] <= target_db <= self.psnr_db[-1]:
            return math.nan
        # first rate at which the (monotone) curve reaches the target
        return float(np.exp(np.interp(target_db, self.psnr_db, self.log_rate)))


def codec_curve(table: pd.DataFrame, codec: str) -> CodecCurve:
    """``codec``'s curve from the rate-distortion table (its lossy points, and its lossless rate
    where it has one)."""
    curve = table[
        (table["method"] == codec) & (table["setting"] != "lossless") & table["ssim"].notna()
    ]
    if len(curve) < 2:
        raise InputError(f"the codec sweep has fewer than two lossy {codec} points")
    log_rate, psnr = _monotone_curve(curve)
    lossless = table[(table["method"] == codec) & (table["setting"] == "lossless")]
    lossless_bits = float(lossless["bits_per_voxel"].min()) if len(lossless) else math.inf
    return CodecCurve(codec, log_rate, psnr, lossless_bits)


def lossy_codec_curves(table: pd.DataFrame) -> list[CodecCurve]:
    """Every classical codec of the table with a lossy sweep (two lossy points or more), by
    name; a lossless-only codec (zstd) has no curve to compare with."""
    codecs = sorted(set(table.loc[table["family"] == "codec", "method"]))
    curves = []
    for codec in codecs:
        try:
            curves.append(codec_curve(table, codec))
        except InputError:
            log.info("%s: no lossy sweep, not an anchor at the same rate", codec)
    return curves


def _compared_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Every method but the codecs and the published points."""
    return table[~table["family"].isin(["codec", "published"])]


def versus_codec(table: pd.DataFrame, codec: str = "jpeg2000") -> pd.DataFrame:
    """Each stored-image method against a codec at the same rate and at the same quality,
    interpolated on the codec's sweep in log rate; outside the sweep: empty; at or above the
    codec's lossless rate: inf (the codec stores the image exactly)."""
    curve = codec_curve(table, codec)
    columns = ["method", "setting", "bits_per_voxel", "psnr_8bit_minmax_db",
               f"{codec}_psnr_at_same_rate_db", f"gain_over_{codec}_db",
               f"gain_over_{codec}_sr_amortized_db", f"{codec}_bits_per_voxel_at_same_psnr",
               f"size_vs_{codec}_at_same_psnr"]  # fmt: skip
    rows = []
    for _, row in _compared_rows(table).iterrows():
        same_rate = curve.psnr_at(row["bits_per_voxel"])
        same_rate_sr = curve.psnr_at(row.get("bits_per_voxel_with_sr_amortized", math.nan))
        needed = curve.bits_at(row["psnr_8bit_minmax_db"])
        rows.append(
            {
                "method": row["method"],
                "setting": row["setting"],
                "bits_per_voxel": row["bits_per_voxel"],
                "psnr_8bit_minmax_db": row["psnr_8bit_minmax_db"],
                f"{codec}_psnr_at_same_rate_db": same_rate,
                f"gain_over_{codec}_db": row["psnr_8bit_minmax_db"] - same_rate,
                f"gain_over_{codec}_sr_amortized_db": row["psnr_8bit_minmax_db"] - same_rate_sr,
                f"{codec}_bits_per_voxel_at_same_psnr": needed,
                f"size_vs_{codec}_at_same_psnr": row["bits_per_voxel"] / needed,
            }
        )
    return _frame(rows, columns)


BEST_ANCHOR_COLUMNS = [
    "method",
    "setting",
    "bits_per_voxel",
    "psnr_8bit_minmax_db",
    "best_anchor",
    "best_anchor_psnr_at_same_rate_db",
    "gain_over_best_anchor_db",
    "best_anchor_bits_per_voxel_at_same_psnr",
    "size_vs_best_anchor_at_same_psnr",
    "anchors_at_this_rate",
]


def versus_best_anchor(table: pd.DataFrame) -> pd.DataFrame:
    """Each stored-image method point against the strongest classical codec at its rate: the
    lossy codec with the highest interpolated PSNR at the same bits per voxel (ties: the first
    by name), named, with the bits per voxel that codec needs for the point's PSNR. No codec
    sweep covering the rate: empty."""
    curves = lossy_codec_curves(table)
    rows = []
    for _, row in _compared_rows(table).iterrows():
        bits, psnr = row["bits_per_voxel"], row["psnr_8bit_minmax_db"]
        at_rate = {c.codec: c.psnr_at(bits) for c in curves}
        covering = {codec: db for codec, db in at_rate.items() if not math.isnan(db)}
        best = max(covering, key=covering.__getitem__) if covering else None
        best_db = covering[best] if best else math.nan
        needed = next(c for c in curves if c.codec == best).bits_at(psnr) if best else math.nan
        rows.append(
            {
                "method": row["method"],
                "setting": row["setting"],
                "bits_per_voxel": bits,
                "psnr_8bit_minmax_db": psnr,
                "best_anchor": best,
                "best_anchor_psnr_at_same_rate_db": best_db,
                "gain_over_best_anchor_db": psnr - best_db,
                "best_anchor_bits_per_voxel_at_same_psnr": needed,
                "size_vs_best_anchor_at_same_psnr": bits / needed,
                "anchors_at_this_rate": ", ".join(covering),
            }
        )
    return _frame(rows, BEST_ANCHOR_COLUMNS)


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """The rows as a table; none (a run of the codecs alone compares nothing): the header alone,
    so the written CSV still names its columns. Rows keep every key they have."""
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
