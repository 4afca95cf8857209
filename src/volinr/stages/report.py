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
    built = build_tables(metrics, published)
    block = provenance.record(args)
    notes = table_io.notes_for(metrics) + table_io.infinity_notes(built.values())
    table_io.write_tables(built, notes, args.out_dir, args.mode, block)


def run_rate_distortion(args) -> None:
    import pandas as pd

    from volinr.report import rd_figure, rd_tables, table_io
    from volinr.report.figure_common import recording

    metrics = table_io.load_metrics(args.metrics)
    containers = metrics[metrics["method"].str.endswith(" container")]
    references = metrics[metrics["method"].str.startswith("true LR + ")]
    if containers.empty:
        raise InputError(f"{args.metrics[0]}...: no container metrics among the inputs")
    codecs = None
    if args.codecs:
        try:
            codecs = pd.read_csv(args.codecs)
        except (OSError, ValueError) as err:
            raise InputError(f"{args.codecs}: unreadable codec sweep ({err})") from None
    published = None if args.mode == "volume" else table_io.load_published(args.published)
    table = rd_tables.rate_distortion_table(containers, references, codecs, published)
    built = {"table_rate_distortion": table}
    if codecs is not None:
        built["table_vs_jpeg2000"] = rd_tables.versus_codec(table, "jpeg2000")
    notes = [rd_tables.RD_NOTE, table_io.PSNR_NOTE.format(tissue="(see Table 4)")]
    notes += table_io.infinity_notes(built.values())
    block = provenance.record(args)
    table_io.write_tables(built, notes, args.out_dir, args.mode, block)
    with recording(block):
        rd_figure.rate_distortion_figure(table, args.sr_amortize_over, Path(args.figure))


def run_figure(args) -> None:
    from volinr.report.figure_common import recording

    with recording(provenance.record(args)):
        _draw_figure(args)


def _draw_figure(args) -> None:
    from volinr.report import paper_figures, volume_figures
    from volinr.report.figure_common import FigureInputs

    out = Path(args.out)
    if args.kind == "sr-training":
        paper_figures.sr_training_figure(Path(args.results) / "sr/training_curve.csv", out)
        return
    inputs = FigureInputs(Path(args.results), Path(args.tables_dir), args.seed)
    if args.kind == "bars":
        paper_figures.bars_figure(inputs, out)
    elif args.kind == "comparison":
        paper_figures.comparison_figure(inputs, args.layers, out)
    elif args.kind == "per-slice":
        volume_figures.per_slice_figure(inputs, args.layers, out)
    elif args.kind == "orthogonal":
        volume_figures.orthogonal_figure(inputs, args.layers, out)
    else:
        draw = {
            "lr-fit": paper_figures.lr_fit_figure,
            "pipeline": paper_figures.pipeline_figure,
            "baseline": paper_figures.baseline_figure,
        }[args.kind]
        draw(inputs, args.layers[0], out)


def run_summary(args) -> None:
    from volinr.report.summary import build_summary

    text = build_summary(Path(args.tables_dir), Path(args.results))
    with atomic_path(args.out) as tmp:
        tmp.write_text(text + provenance.markdown_footer(provenance.record(args)))
