"""Reading images into arrays with their metadata, and writing outputs atomically.

Every array the pipeline passes between stages is a ``.npy`` file with a ``.json`` sidecar
beside it (same stem): units, spacing, source and the sha256 of the pixel data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class InputError(Exception):
    """Bad input: a message that names the file and the problem."""


NPY_MAGIC = b"\x93NUMPY"


# --- atomic writes -------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A crash or an error leaves no partial output under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """sha256 of the array's values (C order) with its dtype and shape, not of a file."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.reshape(-1).view(np.uint8).data)  # no copy of a whole volume
    return digest.hexdigest()


# --- arrays with sidecars ------------------------------------------------------------------


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_array(path: str | os.PathLike, array: np.ndarray, meta: dict[str, Any]) -> None:
    """Write ``array`` as .npy and ``meta`` (plus shape, dtype, sha256) as the .json sidecar."""
    array = np.ascontiguousarray(array)
    if not np.all(np.isfinite(array)):
        raise FloatingPointError(f"refusing to write {path}: the array holds NaN or Inf values")
    meta = dict(meta)
    meta.update(shape=list(array.shape), dtype=str(array.dtype), sha256=sha256_array(array))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    write_json(sidecar_path(path), meta)


def load_array(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a .npy array and its sidecar (an empty dict when there is none)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
            # np.load takes any other file for a pickle and says so, which misleads
            if magic != NPY_MAGIC:
                raise InputError(f"{path}: not a .npy array (no NUMPY magic at its start)")
            handle.seek(0)
            array = np.load(handle, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err})") from None
    if array.dtype.kind not in "iuf":
        raise InputError(f"{path}: expected a numeric array, found dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"{path}: the array holds NaN or Inf values")
    meta_path = sidecar_path(path)
    meta = read_json(meta_path) if meta_path.exists() else {}
    if meta_path.exists():
        check_sidecar(path, meta_path, array, meta)
    return array, meta


def check_sidecar(path: Path, meta_path: Path, array: np.ndarray, meta: Any) -> None:
    """Refuse a sidecar that does not describe ``array``: a stale one left beside a newer
    array would silently change the spacing, the coordinates and the labels of every result.

    It must record the array's shape, dtype and sha256 (``save_array`` writes all three; the
    hash costs about 0.13 s for a 463x512x512 int16 volume, see the README), and a spacing of
    one positive, finite entry per axis.
    """

    def refuse(problem: str) -> InputError:
        return InputError(
            f"{meta_path}: {problem}; it does not describe the array {path} (a stale or foreign "
            "sidecar: delete it, or write the array again with volinr)"
        )

    if not isinstance(meta, dict):
        raise refuse(f"not a JSON object but {type(meta).__name__}")
    missing = [key for key in ("shape", "dtype", "sha256") if key not in meta]
    if missing:
        raise refuse(
            f"records no {', '.join(missing)} (the array has shape {list(array.shape)}, dtype "
            f"{array.dtype}, sha256 {sha256_array(array)})"
        )
    if meta["shape"] != list(array.shape):
        raise refuse(f"records shape {meta['shape']!r}, the array's is {list(array.shape)}")
    if meta["dtype"] != str(array.dtype):
        raise refuse(f"records dtype {meta['dtype']!r}, the array's is {array.dtype}")
    spacing = meta.get("spacing_mm")
    if spacing is not None and not (
        isinstance(spacing, list)
        and len(spacing) == array.ndim
        and all(type(s) in (int, float) and math.isfinite(s) and s > 0 for s in spacing)
    ):
        raise refuse(
            f"records spacing_mm {spacing!r}, not {array.ndim} positive finite numbers (one per "
            f"axis of the {array.ndim}D array)"
        )
    seen = sha256_array(array)
    if meta["sha256"] != seen:
        raise refuse(f"records sha256 {meta['sha256']!r}, the array's is {seen}")
