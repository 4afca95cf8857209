"""What every table shares: the metric definitions printed above it, the paper's published
numbers, the metrics records it reads (refusing non-finite values), the mean and 95%
confidence interval over seeds, and writing CSV + Markdown with provenance.
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
from volinr.report.record_checks import check_record_finite

log = logging.getLogger(__name__)


PSNR_NOTE = (
    "PSNR (dB): the paper's definition, 8-bit images (peak 255) after the min..max window of "
    "the original image, rounded to integers; 'tissue' uses the window {tissue}; 'native' is "
    "PSNR on HU with peak = the original's max - min; SSIM on HU (scikit-image, data_range = "
    "max - min; a volume's SSIM is the mean over its axial slices). With several seeds: "
    "mean, and the 95% confidence interval half-width (t)."
)


def units_notes(points: pd.DataFrame) -> list[str]:
    """A note where the image's values are not HU (e.g. raw scanner values): the tables' 'HU'
    (native PSNR, max_abs_error_hu, the windows) then means those units."""
    if "units" not in points:
        return []
    units = sorted({str(u) for u in points["units"].dropna()} - {"HU"})
    if not units:
        return []
    return [
        f"Units: the image's values are {', '.join(units)}, not HU; read every 'HU' in this "
        "table (native PSNR, max_abs_error_hu, the windows) as those units."
    ]


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
    if not isinstance(published, dict):
        raise InputError(
            f"{path}: the published numbers must be a mapping of {', '.join(PUBLISHED_KEYS)}, "
            f"not {type(published).__name__}"
        )
    missing = [k for k in PUBLISHED_KEYS if k not in published]
    if missing:
        raise InputError(f"{path}: the published numbers lack {', '.join(missing)}")
    # the tables look their numbers up by layer count in these (ours: per quantity)
    entries = [(key, published[key]) for key in PUBLISHED_KEYS]
    for key in ("ours", "baseline_full_res_siren"):
        if isinstance(published[key], dict):
            entries += [(f"{key}.{q}", v) for q, v in published[key].items()]
    for name, value in entries:
        if not isinstance(value, dict):
            raise InputError(f"{path}: {name} must be a mapping, got {value!r}")
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


def _records(path: str | Path) -> list[dict[str, Any]]:
    """A metrics file's records: one for ``volinr evaluate``'s JSON, every row for a method
    group's (``volinr rd``)."""
    try:
        record = read_json(path)  # an infinite PSNR (written as null) comes back as inf
    except OSError as err:
        raise InputError(f"{path}: unreadable metrics file ({err})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: not a metrics record")
    rows = record.get("rows", [record])
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"{path}: its rows are not a list of JSON objects")
    for row in rows:
        row.pop("provenance", None)  # the tables carry their own
    return rows


def load_metrics(paths: Iterable[str | Path]) -> pd.DataFrame:
    """The records the paper's tables read: ``volinr evaluate`` JSONs, or the paper point of
    each method group (its ``paper_view``: rates from the SIREN weights file as fitted)."""
    records = []
    for path in paths:
        fingerprint = _image_fingerprint(path)  # of the image a group's rows were measured on
        try:
            settings = settings_fingerprint(read_json(path))
        except OSError:
            settings = None  # _records names the unreadable file
        for row in _records(path):
            if "family" in row:  # a method group's point: only its paper point counts here
                if "paper_view" not in row:
                    continue
                if not isinstance(row["paper_view"], dict):
                    raise InputError(f"{path}: a row whose paper_view is not a JSON object")
                record = {**row["paper_view"], "image_sha256": fingerprint,
                          "settings_sha256": settings}  # fmt: skip
            else:
                record = row  # volinr evaluate's JSON
            check_record_finite(path, record)  # types first: a method must be text to look up
            _require(path, record, METRIC_KEYS.get(record.get("method"), ("method",)))
            records.append(record)
    return pd.DataFrame.from_records(records)


# What a record must hold for the tables to read it: its label (a SIREN fit's: layers and
# seed) and its quality; a missing field is named with its file, not a KeyError later.
SIREN_METRIC_KEYS = ("method", "layers", "seed", "psnr_8bit_minmax_db", "iterations",
                     "parameter_count", "window_minmax", "window_tissue")  # fmt: skip
METRIC_KEYS = {"ours": SIREN_METRIC_KEYS, "baseline": SIREN_METRIC_KEYS}
ROW_KEYS = ("method", "family", "kind", "setting", "bits_per_voxel", "psnr_8bit_minmax_db")


# The labels the tables group by and turn into numbers: a SIREN's layer count and seed.
INTEGER_LABELS = ("layers", "seed")


