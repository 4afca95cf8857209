"""The paper's Tables 4-7 with its published numbers beside ours, plus the SR check and the
ablation; CSV for machines, Markdown (with the metric definitions above each table) for people.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from volinr import provenance
from volinr.errors import InputError
from volinr.io import read_json
from volinr.outputs import atomic_path

log = logging.getLogger(__name__)

PSNR_NOTE = (
    "PSNR (dB): the paper's definition, 8-bit images (peak 255) after the min..max window of "
    "the original image, rounded to integers; 'tissue' uses the window {tissue}; 'native' is "
    "PSNR on HU with peak = the original's max - min; SSIM on HU (scikit-image, data_range = "
    "max - min; a volume's SSIM is the mean over its axial slices). With several seeds: "
    "mean, and the 95% confidence interval half-width (t)."
)
RATE_NOTE = (
    "Compression rate, paper convention: bytes of the 8-bit original (1 byte a voxel) / bytes "
    "of the saved SIREN weights file (SR model not counted). 16-bit: 2 bytes a voxel of the "
    "original / the weights file; 'with SR' adds the SRDenseNet checkpoint's bytes. Bits per "
    "voxel: 8 x the stored bytes / voxels of the full-resolution original, the stored bytes "
    "being the SIREN weights file, or for a 'true LR' row the LR image coded losslessly by the "
    "smallest of the lossless codecs (named in the row); the SR model not counted."
)
TIME_NOTE = (
    "Time: wall-clock seconds of the training steps alone (evaluation passes excluded) for "
    "the iterations we ran, on {device} (torch.compile's one-off compile time, where used, is "
    "in its own column); 'per 50k' extrapolates our steady-state time per "
    "iteration to the paper's 50,000. Memory: the paper's 'GPU memory (KB)'; ours is {memory}."
)
PEAK2_DB = 20 * math.log10(2.0)  # peak-to-peak 2 ([-1, 1]) against peak 1
LR_FIT_NOTE = (
    "LR fit (Table 4 only): PSNR of the SIREN against the LR slice during training, in the LR "
    "slice's own min..max window (peak-to-peak 2 on the [-1, 1] scale of the MSE loss); the "
    "paper's Figure 5/6 values satisfy PSNR = -10 log10(loss), i.e. peak 1 on the loss's scale, "
    "so '_peak1' gives ours on that relation (6.02 dB lower). Losses: MSE on the [-1, 1] scale."
)
LOSSLESS_NOTE = (
    "Lossless: the PSNR of a reconstruction identical to the original (MSE 0) is infinite, "
    "shown as inf (a mean over seeds that includes one is inf, its interval n/a); the metrics "
    "JSON writes it as null and lists it under infinite_values."
)
CODEC_LOSSLESS_NOTE = (
    "Against a codec: at or above the codec's lossless rate its PSNR at the same rate is inf "
    "(it stores the image exactly) and the gain over it -inf; empty: outside the codec's sweep."
)
MEMORY_KINDS = {
    "cuda_max_memory_allocated": "torch.cuda.max_memory_allocated (KB)",
    "cpu_peak_rss_increase": "the process's peak RSS increase during training on CPU (KB)",
}


PUBLISHED_KEYS = ("siren_params", "ours", "baseline_full_res_siren", "other_methods_best_psnr_db")


def load_published(path: str | Path) -> dict[str, Any]:
    try:
        published = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path}: cannot read the published numbers ({err})") from None
    missing = [k for k in PUBLISHED_KEYS if k not in (published or {})]
    if missing:
        raise InputError(f"{path}: the published numbers lack {', '.join(missing)}")
    return published


def published_for_volume(published: dict[str, Any]) -> dict[str, Any]:
    """The paper reports one 2D slice: for a volume every published quality, time, memory and
    rate is 'n/a'; only the SIREN parameter counts (architecture) still apply."""
    return {
        "siren_params": published["siren_params"],
        "ours": {key: {} for key in published["ours"]},
        "baseline_full_res_siren": {key: {} for key in published["baseline_full_res_siren"]},
        "other_methods_best_psnr_db": {},
    }


def mean_ci95(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, 95% confidence half-width (Student t; NaN for one value, or where a value is an
    infinite PSNR) and count."""
    values = np.asarray(list(values), dtype=np.float64)
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(values.mean())
    if n < 2 or not np.all(np.isfinite(values)):
        return mean, math.nan, n
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean, half, n


