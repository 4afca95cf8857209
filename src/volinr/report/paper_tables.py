"""The paper's Tables 4-7 with its published numbers beside ours, plus the SR check and the
ablation; CSV for machines, Markdown (with the metric definitions above each table) for people.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from volinr.errors import InputError
from volinr.report.table_io import PEAK2_DB, check_finite, mean_ci95

log = logging.getLogger(__name__)


def _per_layer(metrics: pd.DataFrame, method: str) -> dict[int, pd.DataFrame]:
    rows = metrics[metrics["method"] == method]
    return {int(layers): group for layers, group in rows.groupby("layers")}


def mean_of(group: pd.DataFrame, column: str) -> float:
    if column not in group:
        return math.nan
    return float(group[column].mean())


def _method_table(metrics: pd.DataFrame, published: dict, method: str) -> pd.DataFrame:
    key = "ours" if method == "ours" else "baseline_full_res_siren"
    paper = published[key]
    rows = []
    for layers, group in _per_layer(metrics, method).items():
        psnr, ci, seeds = mean_ci95(group["psnr_8bit_minmax_db"])
        paper_psnr = paper["best_psnr_db"].get(layers, math.nan)
        row = {
            "layers": layers,
            "parameters_paper": published["siren_params"].get(layers, math.nan),
            "parameters_ours": int(group["parameter_count"].iloc[0]),
            "best_psnr_db_paper": paper_psnr,
            "best_psnr_db_ours": psnr,
            "best_psnr_diff_db": psnr - paper_psnr,
            "best_psnr_ci95_db": ci,
            "seeds": seeds,
            "psnr_8bit_tissue_db_ours": mean_of(group, "psnr_8bit_tissue_db"),
            "psnr_native_db_ours": mean_of(group, "psnr_native_db"),
            "ssim_ours": mean_of(group, "ssim"),
            "device": str(group["device"].iloc[0]),
        }
        if method == "ours":
            row.update(
                lr_fit_best_psnr_db_paper=paper.get("lr_fit_best_psnr_db", {}).get(
                    layers, math.nan
                ),
                lr_fit_best_psnr_db_ours=mean_of(group, "fit_best_psnr_db"),
                # The paper's LR-fit numbers obey PSNR = -10 log10(loss) (peak 1 on the loss's
                # own scale); ours on that relation, with our loss on the [-1, 1] scale:
                lr_fit_best_psnr_db_ours_peak1=mean_of(group, "fit_best_psnr_db") - PEAK2_DB,
                lr_fit_final_loss_paper=paper.get("lr_fit_final_loss", {}).get(layers, math.nan),
                lr_fit_final_loss_ours=mean_of(group, "fit_final_loss"),
            )
        row.update(
            iterations_ours=int(group["iterations"].iloc[0]),
            train_seconds_ours=mean_of(group, "train_seconds"),
            compile_seconds_ours=mean_of(group, "compile_seconds"),
            train_seconds_per_50k_paper=paper["train_seconds_per_50k_iters"].get(layers, math.nan),
            train_seconds_per_50k_ours=mean_of(group, "seconds_per_50k_iterations_extrapolated"),
            memory_kb_paper=paper["gpu_memory_kb"].get(layers, math.nan),
            memory_kb_ours=mean_of(group, "peak_memory_kb"),
            compression_rate_paper=paper["compression_rate"].get(layers, math.nan),
            compression_rate_ours_paper_convention=mean_of(group, "compression_rate_paper"),
            compression_rate_ours_16bit=mean_of(group, "compression_rate_16bit"),
        )
        if method == "ours":
            row["compression_rate_ours_16bit_with_sr"] = mean_of(
                group, "compression_rate_16bit_with_sr"
            )
        row["bits_per_voxel_ours"] = mean_of(group, "bits_per_voxel")
        rows.append(row)
    if not rows:
        raise InputError(f"no metrics for method {method!r}")
    return pd.DataFrame(rows).sort_values("layers").reset_index(drop=True)


def side_by_side(
    ours: pd.DataFrame, baseline: pd.DataFrame, verdict_margin_db: float = 0.5
) -> pd.DataFrame:
    """Table 6: the paper's and our baseline and ours, per quantity and layer count, with our
    verdict ("not resolved" where the PSNR margin is below ``verdict_margin_db`` or inside
    the seeds' 95% intervals)."""
    quantities = [
        ("best PSNR (dB, 8-bit min..max)", "best_psnr_db_paper", "best_psnr_db_ours"),
        (
            "training seconds per 50k iterations",
            "train_seconds_per_50k_paper",
            "train_seconds_per_50k_ours",
        ),
        ("memory (KB)", "memory_kb_paper", "memory_kb_ours"),
    ]
    merged = ours.merge(baseline, on="layers", suffixes=("_ours_method", "_baseline"))
    rows = []
    for name, paper_col, our_col in quantities:
        for _, row in merged.iterrows():
            rows.append(
                {
                    "quantity": name,
                    "layers": int(row["layers"]),
                    "baseline_paper": row[f"{paper_col}_baseline"],
                    "ours_paper": row[f"{paper_col}_ours_method"],
                    "baseline_measured": row[f"{our_col}_baseline"],
                    "ours_measured": row[f"{our_col}_ours_method"],
                }
            )
    table = pd.DataFrame(rows)
    table["paper_says_ours_better"] = _better(table, "ours_paper", "baseline_paper")
    table["we_find_ours_better"] = _better(table, "ours_measured", "baseline_measured")
    psnr = table["quantity"].str.contains("PSNR")
    intervals = merged.set_index("layers")[["best_psnr_ci95_db_ours_method",
                                            "best_psnr_ci95_db_baseline"]]  # fmt: skip
    table["margin_db"] = (table["ours_measured"] - table["baseline_measured"]).where(psnr)
    table["resolution_db"] = [
        _resolution(intervals.loc[layers], verdict_margin_db) if is_psnr else math.nan
        for layers, is_psnr in zip(table["layers"], psnr, strict=True)
    ]
    table["verdict"] = [
        _verdict(better, margin, resolution)
        for better, margin, resolution in zip(
            table["we_find_ours_better"], table["margin_db"], table["resolution_db"], strict=True
        )
    ]
    return table


def _resolution(intervals: pd.Series, verdict_margin_db: float) -> float:
    """The margin a PSNR verdict needs: the cross-machine spread, or the two 95% intervals
    over seeds combined where they are wider (sqrt of the sum of squares)."""
    halves = [float(v) for v in intervals if v is not None and np.isfinite(v)]
    combined = math.sqrt(sum(h * h for h in halves)) if len(halves) == 2 else 0.0
    return max(verdict_margin_db, combined)


def _verdict(better, margin: float, resolution: float) -> str | None:
    if better is None:
        return None
    if np.isfinite(margin) and abs(margin) < resolution:
        return "not resolved"
    return "ours better" if better else "baseline better"


def _better(table: pd.DataFrame, ours: str, baseline: str) -> pd.Series:
    higher_is_better = table["quantity"].str.contains("PSNR")
    better = np.where(
        higher_is_better, table[ours] > table[baseline], table[ours] < table[baseline]
    )
    # no verdict where a number does not exist (the paper's, in volume mode)
    missing = table[ours].isna() | table[baseline].isna()
    return pd.Series(better, index=table.index, dtype=object).where(~missing, None)


def other_methods(ours: pd.DataFrame, baseline: pd.DataFrame, published: dict) -> pd.DataFrame:
    rows = [
        {
            "method": name,
            "best_psnr_db_paper": value,
            "best_psnr_db_ours": math.nan,
            "note": "quoted by the paper; not rerun here",
        }
        for name, value in published["other_methods_best_psnr_db"].items()
    ]
    for label, table in (("SIREN [2] on full resolution", baseline), ("Ours", ours)):
        for _, row in table.iterrows():
            rows.append(
                {
                    "method": f"{label} ({int(row['layers'])} layers)",
                    "best_psnr_db_paper": row["best_psnr_db_paper"],
                    "best_psnr_db_ours": row["best_psnr_db_ours"],
                    "note": "measured by this pipeline",
                }
            )
    return pd.DataFrame(rows)


def sr_check(metrics: pd.DataFrame) -> pd.DataFrame:
    """The true LR slice upsampled by SR, Lanczos and bicubic: does SR beat interpolation?"""
    rows = metrics[metrics["method"].str.startswith("true LR + ")]
    if rows.empty:
        raise InputError("no reference (true LR + upsampling) metrics")
    columns = ["method", "psnr_8bit_minmax_db", "psnr_8bit_tissue_db", "psnr_native_db", "ssim"]
    columns += [c for c in ("bits_per_voxel", "stored_codec") if c in rows]
    table = rows[columns].reset_index(drop=True)
    if "stored_codec" in table:  # the codec whose bytes the bits per voxel count
        table = table.rename(columns={"stored_codec": "lr_coded_losslessly_by"})
    bicubic = table.loc[table["method"] == "true LR + bicubic", "psnr_8bit_minmax_db"]
    lanczos = table.loc[table["method"] == "true LR + lanczos", "psnr_8bit_minmax_db"]
    if len(bicubic):
        table["gain_over_bicubic_db"] = table["psnr_8bit_minmax_db"] - float(bicubic.iloc[0])
    if len(lanczos):
        table["gain_over_lanczos_db"] = table["psnr_8bit_minmax_db"] - float(lanczos.iloc[0])
    return table


def ablation(metrics: pd.DataFrame, ours: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Where the quality comes from: SR alone, SIREN+SR, SIREN at full resolution."""
    rows = []
    for _, row in sr_check(metrics).iterrows():
        codec = row.get("lr_coded_losslessly_by")
        stored = f"LR coded losslessly by {codec}" if isinstance(codec, str) else "LR stored"
        rows.append(
            {
                "pipeline": f"{row['method']} ({stored}, no SIREN)",
                "psnr_8bit_minmax_db": row["psnr_8bit_minmax_db"],
                "ssim": row["ssim"],
                "bits_per_voxel": row.get("bits_per_voxel", math.nan),
            }
        )
    for label, table in (
        ("SIREN on LR + SR (the paper's method)", ours),
        ("SIREN on full resolution (baseline)", baseline),
    ):
        for _, row in table.iterrows():
            rows.append(
                {
                    "pipeline": f"{label}, {int(row['layers'])} layers",
                    "psnr_8bit_minmax_db": row["best_psnr_db_ours"],
                    "ssim": row["ssim_ours"],
                    "bits_per_voxel": row["bits_per_voxel_ours"],
                }
            )
    table = pd.DataFrame(rows)
    sr_alone = table.loc[table["pipeline"].str.startswith("true LR + sr"), "psnr_8bit_minmax_db"]
    if len(sr_alone):
        table["diff_vs_sr_alone_db"] = table["psnr_8bit_minmax_db"] - float(sr_alone.iloc[0])
    return table


def build_tables(
    metrics: pd.DataFrame, published: dict, verdict_margin_db: float = 0.5
) -> dict[str, pd.DataFrame]:
    ours = _method_table(metrics, published, "ours")
    baseline = _method_table(metrics, published, "baseline")
    for name, table in (("table4_ours", ours), ("table5_baseline", baseline)):
        check_finite(name, table, ["best_psnr_db_ours", "train_seconds_ours", "ssim_ours"])
    return {
        "table4_ours": ours,
        "table5_baseline": baseline,
        "table6_side_by_side": side_by_side(ours, baseline, verdict_margin_db),
        "table7_other_methods": other_methods(ours, baseline, published),
        "table_sr_check": sr_check(metrics),
        "table_ablation": ablation(metrics, ours, baseline),
    }
