"""The workflow configuration, read as its author meant it and checked before any job starts.

Snakemake reads ``--configfile`` with PyYAML, which follows YAML 1.1 (``1e-3`` is a string
there), and nested ``--config`` values with YAML's BaseLoader (every scalar a string).
``coerce_scalars`` therefore reads a string where the schema wants a number, a boolean or null by
the YAML 1.2 core schema, and an integral float where it wants an integer as that integer, so
``learning_rate: 1e-3``, ``--config siren="{iterations: 10}"`` and ``iterations: 12.0`` mean
what they say. The JSON schema then checks types and ranges; ``config_problems`` checks what a
schema cannot say: that every number is finite (NaN passes every JSON-schema range), that ranges
are not empty, that the files named exist, and that settings do not contradict each other.

Only the standard library and PyYAML: the Snakefile imports this module in Snakemake's own
environment, which need not have volinr's dependencies (``--use-conda``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
_NULL = re.compile(r"null|Null|NULL|~|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"([-+]?)\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")

# The methods whose paper points the paper's Tables 4-7 are made from.
PAPER_METHODS = ("siren_lr_sr", "siren_hr", "true_lr")


def paper_tables_made(methods) -> bool:
    """Whether a run of these methods makes the paper's tables and figures (it needs all of
    PAPER_METHODS; a run of other methods alone makes the rate-distortion tables only)."""
    return all(m in methods for m in PAPER_METHODS)


# Dataset kinds read from a file or folder, and where their path must point.
_PATH_KINDS = {"dicom_series": "folder", "nifti": "file", "array": "file"}
_PACKAGE_SOURCES = ("pydicom-data:", "pydicom:")


def load_schema(path: str | Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


# --- reading values as meant -----------------------------------------------------------------


def coerce_scalars(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """``value`` with strings and integral floats converted where ``schema`` types them
    otherwise (dicts and lists are changed in place; the value is also returned)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    types = _types(schema)
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                value[key] = coerce_scalars(value[key], sub, root)
        return value
    if isinstance(value, list):
        prefix, items = schema.get("prefixItems", []), schema.get("items")
        for index, item in enumerate(value):
            sub = prefix[index] if index < len(prefix) else items
            if isinstance(sub, dict):
                value[index] = coerce_scalars(item, sub, root)
        return value
    if isinstance(value, str) and types and "string" not in types:
        value = _yaml12_scalar(value, types)
    if isinstance(value, float) and "integer" in types and "number" not in types:
        if value.is_integer():  # False for NaN and Inf, which the schema then refuses
            return int(value)
    return value


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A subschema with its local ``$ref`` (``#/$defs/...``) merged in."""
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _yaml12_scalar(text: str, types: list[str]) -> Any:
    """What YAML 1.2 reads ``text`` as, where that is one of ``types``; else ``text``."""
    numeric = "number" in types or "integer" in types
    if "null" in types and _NULL.fullmatch(text):
        return None
    if "boolean" in types and text in _BOOL:
        return _BOOL[text]
    if numeric and _INT.fullmatch(text):
        return int(text)
    if numeric and _OCT.fullmatch(text):
        return int(text[2:], 8)
    if numeric and _HEX.fullmatch(text):
        return int(text[2:], 16)
    if numeric and _FLOAT.fullmatch(text):
        return float(text)
    if numeric and (match := _INF.fullmatch(text)):
        return -math.inf if match.group(1) == "-" else math.inf
    if numeric and _NAN.fullmatch(text):
        return math.nan
    return text


# --- what the schema cannot say --------------------------------------------------------------


def repo_path(path: str, repo: str | Path) -> str:
    """A relative path from the config: under the working directory, else under the repo."""
    if not path or Path(path).is_absolute() or Path(path).exists():
        return path
    return str(Path(repo) / path)


def config_problems(config: dict[str, Any], repo: str | Path) -> list[str]:
    """Every problem of a schema-validated config (defaults filled in), each naming its key."""
    problems = list(_non_finite(config, ""))
    problems += _suite_problems(config.get("suite") or {})
    volume_mode = config["dataset"]["kind"] != "slice"
    volume = config["volume"]
    sources = {"dataset": config["dataset"]}
    if volume_mode and volume["sr_training"] == "other_volume":
        sources["volume.sr_dataset"] = volume["sr_dataset"]
    for key, source in sources.items():
        problems += _source_problems(source, key, repo)
    problems += _range_problems("volume.evaluation_slices", volume["evaluation_slices"])
    if volume_mode and volume["sr_training"] == "same_volume" and not volume["evaluation_slices"]:
        problems.append(
            "volume.sr_training same_volume needs volume.evaluation_slices: the SR network "
            "trains on the slices outside them"
        )
    low, high = config["evaluation"]["tissue_window"]
    if high is not None and _finite(low) and _finite(high) and not low < high:
        problems.append(
            f"evaluation.tissue_window: [{low}, {high}] is empty (low must be below high; "
            "null high means the image maximum)"
        )
    seeds = config["siren"]["seeds"]
    if config["figures"]["seed"] not in seeds:
        problems.append(
            f"figures.seed: {config['figures']['seed']} is not one of siren.seeds {seeds}: the "
            "figures would show a fit that no table counts"
        )
    chosen = config["classical"]["codecs"]
    if chosen and "jpeg2000_per_slice" in chosen and not volume_mode:
        problems.append(
            "classical.codecs: jpeg2000_per_slice codes a volume slice by slice; a slice is "
            "coded whole by jpeg2000"
        )
    codec = config["neural_codec"]
    stray = [lam for lam in codec["slice_by_slice_lambdas"] if lam not in codec["lambdas"]]
    if stray:
        problems.append(
            f"neural_codec.slice_by_slice_lambdas: {stray} not among neural_codec.lambdas "
            f"{codec['lambdas']}: the slice by slice coding is compared with the 3D one at the "
            "same lambdas"
        )
    problems += _file_problems(config, volume_mode, repo)
    return problems


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _non_finite(value: Any, key: str):
    """NaN and Inf have no meaning in any setting, and NaN passes every schema range."""
    if isinstance(value, float) and not math.isfinite(value):
        yield f"{key}: {value} is not a finite number"
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _non_finite(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, f"{key}[{index}]")


def _range_problems(key: str, span: list[int] | None) -> list[str]:
    if span is not None and not span[0] < span[1]:
        return [f"{key}: [{span[0]}, {span[1]}] is an empty range (start must be below stop)"]
    return []


def _source_problems(source: dict[str, Any], key: str, repo: str | Path) -> list[str]:
    kind, download = source["kind"], source["download"]
    problems = _range_problems(f"{key}.slices", source["slices"])
    if kind == "download" and not download["urls"]:
        problems.append(f"{key}.kind is download but {key}.download.urls is empty")
    if download["sha256"] and len(download["sha256"]) != len(download["urls"]):
        problems.append(
            f"{key}.download.sha256: {len(download['sha256'])} checksums for "
            f"{len(download['urls'])} URLs (give one per URL, or none)"
        )
    if kind in _PATH_KINDS:
        if not source["path"]:
            problems.append(f"{key}.kind is {kind} but {key}.path is empty")
        else:
            problems += _path_problem(f"{key}.path", source["path"], repo, _PATH_KINDS[kind])
    if kind == "array" and source["path"]:
        # An array has no geometry or units of its own: without its sidecar it cannot be read.
        sidecar = Path(repo_path(source["path"], repo)).with_suffix(".json")
        if Path(repo_path(source["path"], repo)).is_file() and not sidecar.is_file():
            problems.append(
                f"{key}.path: {source['path']} has no sidecar {sidecar.name} beside it "
                "(sha256_npy, spacing_zyx_mm, units)"
            )
    return problems


def _file_problems(config: dict[str, Any], volume_mode: bool, repo: str | Path) -> list[str]:
    problems = _path_problem("published", config["published"], repo, "file")
    sr = config["sr"]
    if sr["checkpoint"] and not sr["retrain"]:
        problems += _path_problem("sr.checkpoint", sr["checkpoint"], repo, "file")
        if not sr["checkpoint_sha256"]:
            problems.append(
                "sr.checkpoint is set but sr.checkpoint_sha256 is empty: a checkpoint is reused "
                "only when its sha256 matches (set it, or sr.retrain: true)"
            )
    # DICOM sources are read by the rules from the working directory; a package source
    # (pydicom-data:NAME) lives where the rules' environment has it, which may not be here.
    named = []
    if not volume_mode:
        named.append(("evaluation_image.source", config["evaluation_image"]["source"]))
    if not volume_mode or config["volume"]["sr_training"] == "frames":
        named += [
            (f"sr_training_sources[{index}]", source)
            for index, source in enumerate(config["sr_training_sources"])
        ]
    for key, source in named:
        if not source.startswith(_PACKAGE_SOURCES) and not Path(source).is_file():
            problems.append(f"{key}: {source} does not exist (or is not a file)")
    return problems


def _path_problem(key: str, path: str, repo: str | Path, kind: str) -> list[str]:
    resolved = Path(repo_path(path, repo))
    exists = resolved.is_dir() if kind == "folder" else resolved.is_file()
    if exists:
        return []
    where = "" if Path(path).is_absolute() else f" (looked in the working directory and {repo})"
    return [f"{key}: {path} is not an existing {kind}{where}"]


def _suite_problems(suite: dict[str, Any]) -> list[str]:
    """A suite dataset's overrides set its run's config, not the suite's: no suite in a suite,
    no results folder of its own (each dataset's is results/suite/<name>)."""
    problems = []
    for name, entry in suite.items():
        for key in ("suite", "results_dir"):
            if key in entry["config"]:
                problems.append(f"suite.{name}.config.{key}: a suite dataset cannot set {key}")
    return problems
