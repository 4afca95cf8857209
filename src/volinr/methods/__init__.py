"""Every compression method of the benchmark, behind one interface (``volinr.methods.base``).

A family is found by its module: every module of this package (but ``base``) is imported and
its :class:`~volinr.methods.base.Method` subclasses with a ``family`` are registered. Adding a
family is one module here plus its entry in the config schema. These imports stay light (no
numpy, no torch at module level): the workflow calls ``family`` while building its DAG.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from volinr.methods.base import Method


@functools.cache
def families() -> dict[str, type[Method]]:
    """Every registered method family by name."""
    found: dict[str, type[Method]] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base":
            continue
        imported = importlib.import_module(f"{__name__}.{module.name}")
        for value in vars(imported).values():
            if isinstance(value, type) and issubclass(value, Method) and value.family:
                if found.get(value.family, value) is not value:
                    raise RuntimeError(f"method family {value.family!r} is defined twice")
                found[value.family] = value
    return found


def family(name: str) -> type[Method]:
    try:
        return families()[name]
    except KeyError:
        known = ", ".join(sorted(families()))
        raise KeyError(f"unknown method family {name!r}; known: {known}") from None


def sections(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The validated config sections a family's jobs receive."""
    return {key: config[key] for key in family(name).sections}