def _per_layer(metrics: pd.DataFrame, method: str) -> dict[int, pd.DataFrame]:
    rows = metrics[metrics["method"] == method]
    return {int(layers): group for layers, group in rows.groupby("layers")}


def _mean(group: pd.DataFrame, column: str) -> float:
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
            "psnr_8bit_tissue_db_ours": _mean(group, "psnr_8bit_tissue_db"),
            "psnr_native_db_ours": _mean(group, "psnr_native_db"),
            "ssim_ours": _mean(group, "ssim"),
            "device": str(group["device"].iloc[0]),
        }
        if method == "ours":
            row.update(
                lr_fit_best_psnr_db_paper=paper.get("lr_fit_best_psnr_db", {}).get(
                    layers, math.nan
                ),
                lr_fit_best_psnr_db_ours=_mean(group, "fit_best_psnr_db"),
                # The paper's LR-fit numbers obey PSNR = -10 log10(loss) (peak 1 on the loss's
                # own scale); ours on that relation, with our loss on the [-1, 1] scale:
                lr_fit_best_psnr_db_ours_peak1=_mean(group, "fit_best_psnr_db") - PEAK2_DB,
                lr_fit_final_loss_paper=paper.get("lr_fit_final_loss", {}).get(layers, math.nan),
                lr_fit_final_loss_ours=_mean(group, "fit_final_loss"),
            )
        row.update(
            iterations_ours=int(group["iterations"].iloc[0]),
            train_seconds_ours=_mean(group, "train_seconds"),
            compile_seconds_ours=_mean(group, "compile_seconds"),
            train_seconds_per_50k_paper=paper["train_seconds_per_50k_iters"].get(layers, math.nan),
            train_seconds_per_50k_ours=_mean(group, "seconds_per_50k_iterations_extrapolated"),
            memory_kb_paper=paper["gpu_memory_kb"].get(layers, math.nan),
            memory_kb_ours=_mean(group, "peak_memory_kb"),
            compression_rate_paper=paper["compression_rate"].get(layers, math.nan),
            compression_rate_ours_paper_convention=_mean(group, "compression_rate_paper"),
            compression_rate_ours_16bit=_mean(group, "compression_rate_16bit"),
        )
        if method == "ours":
            row["compression_rate_ours_16bit_with_sr"] = _mean(
                group, "compression_rate_16bit_with_sr"
            )
        row["bits_per_voxel_ours"] = _mean(group, "bits_per_voxel")
        rows.append(row)
    if not rows:
        raise InputError(f"no metrics for method {method!r}")
    return pd.DataFrame(rows).sort_values("layers").reset_index(drop=True)


