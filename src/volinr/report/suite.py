"""A verdict over a dataset: the suite's tables, figure and summary from each dataset's run.

Each dataset of a suite is one run of the workflow (``results/suite/<name>``); this reads the
tables every run wrote and sets them side by side:

- every method's BD-rate and BD-PSNR against JPEG 2000, HEVC and AV1 on each dataset, and
  their mean over the datasets with a 95% confidence interval (Student's t over datasets: the
  datasets are the sample, so the interval says how much the verdict could move on other CT
  like these);
- the paper's claim on each dataset (its method against the baseline at each layer count,
  best PSNR) and how many datasets it holds on;
- the SR network's gain over Lanczos on each dataset's true LR image;
- a figure with one rate-distortion panel per dataset and one of the mean curves (each
  method's PSNR averaged over the datasets at rates every dataset's curve covers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from volinr.errors import InputError

ANCHORS = ("jpeg2000", "hevc", "av1")
PSNR = "psnr_8bit_minmax_db"
CLAIM = "best PSNR (dB, 8-bit min..max)"


@dataclass(frozen=True)
class Dataset:
    name: str
    tables: Path  # the run's tables folder
    anatomy: str
    paper: bool  # whether its run made the paper's tables


# The columns the suite reads from each run's table: (text, numeric); a numeric cell may be
# empty (a number that does not exist, e.g. no PSNR overlap), never text.
COLUMNS = {
    "table_bd_rate": (("method", "family", "anchor", "psnr"), ("bd_rate_percent", "bd_psnr_db")),
    "table6_side_by_side": (("quantity",), ("layers", "ours_measured", "baseline_measured")),
    "table_sr_check": (("method",), (PSNR, "gain_over_lanczos_db")),
    "table_rate_distortion": (("method", "family"), ("bits_per_voxel", PSNR)),
}
# Read as whole numbers (a layer count): every cell present and integral.
INTEGER_COLUMNS = ("layers",)


def _read(dataset: Dataset, table: str) -> pd.DataFrame:
    """A run's table, refused (naming the dataset and the file) when it is missing, is not a
    readable CSV, lacks a column the suite reads or holds text where a number belongs."""
    path = dataset.tables / f"{table}.csv"
    if not path.is_file():
        raise InputError(f"{path}: the {dataset.name} run's {table} is missing")

    def refuse(problem: str) -> InputError:
        return InputError(f"{path}: dataset {dataset.name}: its {table} {problem}")

    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise refuse(f"is not a readable CSV table ({err})") from None
    text, numeric = COLUMNS[table]
    missing = [c for c in (*text, *numeric) if c not in frame.columns]
    if missing:
        raise refuse(f"has no column {', '.join(missing)} (not volinr's table?)")
    for column in text:
        if frame[column].isna().any():
            raise refuse(f"has an empty cell in column {column}")
        frame[column] = frame[column].astype(str)
    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce").astype(float)
        bad = values.isna() & frame[column].notna()
        if column in INTEGER_COLUMNS:
            bad = ~np.isfinite(values) | (values != values.round())
        if bad.any():
            kind = "a whole number" if column in INTEGER_COLUMNS else "a number"
            raise refuse(f"holds {frame[column][bad].iloc[0]!r} in column {column}, not {kind}")
        frame[column] = values
    return frame


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% Student's t interval of the mean; NaN bounds for n < 2."""
    from scipy import stats

    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def _across_datasets(method: str) -> str:
    """A method's name the same on every dataset: a stored LR image's table name says which
    lossless codec was smallest there, which may differ from dataset to dataset."""
    return re.sub(r" \(LR coded losslessly by [^)]*\)$", "", method)


