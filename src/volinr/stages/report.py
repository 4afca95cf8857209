"""Stages that report: the paper's tables, the rate-distortion tables and figure, the other
figures, and the summary.
"""

from __future__ import annotations

import logging
from pathlib import Path

from volinr import provenance
from volinr.errors import InputError
from volinr.outputs import atomic_path

log = logging.getLogger(__name__)


def run_tables(args) -> None:
    from volinr.report import table_io
    from volinr.report.paper_tables import build_tables

    metrics = table_io.load_metrics(args.metrics)
    published = table_io.load_published(args.published)
    if args.mode == "volume":
        published = table_io.published_for_volume(published)
    built = build_tables(metrics, published, args.verdict_margin_db)
    block = provenance.record(args)
    notes = table_io.notes_for(metrics) + table_io.infinity_notes(built.values())
    notes += table_io.units_notes(metrics)
    if args.replicates:
        from volinr.report import replicates

        reference = replicates.load_reference(args.replicates)
        built["table6_side_by_side"], quoted = replicates.quote_reference(
            built["table6_side_by_side"], metrics, reference, args.verdict_margin_db
        )
        notes += quoted
    table_io.write_tables(built, notes, args.out_dir, args.mode, block)


def run_rate_distortion(args) -> None:
    from volinr.report import bd_rate, rd_figure, rd_tables, table_io
    from volinr.report.figure_common import recording

    points = table_io.load_rows(args.rows)
    if points.empty:
        raise InputError(f"{args.rows[0]}...: no operating points among the inputs")
    published = None if args.mode == "volume" else table_io.load_published(args.published)
    table = rd_tables.rate_distortion_table(points, published)
    built = {"table_rate_distortion": table}
    if "jpeg2000" in set(table["method"]):
        built["table_vs_jpeg2000"] = rd_tables.versus_codec(table, "jpeg2000")
    # each comparison with the classical codecs carries its own definitions above the table
    own_notes = {}
    if (table["family"] == "codec").any():
        built["table_vs_best_anchor"] = rd_tables.versus_best_anchor(table)
        own_notes["table_vs_best_anchor"] = [rd_tables.BEST_ANCHOR_NOTE]
        built["table_bd_rate"] = bd_rate.bd_rate_table(table)
        own_notes["table_bd_rate"] = [bd_rate.BD_NOTE]
    notes = [rd_tables.RD_NOTE, table_io.PSNR_NOTE.format(tissue="(see Table 4)")]
    notes += rd_tables.counts_notes(points) + table_io.units_notes(points)
    notes += table_io.refused_notes(args.rows)
    # the rate-distortion table and the JPEG 2000 comparison share the infinities' notes
    shared = [t for name, t in built.items() if name not in own_notes]
    block = provenance.record(args)
    for name, built_table in built.items():
        infinities = [built_table] if name in own_notes else shared
        table_notes = notes + table_io.infinity_notes(infinities) + own_notes.get(name, [])
        if name == "table_rate_distortion":
            table_notes.append(rd_tables.TRAINING_FLAG_NOTE)
        table_io.write_tables({name: built_table}, table_notes, args.out_dir, args.mode, block)
    with recording(block):
        rd_figure.rate_distortion_figure(table, args.sr_amortize_over, Path(args.figure))


FIGURES_BY_MODE = {
    "slice": ("lr-fit", "pipeline", "baseline", "bars", "comparison", "sr-training"),
    "volume": (
        "lr-fit", "pipeline", "baseline", "bars", "comparison", "sr-training", "per-slice",
        "orthogonal",
    ),
}  # fmt: skip
FIGURE_FILES = {
    "lr-fit": "fig4-6_lr_fit_L{layers}.png",
    "pipeline": "fig7-9_pipeline_L{layers}.png",
    "baseline": "fig10-12_baseline_L{layers}.png",
    "bars": "fig13_bars.png",
    "comparison": "fig14_comparison.png",
    "sr-training": "fig_sr_training.png",
    "per-slice": "volume_per_slice.png",
    "orthogonal": "volume_orthogonal.png",
}


