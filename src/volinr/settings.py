"""Settings come from one place, the workflow's config schema: every key's type, range,
default and description is written there once, and the code that uses a setting reads it from
its validated section.

The workflow passes each rule its validated section (JSON); a hand run gives only the keys it
changes, on the command line, and this module fills in the schema's defaults and checks the
result the way the workflow's validation does. Command-line options of a section are made from
the schema too (``add_section_options``), so no setting is named a third time.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema

from volinr import arguments
from volinr.config_checks import coerce_scalars, load_schema
from volinr.errors import InputError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml"


@functools.cache
def schema() -> dict[str, Any]:
    if not SCHEMA.is_file():
        raise InputError(f"{SCHEMA}: the config schema is missing (run volinr from its checkout)")
    return load_schema(SCHEMA)


def _with_defaults(validator_class):
    """A validator that fills in every property's default (as Snakemake's validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill})


def section(name: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config section ``name``: ``given`` over the schema's defaults, coerced as the
    workflow reads YAML (``1e-3`` is a number) and validated; a bad value is an InputError
    naming the key."""
    root = schema()
    if name not in root["properties"]:
        raise KeyError(f"the schema has no section {name!r}")
    config = {name: copy.deepcopy(dict(given or {}))}
    coerce_scalars(config, root)
    validator = _with_defaults(jsonschema.Draft202012Validator)(root)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path)
        raise InputError(f"{where}: {errors[0].message}")
    non_finite = _non_finite(config[name], name)
    if non_finite:
        raise InputError(f"{non_finite}: not a finite number")
    return config[name]


def _non_finite(value: Any, where: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _non_finite(item, f"{where}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _non_finite(item, f"{where}[{index}]")
            if found:
                return found
    return None


def option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _option_type(spec: Mapping[str, Any]):
    """An argparse type that refuses what the schema's range refuses, with the messages of
    ``volinr.arguments``."""
    kind = spec.get("type")
    if kind == "integer":
        low = spec.get("minimum")
        return (
            arguments.positive_int
            if low == 1
            else (arguments.non_negative_int if low == 0 else int)
        )
    if kind == "number":
        if spec.get("exclusiveMinimum") == 0 and spec.get("exclusiveMaximum") == 1:
            return arguments.fraction
        if spec.get("exclusiveMinimum") == 0:
            return arguments.positive_float
        if spec.get("minimum") == 0:
            return arguments.non_negative_float
        return arguments.finite_float
    return str


def add_section_options(
    parser: argparse.ArgumentParser, name: str, skip: tuple[str, ...] = ()
) -> None:
    """One option per scalar key of the schema's section ``name`` (``learning_rate`` ->
    ``--learning-rate``), typed and described by the schema; unset options keep the section's
    value (given by ``--settings``, else the schema's default)."""
    properties = schema()["properties"][name]["properties"]
    group = parser.add_argument_group(
        f"{name} settings", f"the config's {name} section (defaults: the config schema)"
    )
    for key, spec in properties.items():
        if key in skip or spec.get("type") in ("array", "object"):
            continue
        help_text = " ".join(str(spec.get("description", "")).split()) or None
        if spec.get("type") == "boolean":
            group.add_argument(
                option_name(key), dest=key, action=argparse.BooleanOptionalAction, default=None,
                help=help_text,
            )  # fmt: skip
            continue
        group.add_argument(
            option_name(key), dest=key, type=_option_type(spec), default=None,
            choices=spec.get("enum"), help=help_text,
        )  # fmt: skip
    parser.add_argument(
        "--settings",
        type=arguments.json_object,
        default={},
        help=f"the {name} section as JSON (the workflow passes the config's); options override it",
    )


def section_from_args(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The section of a hand run or a rule: ``--settings`` with the given options over it."""
    properties = schema()["properties"][name]["properties"]
    given = dict(args.settings)
    for key in properties:
        value = getattr(args, key, None)
        if value is not None:
            given[key] = value
    try:
        return section(name, given)
    except InputError as err:
        raise InputError(f"--settings {json.dumps(args.settings)}: {err}") from None