def bd_rate_tables(datasets: Sequence[Dataset]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per dataset, mean over datasets): BD-rate and BD-PSNR of every method against each
    anchor, 8-bit PSNR."""
    rows = []
    for dataset in datasets:
        table = _read(dataset, "table_bd_rate")
        table = table[(table["psnr"] == PSNR) & table["anchor"].isin(ANCHORS)]
        for record in table.to_dict("records"):
            rows.append(
                {
                    "dataset": dataset.name,
                    "anatomy": dataset.anatomy,
                    "method": _across_datasets(record["method"]),
                    "family": record["family"],
                    "anchor": record["anchor"],
                    "bd_rate_percent": record["bd_rate_percent"],
                    "bd_psnr_db": record["bd_psnr_db"],
                }
            )
    per_dataset = pd.DataFrame(rows)
    means = []
    if not per_dataset.empty:
        for (method, family, anchor), group in per_dataset.groupby(
            ["method", "family", "anchor"], sort=False
        ):
            rate, rate_low, rate_high = mean_ci95(group["bd_rate_percent"])
            psnr, psnr_low, psnr_high = mean_ci95(group["bd_psnr_db"])
            means.append(
                {
                    "method": method,
                    "family": family,
                    "anchor": anchor,
                    "datasets": int(group["bd_rate_percent"].notna().sum()),
                    "of_datasets": len(datasets),
                    "mean_bd_rate_percent": rate,
                    "bd_rate_ci95_low": rate_low,
                    "bd_rate_ci95_high": rate_high,
                    "mean_bd_psnr_db": psnr,
                    "bd_psnr_ci95_low": psnr_low,
                    "bd_psnr_ci95_high": psnr_high,
                }
            )
    return per_dataset, pd.DataFrame(means)


def paper_claim_table(datasets: Sequence[Dataset]) -> pd.DataFrame:
    """The paper's claim (its method's best PSNR above the baseline's) per dataset and layer
    count, with the margin; datasets whose run made no paper tables are left out."""
    rows = []
    for dataset in datasets:
        if not dataset.paper:
            continue
        table = _read(dataset, "table6_side_by_side")
        for record in table[table["quantity"] == CLAIM].to_dict("records"):
            margin = record["ours_measured"] - record["baseline_measured"]
            rows.append(
                {
                    "dataset": dataset.name,
                    "anatomy": dataset.anatomy,
                    "layers": int(record["layers"]),
                    "ours_db": record["ours_measured"],
                    "baseline_db": record["baseline_measured"],
                    "margin_db": margin,
                    # the margin this dataset's verdict needed (machines' spread, seeds' CI)
                    "resolution_db": record.get("resolution_db", math.nan),
                    "claim_holds": bool(margin > 0),
                    "verdict": _verdict(record.get("verdict"), margin),
                }
            )
    return pd.DataFrame(rows)


def _verdict(verdict, margin: float) -> str:
    """The dataset's Table 6 verdict; from the margin's sign where its table has none (read
    from CSV, a missing verdict is NaN)."""
    if isinstance(verdict, str) and verdict:
        return verdict
    if not math.isfinite(margin):
        return "no verdict"
    return "ours better" if margin > 0 else "baseline better"


def claim_counts(claims: pd.DataFrame) -> pd.DataFrame:
    """Per layer count: on how many datasets the claim holds, and the mean margin's CI."""
    rows = []
    if claims.empty:
        return pd.DataFrame(rows)
    for layers, group in claims.groupby("layers"):
        mean, low, high = mean_ci95(group["margin_db"])
        rows.append(
            {
                "layers": layers,
                "holds_on": int(group["claim_holds"].sum()),
                "of_datasets": len(group),
                # by each dataset's verdict: the margin beyond what that verdict needed
                "resolved_ours_better": int((group["verdict"] == "ours better").sum()),
                "not_resolved": int((group["verdict"] == "not resolved").sum()),
                "resolved_baseline_better": int((group["verdict"] == "baseline better").sum()),
                "mean_margin_db": mean,
                "margin_ci95_low": low,
                "margin_ci95_high": high,
            }
        )
    return pd.DataFrame(rows)


def sr_gain_table(datasets: Sequence[Dataset]) -> pd.DataFrame:
    """SRDenseNet's PSNR gain over Lanczos on each dataset's true LR image."""
    rows = []
    for dataset in datasets:
        if not dataset.paper:
            continue
        table = _read(dataset, "table_sr_check")
        sr = table[table["method"] == "true LR + sr"]
        if sr.empty:
            continue
        rows.append(
            {
                "dataset": dataset.name,
                "anatomy": dataset.anatomy,
                "sr_psnr_db": float(sr[PSNR].iloc[0]),
                "sr_gain_over_lanczos_db": float(sr["gain_over_lanczos_db"].iloc[0]),
            }
        )
    return pd.DataFrame(rows)


def rate_distortion_points(datasets: Sequence[Dataset]) -> pd.DataFrame:
    """Every dataset's rate-distortion rows (published points aside), with its name."""
    frames = []
    for dataset in datasets:
        table = _read(dataset, "table_rate_distortion")
        table = table[table["family"] != "published"].assign(dataset=dataset.name)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def mean_curves(points: pd.DataFrame, samples: int = 12) -> pd.DataFrame:
    """Each method's PSNR averaged over the datasets at log-spaced rates inside every
    dataset's range for it (methods on fewer than all datasets are left out)."""
    datasets = points["dataset"].nunique()
    rows = []
    lossy = points[np.isfinite(points[PSNR].astype(float)) & (points["bits_per_voxel"] > 0)]
    for method, group in lossy.groupby("method", sort=False):
        curves = []
        for _, curve in group.groupby("dataset"):
            curve = curve.groupby("bits_per_voxel", as_index=False)[PSNR].max()
            if len(curve) >= 2:
                curves.append(curve.sort_values("bits_per_voxel"))
        if len(curves) < datasets or datasets == 0:
            continue
        low = max(c["bits_per_voxel"].iloc[0] for c in curves)
        high = min(c["bits_per_voxel"].iloc[-1] for c in curves)
        if not low < high:
            continue
        rates = np.geomspace(low, high, samples)
        values = [
            np.interp(np.log(rates), np.log(c["bits_per_voxel"]), c[PSNR].astype(float))
            for c in curves
        ]
        for rate, psnr in zip(rates, np.mean(values, axis=0), strict=True):
            rows.append({"method": method, "bits_per_voxel": rate, PSNR: psnr})
    return pd.DataFrame(rows, columns=["method", "bits_per_voxel", PSNR])  # maybe none


