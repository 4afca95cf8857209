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


def json_value(text: str):
    try:
        return json.loads(text)
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


def _paths_of(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _sidecar(path: str) -> str | None:
    return str(Path(path).with_suffix(".json")) if path.endswith(".npy") else None


def check_paths(args: argparse.Namespace) -> str | None:
    """Why the command's output files cannot be written as given (None: they can).

    An output may not be one of the command's existing inputs (nor an array's JSON sidecar),
    and two outputs may not be the same file: either would destroy a file the user still
    needs, or one output would silently replace another.
    """
    outputs: dict[str, tuple[str, str]] = {}  # resolved path -> (path as given, option)
    inputs: dict[str, str] = {}
    for name, value in vars(args).items():
        option = "--" + name.replace("_", "-")
        for path in _paths_of(value):
            if isinstance(path, OutputPath):
                for written in filter(None, (path, _sidecar(path))):
                    resolved = os.path.realpath(written)
                    if resolved in outputs:
                        other = outputs[resolved][1]
                        return f"{written}: {option} and {other} name the same output file"
                    outputs[resolved] = (written, option)
            elif not isinstance(path, OutputDir) and os.path.isfile(path):
                for read in filter(None, (path, _sidecar(path))):
                    inputs[os.path.realpath(read)] = option
    for resolved, (written, option) in outputs.items():
        if resolved in inputs:
            return (
                f"{written}: {option} would overwrite a file given as {inputs[resolved]} (an "
                "input of this command); choose another output path"
            )
    return None