def _require(path: str | Path, record: dict[str, Any], keys: Iterable[str]) -> None:
    """Refuse a record that lacks one of ``keys``, or whose integer label is not an integer."""
    keys = list(keys)
    missing = [key for key in keys if key not in record]
    if missing:
        raise InputError(
            f"{path}: a record without {', '.join(missing)} (not volinr evaluate's or rd's)"
        )
    for key in INTEGER_LABELS:
        value = record.get(key)
        if key in keys and not (
            (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, float) and value.is_integer())
        ):
            raise InputError(f"{path}: a record whose {key} is {value!r}; {key} must be an integer")
    nulls = [key for key in keys if record[key] is None]
    if nulls:
        raise InputError(f"{path}: a record whose {', '.join(nulls)} is null (a value is needed)")


def load_rows(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every operating point of the method groups ``paths`` (``volinr rd`` JSONs)."""
    records = []
    paths = list(paths)
    fingerprints = {str(path): _image_fingerprint(path) for path in paths}
    known = {path: sha for path, sha in fingerprints.items() if sha is not None}
    if known and len(known) < len(fingerprints):
        # without a fingerprint a file's image cannot be compared: it might be another one
        unknown = next(path for path, sha in fingerprints.items() if sha is None)
        _records(unknown)  # an unreadable file is named as such first
        raise InputError(
            f"{unknown}: records no image_sha256, but {next(iter(known))} does: its rows "
            "cannot be shown to be measured on the same image (write it again with volinr rd)"
        )
    image: tuple[str, str] | None = None  # (fingerprint, the first file that gave it)
    for path in paths:
        fingerprint = fingerprints[str(path)]
        if fingerprint is not None:
            if image is not None and fingerprint != image[0]:
                raise InputError(
                    f"{path}: its rows were measured on another image than {image[1]}'s "
                    "(image_sha256 differs): a table sets one image's rows side by side"
                )
            image = image or (fingerprint, str(path))
        for row in _records(path):
            if "family" not in row:
                raise InputError(f"{path}: not the rows of a method group (volinr rd)")
            _require(path, row, ROW_KEYS)
            row = {k: v for k, v in row.items() if k != "paper_view"}
            check_record_finite(path, row)
            records.append(row)
    return pd.DataFrame.from_records(records)


def refused_notes(paths: Iterable[str | Path]) -> list[str]:
    """A note naming every point a method group refused because its decoded data broke its
    own claim (``volinr rd``'s refused_points), with the reason."""
    refused = []
    for path in paths:
        record = read_json(path)
        if isinstance(record, dict):
            group = record.get("group", Path(path).stem)
            points = record.get("refused_points", [])
            if not isinstance(points, list) or not all(
                isinstance(r, dict) and isinstance(r.get("point"), str) and "reason" in r
                for r in points
            ):
                raise InputError(f"{path}: refused_points is not a list of points and reasons")
            refused += [f"{group} {r['point']}: {r['reason']}" for r in points]
    if not refused:
        return []
    return [
        "Refused points (not in the tables; their decoded data broke their own claim): "
        + "; ".join(refused)
        + "."
    ]


def _image_fingerprint(path: str | Path) -> str | None:
    try:
        record = read_json(path)
    except OSError:
        return None  # _records names the unreadable file
    return record.get("image_sha256") if isinstance(record, dict) else None


def settings_fingerprint(group: Any) -> str | None:
    """The sha256 of the settings a method group ran with (its provenance's ``settings``, the
    seeds left out: a replicate run differs from a one-seed run only there), or None."""
    import hashlib
    import json

    try:
        settings = dict(group["provenance"]["config"]["settings"])
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(settings.get("siren"), dict):
        settings["siren"] = {k: v for k, v in settings["siren"].items() if k != "seeds"}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_finite(name: str, table: pd.DataFrame, columns: Iterable[str]) -> None:
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
    "table_vs_best_anchor": "The stored-image methods against the strongest classical codec at "
    "their rate",
    "table_bd_rate": "Bjøntegaard metrics: BD-rate and BD-PSNR of every method against JPEG 2000 "
    "and HEVC",
    "suite_bd_rate": "Suite: BD-rate and BD-PSNR of every method against JPEG 2000, HEVC and "
    "AV1 on each dataset",
    "suite_bd_rate_mean": "Suite: mean BD-rate and BD-PSNR over the datasets, 95% confidence "
    "intervals",
    "suite_paper_claim": "Suite: the paper's claim on each dataset (best PSNR, ours against the "
    "baseline)",
    "suite_paper_claim_counts": "Suite: on how many datasets the paper's claim holds",
    "suite_sr_gain": "Suite: SRDenseNet's gain over Lanczos on each dataset's true LR image",
    "suite_datasets": "Suite: the datasets, their anatomy and licence",
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
