"""The seeds' spread of a committed replicate run, quoted beside a one-seed run's Table 6.

The default run fits one seed (three do not fit its 15 minutes); a replicate run
(``config/replicates.yaml``: seeds 0, 1 and 2) measures how far the best PSNRs move between
seeds. ``volinr-dev replicate-reference`` keeps that run's per-seed numbers, with the image's
fingerprint, the iterations and where they were measured; ``volinr tables --replicates`` quotes
their 95% interval beside each Table 6 PSNR and lets a verdict within it say "not resolved".
The reference applies only to the run it describes: the same image (sha256) and iterations for
each method and layer count; otherwise it is not used and a note says why.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from volinr.errors import InputError
from volinr.io import read_json
from volinr.report.record_checks import check_record_finite
from volinr.report.table_io import mean_ci95, settings_fingerprint

FORMAT = "volinr-replicate-reference-1"
# what one reference record holds (one SIREN fit: a method, a layer count, a seed)
RECORD_KEYS = ("method", "layers", "seed", "iterations", "psnr_8bit_minmax_db", "image_sha256",
               "settings_sha256", "parameter_count")  # fmt: skip


def reference_from_rows(paths: Iterable[str | Path]) -> dict[str, Any]:
    """The per-seed paper points of a replicate run's SIREN groups (``volinr rd`` JSONs)."""
    records, sources = [], set()
    for path in paths:
        group = read_json(path)
        if not isinstance(group, dict) or "rows" not in group:
            raise InputError(f"{path}: not the rows of a method group (volinr rd)")
        fingerprint = group.get("image_sha256")
        if not fingerprint:
            raise InputError(f"{path}: no image_sha256 (written by an older volinr rd)")
        provenance = group.get("provenance") or {}
        device = provenance.get("device") or {}
        if isinstance(device, dict):  # its name and torch build, e.g. "CPU (x86_64), torch 2.13.0"
            named = ", torch ".join(str(device[k]) for k in ("name", "torch") if k in device)
            device = named or str(device)
        sources.add((str(provenance.get("git_commit")), str(device)))
        settings = settings_fingerprint(group)
        for row in group["rows"]:
            view = row.get("paper_view")
            if not isinstance(view, dict) or view.get("method") not in ("ours", "baseline"):
                continue
            record = {**view, "image_sha256": fingerprint, "settings_sha256": settings}
            missing = [key for key in RECORD_KEYS if key not in record]
            if missing:
                raise InputError(f"{path}: a paper point without {', '.join(missing)}")
            records.append({key: record[key] for key in RECORD_KEYS})
    if not records:
        raise InputError("no SIREN paper points among the replicate run's rows")
    _check_records(records, "the replicate run's rows")
    seeds = {(r["method"], r["layers"]): set() for r in records}
    for r in records:
        seeds[(r["method"], r["layers"])].add(r["seed"])
    if any(len(s) < 2 for s in seeds.values()):
        raise InputError("a replicate reference needs at least 2 seeds per method and layers")
    commits = sorted({c for c, _ in sources})
    devices = sorted({d for _, d in sources})
    return {"format": FORMAT, "git_commits": commits, "devices": devices, "records": records}


def load_reference(path: str | Path) -> pd.DataFrame:
    """A reference file's mean and 95% interval per method and layers (one row each)."""
    try:
        data = read_json(path)
    except OSError as err:
        raise InputError(f"{path}: unreadable replicate reference ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a replicate reference ({FORMAT})")
    listed = data.get("records")
    if not isinstance(listed, list) or not listed:
        raise InputError(f"{path}: a replicate reference without records")
    _check_records(listed, str(path))
    records = pd.DataFrame.from_records(listed)
    rows = []
    for (method, layers), group in records.groupby(["method", "layers"]):
        mean, ci, seeds = mean_ci95(group["psnr_8bit_minmax_db"].astype(float))
        rows.append(
            {
                "method": method,
                "layers": int(layers),
                "mean_db": mean,
                "ci95_db": ci,
                "seeds": seeds,
                "iterations": set(group["iterations"].astype(int)),
                "image_sha256": set(group["image_sha256"]),
                "settings_sha256": set(group["settings_sha256"]),
                "parameter_count": set(group["parameter_count"].astype(int)),
            }
        )
    table = pd.DataFrame(rows)
    commits, devices = data.get("git_commits", []), data.get("devices", [])
    # relative where it can be (a workflow passes the repository's absolute path)
    shown = os.path.relpath(Path(path).absolute())
    shown = shown if not shown.startswith("..") else str(path)
    table.attrs["source"] = (
        f"{shown} (git {', '.join(str(c)[:12] for c in commits if isinstance(commits, list))}; "
        f"{'; '.join(str(d) for d in devices if isinstance(devices, list))})"
    )
    return table