def side_by_side(ours: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Table 6: the paper's and our baseline and ours, per quantity and layer count."""
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
    return table


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


def load_metrics(paths: Iterable[str | Path]) -> pd.DataFrame:
    records = []
    for path in paths:
        try:
            record = read_json(path)  # an infinite PSNR (written as null) comes back as inf
        except OSError as err:
            raise InputError(f"{path}: unreadable metrics file ({err})") from None
        _check_record_finite(path, record)
        record.pop("provenance", None)  # the tables carry their own
        records.append(record)
    return pd.DataFrame.from_records(records)


def _check_record_finite(path: str | Path, record: dict[str, Any]) -> None:
    """A measured value (PSNR, SSIM, seconds, sizes) that is NaN/Inf is a failed run, not a
    missing number: refuse it here, where the file is known; a table's mean would skip a NaN
    silently. The one exception is a PSNR of +inf: a lossless reconstruction (MSE 0). Missing
    keys stay missing (NaN in the frame, 'n/a' in the Markdown)."""
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a metrics record (a JSON object)")
    for key, value in record.items():
        values = value if isinstance(value, list) else [value]
        lossless = "psnr" in key and all(v == math.inf for v in values)
        if not lossless and any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise FloatingPointError(f"{path}: measured value {key} is {value} (not finite)")


def _check_finite(name: str, table: pd.DataFrame, columns: Iterable[str]) -> None:
    """NaN is a failed run; +inf is allowed only for a PSNR (a lossless reconstruction)."""
    for column in columns:
        if column not in table:
            continue
        values = table[column].astype(float)
        allowed = np.isfinite(values) | (("psnr" in column) & (values == np.inf))
        if not np.all(allowed):
            raise FloatingPointError(f"table {name}: column {column} holds non-finite values")


def infinity_notes(tables: Iterable[pd.DataFrame]) -> list[str]:
    """The notes that explain the infinities the ``tables`` hold (none: no note). A codec's
    comparison columns are infinite where the codec is lossless; any other infinity in a table
    is a lossless PSNR, the only one ``load_metrics`` lets through."""
    notes = []
    for table in tables:
        numbers = table.select_dtypes("number")
        infinite = [c for c in numbers if np.isinf(numbers[c].to_numpy(float)).any()]
        versus = [c for c in infinite if "same_rate" in c or c.startswith("gain_over_")]
        if versus:
            notes.append(CODEC_LOSSLESS_NOTE)
        if len(versus) < len(infinite):
            notes.append(LOSSLESS_NOTE)
    return list(dict.fromkeys(notes))


def build_tables(metrics: pd.DataFrame, published: dict) -> dict[str, pd.DataFrame]:
    ours = _method_table(metrics, published, "ours")
    baseline = _method_table(metrics, published, "baseline")
    for name, table in (("table4_ours", ours), ("table5_baseline", baseline)):
        _check_finite(name, table, ["best_psnr_db_ours", "train_seconds_ours", "ssim_ours"])
    return {
        "table4_ours": ours,
        "table5_baseline": baseline,
        "table6_side_by_side": side_by_side(ours, baseline),
        "table7_other_methods": other_methods(ours, baseline, published),
        "table_sr_check": sr_check(metrics),
        "table_ablation": ablation(metrics, ours, baseline),
    }


TITLES = {
    "table4_ours": "Table 4: SIREN on the Lanczos x4 LR slice + SRDenseNet (the paper's method)",
    "table5_baseline": "Table 5: SIREN fitted on the full-resolution slice (baseline)",
    "table6_side_by_side": "Table 6: baseline vs the paper's method, paper and measured",
    "table7_other_methods": "Table 7: best PSNR against the other methods the paper quotes",
    "table_sr_check": "SR check: the true LR slice upsampled by SRDenseNet, Lanczos, bicubic",
    "table_ablation": "Ablation: where the quality of the paper's pipeline comes from",
    "table_rate_distortion": "Rate-distortion: every method's bits per voxel and quality, "
    "from real files",
    "table_vs_jpeg2000": "The stored-image methods against JPEG 2000 at the same rate and at "
    "the same PSNR",
}


def notes_for(metrics: pd.DataFrame) -> list[str]:
    row = metrics[metrics["method"] == "ours"].iloc[0]
    tissue = f"{row['window_tissue'][0]:g}..{row['window_tissue'][1]:g}"
    minmax = f"{row['window_minmax'][0]:g}..{row['window_minmax'][1]:g}"
    memory = MEMORY_KINDS.get(row.get("memory_kind"), str(row.get("memory_kind")))
    return [
        PSNR_NOTE.format(tissue=tissue) + f" Min..max window here: {minmax}.",
        RATE_NOTE,
        TIME_NOTE.format(device=row.get("device", "?"), memory=memory),
        LR_FIT_NOTE,
    ]


def write_tables(
    tables: dict[str, pd.DataFrame],
    notes: list[str],
    out_dir: str | Path,
    mode: str = "slice",
    block: dict[str, Any] | None = None,
) -> None:
    """CSV (empty cells where a value does not exist) and Markdown ('n/a' there); the
    provenance ``block`` beside each CSV and as the Markdown's last line."""
    out_dir = Path(out_dir)
    block = block or provenance.record(None)
    for name, table in tables.items():
        provenance.write_sidecar(out_dir / f"{name}.csv", block)
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        title = TITLES[name] if mode == "slice" else TITLES[name].replace("slice", "volume")
        text = [f"## {title}", ""] + [f"> {n}" for n in notes] + [""]
        shown = table.astype(object).where(table.notna(), None)
        text.append(shown.to_markdown(index=False, floatfmt=".4g", missingval="n/a"))
        with atomic_path(out_dir / f"{name}.md") as tmp:
            tmp.write_text("\n".join(text) + "\n" + provenance.markdown_footer(block))


# --- rate-distortion -------------------------------------------------------------------------

RD_NOTE = (
    "Rate-distortion: bits per voxel = 8 x bytes / voxels of the full-resolution original, "
    "bytes taken from real files: the volinr container (SIREN weights quantized and "
    "entropy-coded, with architecture, grid, intensity scaling and the decoding recipe), the "
    "codec's own output stream, or the LR image coded losslessly. 'with SR' adds the whole "
    "SRDenseNet checkpoint; 'SR amortized' adds it divided by the number of volumes sharing it "
    "(rate_distortion.sr_amortize_over). Published points: the paper's compression rate read as "
    "8-bit bytes / weights bytes, i.e. 8 / rate bits per voxel. Decode seconds: rebuilding the "
    "full-resolution image from the stored bytes (SIREN evaluation + SR, or the codec's decoder); "
    "for a 'true LR' row, the upsampling alone (the LR image's lossless decode is not timed)."
)
INR_LABELS = {"ours container": "SIREN on LR + SR (paper)", "baseline container": "SIREN on HR"}


def _rd_row(method: str, setting: str, group: pd.DataFrame, family: str) -> dict[str, Any]:
    psnr, ci, seeds = mean_ci95(group["psnr_8bit_minmax_db"])
    return {
        "method": method,
        "setting": setting,
        "family": family,
        "bits_per_voxel": _mean(group, "bits_per_voxel"),
        "bits_per_voxel_with_sr_amortized": _mean(group, "bits_per_voxel_with_sr_amortized"),
        "bits_per_voxel_with_sr": _mean(group, "bits_per_voxel_with_sr"),
        "psnr_8bit_minmax_db": psnr,
        "psnr_ci95_db": ci,
        "psnr_native_db": _mean(group, "psnr_native_db"),
        "ssim": _mean(group, "ssim"),
        "max_abs_error_hu": _mean(group, "max_abs_error_hu"),
        "decode_seconds": _mean(group, "decode_seconds"),
        "seeds": seeds,
    }


def rate_distortion_table(
    containers: pd.DataFrame,
    references: pd.DataFrame,
    codecs: pd.DataFrame | None,
    published: dict[str, Any] | None,
) -> pd.DataFrame:
    """Every method's rate and quality on the same image, SIREN points averaged over seeds."""
    rows = []
    for (method, layers, quantization), group in containers.groupby(
        ["method", "layers", "quantization"]
    ):
        label = f"{INR_LABELS.get(method, method)}, {int(layers)} layers"
        rows.append(_rd_row(label, str(quantization), group, "siren"))
    for _, row in references.iterrows():
        codec = row.get("stored_codec")
        by = f" by {codec}" if isinstance(codec, str) else ""
        method = f"{row['method']} (LR coded losslessly{by})"
        rows.append(_rd_row(method, "", row.to_frame().T, "lr + upsampling"))
    if codecs is not None:
        for _, row in codecs.iterrows():
            setting = "lossless" if row["lossless"] else f"{float(row['parameter']):g}"
            rows.append(_rd_row(str(row["codec"]), setting, row.to_frame().T, "codec"))
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


def versus_codec(table: pd.DataFrame, codec: str = "jpeg2000") -> pd.DataFrame:
    """Each stored-image method against a codec at the same rate and at the same quality,
    interpolated on the codec's sweep in log rate; outside the sweep: empty; at or above the
    codec's lossless rate: inf (the codec stores the image exactly)."""
    curve = table[
        (table["method"] == codec) & (table["setting"] != "lossless") & table["ssim"].notna()
    ]
    if len(curve) < 2:
        raise InputError(f"the codec sweep has fewer than two lossy {codec} points")
    log_rate, psnr = _monotone_curve(curve)
    lossless = table[(table["method"] == codec) & (table["setting"] == "lossless")]
    lossless_bits = float(lossless["bits_per_voxel"].min()) if len(lossless) else math.inf

    def codec_psnr(bits: float) -> float:
        if np.isfinite(bits) and bits >= lossless_bits:
            return math.inf  # at this rate the codec stores the image losslessly
        if not np.isfinite(bits) or not log_rate[0] <= math.log(bits) <= log_rate[-1]:
            return math.nan
        return float(np.interp(math.log(bits), log_rate, psnr))

    def codec_rate(target_db: float) -> float:
        if not psnr[0] <= target_db <= psnr[-1]:
            return math.nan
        # first rate at which the (monotone) curve reaches the target
        return float(np.exp(np.interp(target_db, psnr, log_rate)))

    rows = []
    for _, row in table[table["family"].isin(["siren", "lr + upsampling"])].iterrows():
        same_rate = codec_psnr(row["bits_per_voxel"])
        same_rate_sr = codec_psnr(row.get("bits_per_voxel_with_sr_amortized", math.nan))
        needed = codec_rate(row["psnr_8bit_minmax_db"])
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
    return pd.DataFrame(rows)
