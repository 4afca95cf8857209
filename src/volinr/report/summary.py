"""A Markdown summary of a run, built from its tables (the README's results section is made from
it by ``volinr-dev readme``, so that no number there is typed by hand).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from volinr.config_checks import PAPER_METHODS, paper_tables_made
from volinr.errors import InputError

# Columns that hold our measurements: an empty cell there is a failed run, never 'n/a'.
MEASURED = {
    "table4_ours": ["train_seconds_ours", "seeds", "iterations_ours"],
    "table5_baseline": ["train_seconds_ours", "seeds", "iterations_ours"],
    "table6_side_by_side": ["baseline_measured", "ours_measured"],
    "table_sr_check": ["psnr_8bit_minmax_db", "psnr_8bit_tissue_db", "psnr_native_db", "ssim"],
    "table_vs_jpeg2000": ["bits_per_voxel", "psnr_8bit_minmax_db"],
    "table_vs_best_anchor": ["bits_per_voxel", "psnr_8bit_minmax_db"],
    "table_bd_rate": ["points", "anchor_points"],
}


def read_table(path: Path, name: str) -> pd.DataFrame:
    """A table; +inf is a lossless PSNR (the tables' notes say so), NaN a failed run."""
    table = pd.read_csv(path)
    for column in MEASURED.get(name, []):
        if column not in table:
            continue
        values = table[column].astype(float)
        if not np.all(np.isfinite(values) | (values == np.inf)):
            raise FloatingPointError(f"{path}: measured column {column} holds NaN, -inf or blanks")
    return table


def markdown(table: pd.DataFrame) -> str:
    """Missing numbers (the paper's, in volume mode) as 'n/a', as the tables show them; under
    the table, what an infinity in it means."""
    from volinr.report.table_io import infinity_notes

    shown = table.astype(object).where(table.notna(), None)
    text = shown.to_markdown(index=False, floatfmt=".4g", missingval="n/a")
    return "\n\n".join([text, *(f"> {note}" for note in infinity_notes([table]))])


def build_summary(tables_dir: Path, results: Path, methods: list[str] | None = None) -> str:
    """The run's summary; ``methods``: the run's methods (None: a run of all of them)."""

    def read(name: str) -> pd.DataFrame:
        path = tables_dir / f"{name}.csv"
        if not path.is_file():
            raise InputError(f"{path}: table missing")
        return read_table(path, name)

    if methods is None or paper_tables_made(methods):
        lines = _paper_lines(read)
    else:
        missing = [m for m in PAPER_METHODS if m not in methods]
        lines = [
            f"This run compared {', '.join(methods)} only: the paper's tables and figures were "
            f"not made (they need {', '.join(PAPER_METHODS)}; {', '.join(missing)} left out by "
            "rate_distortion.methods).",
            "",
        ]
    lines += _rate_distortion_lines(tables_dir)
    lines.append(
        "All tables with their definitions: `results/tables/*.md`; figures: `results/figures/`."
    )
    return "\n".join(lines) + "\n"


def _paper_lines(read) -> list[str]:
    table4, table5 = read("table4_ours"), read("table5_baseline")
    table6, sr = read("table6_side_by_side"), read("table_sr_check")
    device = table4["device"].iloc[0]
    seconds = sum((t["train_seconds_ours"] * t["seeds"]).sum() for t in (table4, table5))
    lines = [
        f"Last run: {int(table4['iterations_ours'].iloc[0])} iterations on LR (ours) and "
        f"{int(table5['iterations_ours'].iloc[0])} on HR (baseline), on {device}; "
        f"the SIREN fits trained for {seconds:.0f} s in all.",
        "",
        "**Table 6** (paper beside ours; PSNR: 8-bit, min..max window of the original slice):",
        "",
        markdown(table6),
        "",
        "**SR check** (the true LR slice upsampled; the SR model never saw this slice):",
        "",
        markdown(sr),
        "",
    ]
    return lines


def _rate_distortion_lines(tables_dir: Path) -> list[str]:
    lines = []
    versus, best = tables_dir / "table_vs_jpeg2000.csv", tables_dir / "table_vs_best_anchor.csv"
    if versus.is_file():
        best_table = read_table(best, "table_vs_best_anchor") if best.is_file() else None
        lines += _versus_jpeg2000_lines(read_table(versus, "table_vs_jpeg2000"), best_table)
    bd = tables_dir / "table_bd_rate.csv"
    if bd.is_file():
        lines += _bd_rate_lines(read_table(bd, "table_bd_rate"))
    rd = tables_dir / "table_rate_distortion.csv"
    if rd.is_file():
        lines += _training_flag_lines(read_table(rd, "table_rate_distortion"))
    return lines


def _training_flag_lines(table: pd.DataFrame) -> list[str]:
    """A warning for every point whose training went wrong (see the table's training flag)."""
    if "training_flag" not in table:
        return []
    flagged = table[table["training_flag"].fillna("").astype(str) != ""]
    if flagged.empty:
        return []
    lines = ["**Training flags** (these points may be worse than the method can do):", ""]
    lines += [
        f"- {row['method']}, {row['setting']}: {row['training_flag']}"
        for _, row in flagged.iterrows()
    ]
    return lines + [""]


def _versus_jpeg2000_lines(versus: pd.DataFrame, best: pd.DataFrame | None = None) -> list[str]:
    """The rate-distortion verdict: how many stored-image points beat JPEG 2000 at their rate,
    and each method's best point (fewest bits relative to JPEG 2000 at its PSNR) against JPEG
    2000 and against the strongest classical codec at its rate."""
    if versus.empty:
        return [
            "**Against JPEG 2000**: no method of this run but the classical codecs, so nothing "
            "is compared with JPEG 2000 (their BD-rates against each other follow).",
            "",
        ]
    # a setting outside JPEG 2000's sweep has no JPEG 2000 point to compare with (n/a)
    compared = versus[versus["gain_over_jpeg2000_db"].notna()]
    wins = compared[compared["gain_over_jpeg2000_db"] > 0]
    verdict = (
        f"{len(wins)} of the {len(compared)} settings with a JPEG 2000 point at their rate "
        "beat JPEG 2000 there"
    )
    if len(compared) < len(versus):
        verdict += f" ({len(versus) - len(compared)} outside its sweep: n/a)"
    ratio = "size_vs_jpeg2000_at_same_psnr"
    ranked = versus[np.isfinite(versus[ratio].astype(float))]
    chosen = ranked.loc[ranked.groupby("method", sort=False)[ratio].idxmin()]
    columns = [
        "method",
        "setting",
        "bits_per_voxel",
        "psnr_8bit_minmax_db",
        "jpeg2000_bits_per_voxel_at_same_psnr",
        ratio,
    ]
    shown = chosen[columns].assign(setting=chosen["setting"].fillna(""))
    if best is not None and len(best):
        keys = ["method", "setting"]
        extra = best[[*keys, "best_anchor", "size_vs_best_anchor_at_same_psnr"]]
        shown = shown.merge(extra.assign(setting=extra["setting"].fillna("")), on=keys, how="left")
    return [
        f"**Against JPEG 2000** (rates from real files; SR model not counted): {verdict}. "
        "Each method's point with the fewest bits relative to JPEG 2000 at the same PSNR "
        "(8-bit), and the strongest classical codec at that point's rate (`best_anchor`; the "
        "bits it needs for the same PSNR relative to the method's). Every point: "
        "`table_vs_jpeg2000.md`, `table_vs_best_anchor.md`.",
        "",
        markdown(shown.sort_values(ratio, ignore_index=True)),
        "",
    ]


def _bd_rate_lines(bd: pd.DataFrame) -> list[str]:
    """One line a method: its BD-rate against each anchor (8-bit PSNR)."""
    eight_bit = bd[bd["psnr"] == "psnr_8bit_minmax_db"]
    lines = []
    for method, rows in eight_bit.groupby("method", sort=False):
        cells = []
        for _, row in rows.iterrows():
            value = row["bd_rate_percent"]
            # the overlap beside the number: a narrow one makes a BD-rate fragile
            overlap = f"{row['overlap_psnr_low_db']:.4g}..{row['overlap_psnr_high_db']:.4g} dB"
            shown = "n/a" if np.isnan(value) else f"{value:+.1f}% over {overlap}"
            cells.append(f"vs {row['anchor']} {shown}")
        lines.append(f"- {method}: {', '.join(cells)}")
    if not lines:
        return []
    return [
        "**BD-rate** (8-bit PSNR, over the PSNR range both curves cover; negative = fewer bits "
        "than the anchor; n/a: no overlap or too few points, see `table_bd_rate.md`):",
        "",
        *lines,
        "",
    ]
