"""The project's neural codec beside Cool-chic's reference on the same slice (dev script, not
imported by the package): BD-rate and BD-PSNR of each of our sweeps against the peer and of
the peer and our sweeps against the classical anchors, by the project's own recipe
(``volinr.report.bd_rate``), plus both sets of points side by side.

    python benchmarks/peer_comparison.py --peer PEER_ROWS.json \
        --ours before=benchmarks/results/neural_codec_slice_before \
        after=benchmarks/results/neural_codec_slice --anchors /tmp/sweep/rd/classical \
        --out benchmarks/results/peer_comparison

``--peer``: the rows ``coolchic_peer.py --rows-out`` writes, or its committed record
(``coolchic_peer.json``, whose ``points`` are those rows); ``--ours``: LABEL=a sweep's
rows or its ``table_rate_distortion`` (the neural codec's rows are taken); ``--anchors``: the
classical codecs' rows on the same image. Curves labelled "NAME, seed N" for several N are
also summarised across their seeds (each seed's BD-rate; their mean, standard deviation,
range and a Student-t 95% interval of the mean): one seed's curve is one draw of the
training's initialisation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from pathlib import Path

import pandas as pd
from coolchic_peer import load_table  # a sibling dev script

from volinr.report.bd_rate import PSNR_COLUMNS, bd_metrics, rd_curve

log = logging.getLogger("peer_comparison")
ANCHORS = ("jpeg2000", "hevc", "av1")
POINT_COLUMNS = ["curve", "setting", "bits_per_voxel", "psnr_8bit_minmax_db", "psnr_native_db"]


def neural_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["method"].astype(str).str.startswith("neural codec")]


def load_peer(path: Path) -> pd.DataFrame:
    """The peer's rows: ``coolchic_peer.json`` (its ``points``) or a ``load_table`` table."""
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "points" in record:
            points = [p for p in record["points"] if p.get("family") == "coolchic_peer"]
            if not points:
                sys.exit(f"{path}: no Cool-chic points (family coolchic_peer)")
            return pd.DataFrame(points)
    return load_table(path)


def bd(test: pd.DataFrame, anchor: pd.DataFrame, test_name: str, anchor_name: str) -> list:
    rows = []
    for column in PSNR_COLUMNS:
        result = bd_metrics(rd_curve(test, column), rd_curve(anchor, column))
        rows.append({"curve": test_name, "against": anchor_name, "psnr": column, **result})
    return rows


def across_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """The BD-rates of the curves labelled "NAME, seed N" grouped by NAME (two seeds or more)."""
    from scipy import stats

    found = table["curve"].str.extract(r"^this codec \((.*), seed (\d+)\)$")
    seeded = table.assign(group=found[0], seed=found[1]).dropna(subset=["group"])
    rows = []
    for (group, against, psnr), cell in seeded.groupby(["group", "against", "psnr"], sort=False):
        values = cell["bd_rate_percent"].dropna()
        if cell["seed"].nunique() < 2:
            continue
        n, mean, sd = len(values), values.mean(), values.std(ddof=1)
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
        rows.append({
            "curves": group, "against": against, "psnr": psnr, "seeds": n,
            "bd_rate_percent_each": ", ".join(f"{v:.1f}" for v in values),
            "mean": mean, "sd": sd, "min": values.min(), "max": values.max(),
            "ci95_low": mean - half, "ci95_high": mean + half,
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", type=Path, required=True)
    parser.add_argument("--ours", nargs="+", required=True, metavar="LABEL=PATH")
    parser.add_argument("--anchors", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output stem (.md, .json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    peer = load_peer(args.peer)
    peer_name = str(peer["method"].iloc[0])
    anchors = load_table(args.anchors)
    curves = {peer_name: peer}
    for item in args.ours:
        label, _, path = item.partition("=")
        curves[f"this codec ({label})"] = neural_rows(load_table(Path(path)))
    rows = []
    for name, points in curves.items():
        if name != peer_name:
            rows += bd(points, peer, name, peer_name)
        for codec in ANCHORS:
            rows += bd(points, anchors[anchors["method"] == codec], name, codec)
    table = pd.DataFrame(rows)
    points = pd.concat([p.assign(curve=name) for name, p in curves.items()], ignore_index=True)[
        POINT_COLUMNS
    ]
    record = {
        "command": shlex.join(["python", *sys.argv]),
        "points": points.to_dict("records"),
        "bd": [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in rows
        ],
    }
    seeds = across_seeds(table)
    if not seeds.empty:
        record["across_seeds"] = seeds.to_dict("records")
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    shown = table[
        ["curve", "against", "psnr", "bd_rate_percent", "bd_psnr_db", "points", "anchor_points"]
        + [c for c in ("overlap_psnr_low_db", "overlap_psnr_high_db", "bd_note") if c in table]
    ]
    text = [
        "# This codec beside Cool-chic's reference on the embedded slice",
        "",
        f"`{record['command']}`. BD-rate: the curve's bits against the other's at equal PSNR "
        "over the PSNR range both cover (negative: fewer bits), PCHIP in log rate "
        "(`volinr.report.bd_rate`); BD-PSNR: dB at equal rate. Every rate is 8 x a real "
        "file's bytes / voxels, every PSNR the project's own on the decoded file.",
        "",
        "## Points",
        "",
        points.to_markdown(index=False, floatfmt=".4g"),
        "",
        "## Bjontegaard deltas",
        "",
        shown.to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    if not seeds.empty:
        text += [
            "## Across seeds",
            "",
            "BD-rate of each seed's curve (the codec's `seed`: its initialisations and noise), "
            "their mean, sample standard deviation, range, and the Student-t 95% interval of "
            "the mean (with a few seeds a wide one). The peer and the anchors are one run each.",
            "",
            seeds.to_markdown(index=False, floatfmt=".4g"),
            "",
        ]
    args.out.with_suffix(".md").write_text("\n".join(text))
    log.info("wrote %s", args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
