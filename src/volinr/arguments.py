"""Validated command-line values: argparse refuses a bad one with exit status 2 and a message
naming the option, before any stage reads or writes anything.

Numbers are checked where they enter (finite, positive, in range); output paths are marked so
that ``check_paths`` can refuse an output that is a folder, a device, a FIFO or a link, that
would overwrite one of the command's inputs, or that two options both name.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path


class OutputPath(str):
    """An output file given on the command line."""


class OutputDir(str):
    """An output folder given on the command line."""


class FilesDir(OutputDir):
    """An output folder into which a command writes files it names from its data (a method
    group's files): it may not hold an input, which one of them could replace."""


def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def finite_float(text: str) -> float:
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def fraction(text: str) -> float:
    """Strictly between 0 and 1 (a factor that lowers a rate)."""
    value = finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value:g}")
    return value


def unit_interval(text: str) -> float:
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def finite_or_nan(text: str) -> float:
    """A finite number, or nan where the option gives nan a meaning."""
    value = _number(text, float)
    if math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be finite (or nan), got {text!r}")
    return value


def _no_constant(name: str):
    # Python's json reads NaN and Infinity, which JSON does not have: an option holding one
    # is bad input (exit 2), not a numerical failure later
    raise argparse.ArgumentTypeError(f"{name} is not a JSON number (JSON has no {name})")


def json_value(text: str):
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None


def json_object(text: str) -> dict:
    value = json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object ({{...}}), got {type(value).__name__}: {text}"
        )
    return value


def quantization(text: str) -> str:
    from volinr.weights_coding import parse_quantization

    try:
        parse_quantization(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _check_output(text: str, directory: bool) -> None:
    from volinr.errors import InputError
    from volinr.outputs import check_replaceable

    for parent in Path(text).parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is not a folder")
            break
    try:
        check_replaceable(text, directory)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def output_file(text: str) -> OutputPath:
    if text:  # an optional output left empty is not written
        _check_output(text, directory=False)
    return OutputPath(text)


def output_dir(text: str) -> OutputDir:
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    _check_output(text, directory=True)
    return OutputDir(text)


def files_dir(text: str) -> FilesDir:
    return FilesDir(output_dir(text))


def _paths_of(value) -> list[str]:
    """Every path-like string of an option's value, JSON options (objects, lists) included."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_of(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _paths_of(v)]
    return []


def _derived(path: str) -> list[str]:
    """A file and what may be written beside it: an array's sidecar (the path ending in .json,
    whatever its suffix) and a result's provenance sidecar."""
    from volinr.provenance import sidecar_path

    return [path, str(Path(path).with_suffix(".json")), str(sidecar_path(path))]


def _identity(path: str) -> tuple:
    """What makes two names one file: the real path, and device and inode where it exists (a
    hard link has another path but the same inode)."""
    resolved = os.path.realpath(path)
    try:
        stat = os.stat(resolved)
    except OSError:
        return (resolved,)
    return (resolved, (stat.st_dev, stat.st_ino))


def _not_written_by_volinr(folder: str) -> str | None:
    """A file in ``folder`` that no volinr run wrote (None: there is none): volinr writes each
    file with a provenance sidecar (``<file>.provenance``), and an array with its ``.json``."""
    from volinr.provenance import SIDECAR_SUFFIX

    try:
        names = set(os.listdir(folder))
    except OSError:
        return None  # not there yet (or unreadable: writing into it will say so)
    for name in sorted(names):
        path = os.path.join(folder, name)
        # hidden names are no point's (Snakemake's .snakemake_timestamp, a killed run's .tmp)
        if name.startswith(".") or not os.path.isfile(path) or os.path.islink(path):
            continue
        stem, suffix = os.path.splitext(name)
        ours = (
            f"{name}{SIDECAR_SUFFIX}" in names
            or suffix == SIDECAR_SUFFIX
            or (suffix == ".npy" and f"{stem}.json" in names)
            or (suffix == ".json" and f"{stem}.npy" in names)
        )
        if not ours:
            return path
    return None


def check_paths(args: argparse.Namespace) -> str | None:
    """Why the command's outputs cannot be written as given (None: they can): the one guard
    every subcommand's paths go through before anything runs.

    Inputs are every existing file any option names, paths inside JSON options included, with
    the sidecars beside them; outputs are every output file with the sidecars a command may
    write beside it, and every output folder. An output or its sidecars may not be an input
    (by real path or inode, so links and ``..`` do not slip past), two outputs may not be one
    file, and a folder of files the command names from its data (``FilesDir``, e.g. a
    method group's files) may not directly hold an input, which one of them could replace.
    """
    primary: dict[object, str] = {}  # an output file's identity -> its option
    outputs: dict[object, tuple[str, str]] = {}  # with its sidecars: -> (path, option)
    inputs: dict[object, tuple[str, str]] = {}
    folders: list[tuple[str, str]] = []
    for name, value in vars(args).items():
        option = "--" + name.replace("_", "-")
        for path in _paths_of(value):
            if isinstance(path, OutputPath):
                for key in _identity(path):
                    if key in primary:
                        other = primary[key]
                        return f"{path}: {option} and {other} name the same output file"
                    primary[key] = option
                for written in _derived(path):
                    for key in _identity(written):
                        outputs[key] = (written, option)
            elif isinstance(path, FilesDir):
                folders.append((path, option))
            elif isinstance(path, OutputDir):
                continue
            elif os.path.isfile(path):
                for read in _derived(path):
                    if os.path.isfile(read):
                        for key in _identity(read):
                            inputs[key] = (read, option)
    for key, (written, option) in outputs.items():
        if key in inputs:
            read, given = inputs[key]
            return (
                f"{written}: {option} would overwrite a file given as {given} ({read}: an input "
                "of this command or its sidecar); choose another output path"
            )
    for folder, option in folders:
        foreign = _not_written_by_volinr(folder)
        if foreign is not None:
            return (
                f"{foreign}: {option} {folder} holds a file volinr did not write there (no "
                "provenance sidecar beside it), which a file of this run could replace: move it "
                "or choose another folder"
            )
        holds = os.path.realpath(folder)
        for read, given in inputs.values():
            if os.path.dirname(os.path.realpath(read)) == holds:
                return (
                    f"{folder}: {option} is the folder of {read}, given as {given}; the files "
                    "written into it could replace it: choose another folder"
                )
    return None
