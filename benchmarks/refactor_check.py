"""Compare the numbers of a results folder made before the refactor (old layout) with one made
after it (methods layout), ignoring timings, memory, paths and provenance.

Usage: python compare_results.py BEFORE/results AFTER/results
- tables: every CSV cell, except columns and Table 6 rows of seconds or memory; rows are
  matched by their text columns (method, setting, ...), so rows of methods added since (the
  neural codec, HEVC, AV1) are listed as added rows and do not shift the others;
- metrics: every numeric field of the old evaluate JSONs against the new rows (paper views for
  metrics/ours|baseline|reference, operating points for metrics/containers);
- files: every old container's bytes against the new method group's file for the same point.
"""

import json
import math
import sys
from pathlib import Path

import pandas as pd

VOLATILE = (
    "seconds",
    "memory",
    "_kb",
    "peak_",
    "device",
    "provenance",
    "reconstruction",
    "reference",
    "container",
    "record",
    "weights_file",
    "target",
    "decompressed",
    "first_iteration",
    "compile",
    "per_50k",
    "load_average",
    "time",
    "file",
    "window",
)
FAMILY = {"ours": "siren_lr_sr", "baseline": "siren_hr"}


def volatile(name: str) -> bool:
    return any(v in name.lower() for v in VOLATILE)


def nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def compare_value(where, old, new, changed, added):
    if nan(old) and nan(new):
        return
    if nan(old) and not nan(new):
        added.append(f"{where}: n/a -> {new!r}")
    elif old != new:
        changed.append(f"{where}: {old!r} -> {new!r}")


def _keys(frame: pd.DataFrame) -> list[str]:
    """The columns that name a row: its text columns, less the volatile ones."""
    numeric = pd.api.types.is_numeric_dtype
    return [c for c in frame.columns if not numeric(frame[c]) and not volatile(c)]


def _keyed(frame: pd.DataFrame, keys: list[str]) -> dict:
    """Rows by (key values, occurrence of that key), so that a row added to a table (a method
    the old layout did not have) does not shift the rows after it."""
    seen: dict = {}
    rows = {}
    for i, row in frame.iterrows():
        key = tuple("" if nan(row[k]) else str(row[k]) for k in keys)
        seen[key] = seen.get(key, -1) + 1
        rows[(key, seen[key])] = i
    return rows


def tables(before, after, changed, added, added_rows):
    count = 0
    for path in sorted(before.glob("tables/*.csv")):
        other = after / "tables" / path.name
        if not other.exists():
            changed.append(f"{path.name}: missing after")
            continue
        count += 1
        a, b = pd.read_csv(path), pd.read_csv(other)
        keys = _keys(a)
        rows_a, rows_b = _keyed(a, keys), _keyed(b, [k for k in keys if k in b.columns])
        for key in rows_b.keys() - rows_a.keys():
            added_rows.append(f"{path.name}: {' / '.join(v for v in key[0] if v)}")
        for key, i in rows_a.items():
            if key not in rows_b:
                changed.append(
                    f"{path.name}: row {' / '.join(v for v in key[0] if v)} missing after"
                )
                continue
            j = rows_b[key]
            if "quantity" in a.columns and volatile(str(a["quantity"][i])):
                continue
            for col in [c for c in a.columns if not volatile(c) and c not in keys]:
                if col not in b.columns:
                    changed.append(f"{path.name}: column {col} missing after")
                    continue
                where = f"{path.name} row {i} ({' / '.join(v for v in key[0] if v)}) {col}"
                compare_value(where, a[col][i], b[col][j], changed, added)
    return count


def load(path):
    return json.loads(Path(path).read_text())


def metrics(before, after, changed, added):
    count = 0
    for path in sorted(before.glob("metrics/**/*.json")):
        old = load(path)
        rel = path.relative_to(before / "metrics")
        if rel.parts[0] == "containers":
            kind, stem = rel.parts[1], rel.stem
            run, quant = stem.rsplit("_", 1)
            rows = load(after / f"rd/{FAMILY[kind]}/{run}.json")["rows"]
            new = next(r for r in rows if r["point"] == quant)
        elif rel.parts[0] == "reference":
            new = load(after / f"rd/true_lr/{rel.stem}.json")["rows"][0]["paper_view"]
        else:
            rows = load(after / f"rd/{FAMILY[rel.parts[0]]}/{rel.stem}.json")["rows"]
            new = next(r["paper_view"] for r in rows if "paper_view" in r)
        count += 1
        for key, value in old.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or volatile(key):
                continue
            compare_value(f"metrics/{rel} {key}", value, new.get(key), changed, added)
    return count


def sr_weights(results):
    import torch

    return torch.load(results / "sr/srdensenet.pt", weights_only=True)["state_dict"]


def files(before, after, changed, notes):
    """Container bytes equal; where only the SR model's sha256 in the header differs, the SR
    models' weights must be equal (a retrained checkpoint records the commit it was made at)."""
    from volinr.container import unframe

    count = 0
    same_sr = None
    for path in sorted(before.glob("containers/*/*.volinr")):
        kind = path.parent.name
        run, quant = path.stem.rsplit("_", 1)
        new = after / f"rd/{FAMILY[kind]}/{run}/{quant}.volinr"
        count += 1
        a, b = path.read_bytes(), new.read_bytes()
        if a == b:
            continue
        (ha, pa), (hb, pb) = unframe(a, str(path)), unframe(b, str(new))
        ja, jb = json.loads(ha), json.loads(hb)
        sha_a, sha_b = (
            ja["extra"].pop("sr_model_sha256", None),
            jb["extra"].pop("sr_model_sha256", None),
        )
        if pa == pb and ja == jb and len(a) == len(b) and sha_a != sha_b:
            if same_sr is None:
                wa, wb = sr_weights(before), sr_weights(after)
                same_sr = wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
            if same_sr:
                notes.append(f"{path.relative_to(before)}: same bytes but the SR model's sha256")
                continue
        changed.append(f"{path.relative_to(before)}: bytes differ from {new.relative_to(after)}")
    return count


def main() -> int:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    changed, added, added_rows = [], [], []
    n_tables = tables(before, after, changed, added, added_rows)
    n_metrics = metrics(before, after, changed, added)
    notes = []
    n_files = files(before, after, changed, notes)
    print(f"{n_tables} tables, {n_metrics} metrics records and {n_files} container files compared")
    print(f"{len(changed)} values changed, {len(added)} values added where there was none")
    for line in changed[:100]:
        print("  changed:", line)
    for line in added[:30]:
        print("  added:", line)
    if added_rows:
        print(f"{len(added_rows)} table rows only after (methods the old layout did not run):")
        for line in sorted(added_rows):
            print("  row added:", line)
    if notes:
        print(
            f"{len(notes)} containers equal but for the SR model's sha256 in their header (the "
            "SR weights are equal; a retrained checkpoint records the commit it was made at)"
        )
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