def suite_figure(points: pd.DataFrame, curves: pd.DataFrame, path: Path) -> None:
    """One small rate-distortion panel per dataset, and one of the mean curves."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from volinr.report.figure_common import save_figure

    names = list(dict.fromkeys(points["dataset"]))
    panels = len(names) + 1
    columns = min(panels, 4)
    rows = math.ceil(panels / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    methods = list(dict.fromkeys(points["method"]))
    palette = dict(zip(methods, sns.color_palette("tab20", len(methods)), strict=True))
    shown = points[np.isfinite(points[PSNR].astype(float)) & (points["bits_per_voxel"] > 0)]
    for ax, name in zip(axes.flat, names, strict=False):
        for method, group in shown[shown["dataset"] == name].groupby("method", sort=False):
            group = group.sort_values("bits_per_voxel")
            ax.plot(group["bits_per_voxel"], group[PSNR], ".-", color=palette[method], lw=1)
        ax.set_title(name, fontsize=9)
    mean_ax = axes.flat[len(names)]
    for method, group in curves.groupby("method", sort=False):
        mean_ax.plot(group["bits_per_voxel"], group[PSNR], "-", color=palette[method], label=method)
    mean_ax.set_title(f"mean over {len(names)} datasets", fontsize=9)
    for ax in axes.flat[:panels]:
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=7)
    for ax in axes.flat[panels:]:
        ax.axis("off")
    fig.supxlabel("bits per voxel (log)")
    fig.supylabel("PSNR (dB, 8-bit, min..max window)")
    handles = [plt.Line2D([], [], color=palette[m], label=m) for m in methods]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _interval(mean: float, low: float, high: float, unit: str) -> str:
    if not np.isfinite(low):
        return f"{mean:+.1f}{unit} (one dataset: no interval)"
    return f"{mean:+.1f}{unit} [95% CI {low:+.1f}, {high:+.1f}]"


def _interval_of(record: dict, mean: str, prefix: str, unit: str) -> str:
    """A record's mean and its interval (``<prefix>_ci95_low``/``_high``) as text."""
    low, high = record[f"{prefix}_ci95_low"], record[f"{prefix}_ci95_high"]
    return _interval(record[mean], low, high, unit)


def suite_summary(
    datasets: Sequence[Dataset], means: pd.DataFrame, counts: pd.DataFrame, sr: pd.DataFrame
) -> str:
    """The suite's verdict first: each method against each anchor over the datasets, then the
    paper's claim counted over them, then the SR gain's spread."""
    lines = [
        f"# Suite verdict over {len(datasets)} datasets "
        f"({', '.join(sorted({d.anatomy for d in datasets}))})",
        "",
        "Mean BD-rate (8-bit PSNR) over the datasets, with the 95% confidence interval of the "
        "mean (Student's t over datasets); negative: fewer bits than the anchor.",
        "",
    ]
    measured = means[means["family"] != "codec"] if not means.empty else means
    apart = measured[measured["datasets"] == 0] if not measured.empty else measured
    measured = measured[measured["datasets"] > 0] if not measured.empty else measured
    for record in measured.to_dict("records"):
        rate = _interval_of(record, "mean_bd_rate_percent", "bd_rate", "%")
        lines.append(
            f"- {record['method']} against {record['anchor']}: {rate} "
            f"({record['datasets']} of {record['of_datasets']} datasets overlap)"
        )
    if not apart.empty:
        pairs = sorted({f"{r['method']} against {r['anchor']}" for r in apart.to_dict("records")})
        lines.append(f"- no PSNR overlap on any dataset (no BD-rate): {'; '.join(pairs)}")
    lines.append("")
    if not counts.empty:
        lines.append("The paper's claim (its method's best PSNR above the baseline's):")
        lines.append("")
        for record in counts.to_dict("records"):
            margin = _interval_of(record, "mean_margin_db", "margin", " dB")
            lines.append(
                f"- {record['layers']} layers: holds on {record['holds_on']} of "
                f"{record['of_datasets']} datasets (resolved: ours better on "
                f"{record['resolved_ours_better']}, baseline better on "
                f"{record['resolved_baseline_better']}; not resolved on "
                f"{record['not_resolved']}); mean margin {margin}"
            )
        lines.append("")
    if not sr.empty:
        mean, low, high = mean_ci95(sr["sr_gain_over_lanczos_db"])
        lines.append(
            f"SR gain over Lanczos on the true LR image: {_interval(mean, low, high, ' dB')}; "
            f"from {sr['sr_gain_over_lanczos_db'].min():+.2f} to "
            f"{sr['sr_gain_over_lanczos_db'].max():+.2f} dB."
        )
        lines.append("")
    lines.append(
        "Per-dataset tables: `results/suite/tables/*.md`; each dataset's own run: "
        "`results/suite/<name>/`."
    )
    return "\n".join(lines) + "\n"