def figure_files(mode: str, layers: list[int]) -> list[str]:
    """The file names ``volinr figures`` writes for a run (the workflow declares them)."""
    names = []
    for kind in FIGURES_BY_MODE[mode]:
        pattern = FIGURE_FILES[kind]
        names += [pattern.format(layers=n) for n in layers] if "{" in pattern else [pattern]
    return names


def run_figures(args) -> None:
    """Every figure of the paper (and of volume mode) for a run, in one process."""
    from volinr.report import paper_figures, volume_figures
    from volinr.report.figure_common import FigureInputs, recording

    out_dir = Path(args.out_dir)
    kinds = args.kinds or FIGURES_BY_MODE[args.mode]
    with recording(provenance.record(args)):
        if "sr-training" in kinds:
            curve = Path(args.results) / "sr/training_curve.csv"
            paper_figures.sr_training_figure(curve, out_dir / FIGURE_FILES["sr-training"])
        inputs = FigureInputs(Path(args.results), Path(args.tables_dir), args.seed)
        per_layer = {
            "lr-fit": paper_figures.lr_fit_figure,
            "pipeline": paper_figures.pipeline_figure,
            "baseline": paper_figures.baseline_figure,
        }
        for kind, draw in per_layer.items():
            if kind in kinds:
                for n in args.layers:
                    draw(inputs, n, out_dir / FIGURE_FILES[kind].format(layers=n))
        if "bars" in kinds:
            paper_figures.bars_figure(inputs, out_dir / FIGURE_FILES["bars"])
        if "comparison" in kinds:
            path = out_dir / FIGURE_FILES["comparison"]
            paper_figures.comparison_figure(inputs, args.layers, path)
        if "per-slice" in kinds:
            path = out_dir / FIGURE_FILES["per-slice"]
            volume_figures.per_slice_figure(inputs, args.layers, path)
        if "orthogonal" in kinds:
            path = out_dir / FIGURE_FILES["orthogonal"]
            volume_figures.orthogonal_figure(inputs, args.layers, path)


def run_summary(args) -> None:
    from volinr.report.summary import build_summary

    text = build_summary(Path(args.tables_dir), Path(args.results), args.methods)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text + provenance.markdown_footer(provenance.record(args)))


def run_suite_report(args) -> None:
    """The suite's tables across its datasets, its figure and its summary (verdict first)."""
    import pandas as pd

    from volinr.report import suite, table_io
    from volinr.report.figure_common import recording

    datasets, licences = [], []
    for name, tables, anatomy, paper, licence in args.dataset:
        if paper not in ("paper", "no-paper"):
            raise InputError(f"--dataset {name}: expected paper or no-paper, got {paper!r}")
        datasets.append(suite.Dataset(name, Path(tables), anatomy, paper == "paper"))
        licences.append({"dataset": name, "anatomy": anatomy, "licence": licence})
    per_dataset, means = suite.bd_rate_tables(datasets)
    claims = suite.paper_claim_table(datasets)
    counts = suite.claim_counts(claims)
    sr = suite.sr_gain_table(datasets)
    points = suite.rate_distortion_points(datasets)
    curves = suite.mean_curves(points)
    built = {
        "suite_datasets": pd.DataFrame(licences),
        "suite_bd_rate": per_dataset,
        "suite_bd_rate_mean": means,
        "suite_paper_claim": claims,
        "suite_paper_claim_counts": counts,
        "suite_sr_gain": sr,
    }
    notes = [
        "Each dataset is one run of the workflow on the suite's config with that dataset's "
        "overrides (results/suite/<name>); its numbers come from that run's tables (BD-rates: "
        "table_bd_rate, 8-bit PSNR; the claim: table6_side_by_side; SR: table_sr_check). 95% "
        "CI: Student's t interval of the mean over the datasets that have the number (none "
        "with one).",
    ]
    block = provenance.record(args)
    table_io.write_tables(built, notes, args.out_dir, "slice", block)
    with recording(block):
        suite.suite_figure(points, curves, Path(args.figure))
    text = suite.suite_summary(datasets, means, counts, sr)
    with atomic_path(args.summary) as tmp:
        tmp.write_text(text + provenance.markdown_footer(block))
