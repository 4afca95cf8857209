"""Arrays with their JSON sidecars, strict JSON, and sha256 of files and arrays.

Every array the pipeline passes between stages is a ``.npy`` file with a ``.json`` sidecar
beside it (same stem): units, spacing, source and the sha256 of the pixel data.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from volinr.errors import InputError
from volinr.outputs import atomic_path

log = logging.getLogger(__name__)


NPY_MAGIC = b"\x93NUMPY"


# JSON (RFC 8259) has no NaN or Infinity. An infinite value, such as the PSNR of identical
# images, is written as null and its JSON pointer listed under this key with "inf" or "-inf";
# read_json puts it back. A NaN is a failed computation and is refused.
INFINITE_VALUES_KEY = "infinite_values"


def write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as strict JSON (a dict where it holds an infinite value; see above)."""
    infinite: dict[str, str] = {}
    encoded = _strict(data, "", infinite, path)
    if infinite:
        if not isinstance(encoded, dict):
            raise FloatingPointError(f"refusing to write {path}: infinite values outside a dict")
        encoded[INFINITE_VALUES_KEY] = infinite
    text = json.dumps(encoded, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _strict(value: Any, pointer: str, infinite: dict[str, str], path: Any) -> Any:
    """``value`` with infinities replaced by None (their pointers collected in ``infinite``)."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            raise FloatingPointError(f"refusing to write {path}: {pointer or '/'} is NaN")
        infinite[pointer] = "inf" if value > 0 else "-inf"
        return None
    if isinstance(value, dict):
        return {
            key: _strict(item, f"{pointer}/{_escape(str(key))}", infinite, path)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_strict(item, f"{pointer}/{i}", infinite, path) for i, item in enumerate(value)]
    return value


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")  # RFC 6901


def _restore_infinities(data: Any, path: Path) -> Any:
    if not isinstance(data, dict) or INFINITE_VALUES_KEY not in data:
        return data
    listed = data.pop(INFINITE_VALUES_KEY)
    if not isinstance(listed, dict):
        raise InputError(f"{path}: {INFINITE_VALUES_KEY} is not an object")
    for pointer, sign in listed.items():
        try:
            *parents, last = [
                part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]
            ]
            container = data
            for part in parents:
                container = container[int(part) if isinstance(container, list) else part]
            key = int(last) if isinstance(container, list) else last
            if container[key] is not None or sign not in ("inf", "-inf"):
                raise ValueError
            container[key] = math.inf if sign == "inf" else -math.inf
        except (KeyError, IndexError, TypeError, ValueError):
            raise InputError(f"{path}: {INFINITE_VALUES_KEY} names {pointer!r} wrongly") from None
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, its infinite values restored (see ``write_json``). A bare NaN or Infinity
    (not JSON, but what volinr wrote before) is read as Python reads it; callers that need a
    finite number check for one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    return _restore_infinities(data, path)


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file that must hold an object (a sidecar, a record): anything else is refused."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


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


def _check_npy_size(handle, path: Path) -> None:
    """Refuse a .npy whose header claims more data than the file holds, before allocating it
    (a 100-byte file may claim terabytes)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    if dtype.hasobject:  # np.load would refuse it too, after reading the pickle's header
        raise InputError(
            f"{path}: not a readable .npy array (Object arrays cannot be loaded when "
            "allow_pickle=False)"
        )
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = os.fstat(handle.fileno()).st_size - handle.tell()
    if claimed != held:
        raise InputError(
            f"{path}: its header claims {shape} {dtype} ({claimed} bytes) but the file holds "
            f"{held} bytes of data"
        )
    handle.seek(0)


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
            _check_npy_size(handle, path)
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


def load_image(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """``load_array`` for a 2D slice or a 3D volume: any other dimensionality is refused."""
    array, meta = load_array(path)
    if array.ndim not in (2, 3) or min(array.shape) < 1:
        raise InputError(
            f"{path}: expected a 2D slice or a 3D volume, found an array of shape {array.shape}"
        )
    return array, meta


def write_csv(path: str | Path, rows: list[dict], block: dict) -> None:
    """Rows as CSV, with the provenance ``block`` beside it (``<path>.provenance``)."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    from volinr import provenance  # it reads the package versions: only where one is written

    provenance.write_sidecar(path, block)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