def _check_records(records: list, where: str) -> None:
    """Every record an object with the keys and types a reference needs, each fit once (a
    seed counted twice would narrow the interval)."""
    seen = set()
    for record in records:
        if not isinstance(record, dict):
            raise InputError(f"{where}: a reference record is not a JSON object")
        missing = [key for key in RECORD_KEYS if record.get(key) is None]
        if missing:
            raise InputError(f"{where}: a reference record without {', '.join(missing)}")
        check_record_finite(where, record)
        numbers = ("layers", "seed", "iterations", "parameter_count")
        if not all(isinstance(record[k], int) and not isinstance(record[k], bool) for k in numbers):
            raise InputError(f"{where}: a reference record whose {numbers} are not all integers")
        key = (record["method"], record["layers"], record["seed"])
        if key in seen:
            raise InputError(f"{where}: the fit {key} is listed twice")
        seen.add(key)


def quote_reference(
    table6: pd.DataFrame, metrics: pd.DataFrame, reference: pd.DataFrame, margin_db: float
) -> tuple[pd.DataFrame, list[str]]:
    """Table 6 with the reference's 95% intervals beside its PSNR rows, and the resolution a
    verdict needs widened to them where they apply; with the note that says what was used."""
    table = table6.copy()
    psnr = table["quantity"].str.contains("PSNR")
    columns = {"ours": "ours_replicates_ci95_db", "baseline": "baseline_replicates_ci95_db"}
    for column in columns.values():
        table[column] = math.nan
    refused: list[tuple[str, str]] = []  # (fit, why)
    for index in table.index[psnr]:
        layers = int(table.at[index, "layers"])
        halves = {}
        for method, column in columns.items():
            match, why = _matching(reference, metrics, method, layers)
            if match is None:
                refused.append((f"{method} {layers} layers", why))
                continue
            halves[method] = float(match["ci95_db"])
            table.at[index, column] = halves[method]
        if len(halves) == 2:
            combined = math.sqrt(sum(h * h for h in halves.values()))
            resolution = max(float(table.at[index, "resolution_db"]), combined, margin_db)
            table.at[index, "resolution_db"] = resolution
            margin = float(table.at[index, "margin_db"])
            if math.isfinite(margin) and abs(margin) < resolution:
                table.at[index, "verdict"] = "not resolved"
    source = reference.attrs.get("source", "the replicate reference")
    notes = []
    if table[list(columns.values())].notna().any(axis=None):
        seeds = ", ".join(str(s) for s in sorted(set(reference["seeds"])))
        notes.append(
            f"'*_replicates_ci95_db': the 95% interval half-width (t) of the best PSNR over "
            f"{seeds} seeds of a committed replicate run of this same image, settings and "
            f"iterations, {source}; a verdict whose margin is within their combination (root "
            "sum of squares) says 'not resolved'."
        )
    if refused:
        by_reason: dict[str, list[str]] = {}
        for fit, why in refused:
            by_reason.setdefault(why, []).append(fit)
        notes.append(
            f"Replicate reference {source}: not used for "
            + "; ".join(f"{', '.join(fits)}: {why}" for why, fits in by_reason.items())
            + "."
        )
    return table, notes


def _matching(
    reference: pd.DataFrame, metrics: pd.DataFrame, method: str, layers: int
) -> tuple[pd.Series | None, str]:
    """The reference row for this run's method and layers, or why there is none."""
    rows = reference[(reference["method"] == method) & (reference["layers"] == layers)]
    if rows.empty:
        return None, "no such fits in the reference"
    row = rows.iloc[0]
    ours = metrics[(metrics["method"] == method) & (metrics["layers"] == layers)]
    fingerprints = set(ours.get("image_sha256", pd.Series(dtype=object)).dropna())
    if not fingerprints or fingerprints != row["image_sha256"]:
        return None, "measured on another image (image_sha256)"
    if set(ours["iterations"].astype(int)) != row["iterations"]:
        return None, "another number of iterations"
    settings = set(ours.get("settings_sha256", pd.Series(dtype=object)).dropna())
    if not settings or settings != row["settings_sha256"]:
        return None, "fitted with other settings (the rd settings, seeds aside)"
    if set(ours["parameter_count"].astype(int)) != row["parameter_count"]:
        return None, "another network size"
    if not math.isfinite(float(row["ci95_db"])):
        return None, "no finite interval"
    return row, ""
