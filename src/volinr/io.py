"""Reading images into arrays with their metadata, and writing outputs atomically.

Every array the pipeline passes between stages is a ``.npy`` file with a ``.json`` sidecar
beside it (same stem): units, spacing, source and the sha256 of the pixel data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
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
# An output is written to a hidden temporary file beside it and renamed into place. Inside
# ``atomic_outputs()`` (which ``volinr.cli.main`` wraps around every stage) the renames wait
# until the whole stage has succeeded, so a stage's outputs appear all together or not at all.

_PENDING: list[list[tuple[Path, Path]]] = []  # one list of (temporary, final) per open set

_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def check_replaceable(path: str | os.PathLike, directory: bool = False) -> None:
    """Refuse an output path that holds anything but a regular file (a folder if ``directory``).

    A rename replaces whatever sits at the path: a device node or a FIFO (this may run as
    root), or a symbolic link (the link, not its target). Neither was written by volinr, so
    neither is replaced; a regular file there is an earlier output, replaced as usual.
    """
    path = Path(path)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise InputError(f"{path}: cannot check the output path ({err.strerror})") from None
    wanted = stat.S_IFDIR if directory else stat.S_IFREG
    if stat.S_IFMT(mode) != wanted:
        found = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        expected = "a folder" if directory else "a regular file"
        raise InputError(
            f"{path}: the output path is {found}; volinr replaces only {expected} there"
        )


def _write_error(err: OSError, path: Path, tmp: Path) -> InputError:
    """An OSError while writing ``path`` (through ``tmp``) as an InputError naming the path the
    user gave, or the other file involved (an input read into the output, say)."""
    name = Path(err.filename) if isinstance(err.filename, str) else None
    ours = name is None or name in (tmp, path) or name.name.startswith(f".{path.name}.")
    if ours:  # the output itself or its temporary
        return InputError(f"{path}: cannot write ({err.strerror or err})")
    return InputError(os_error_message(err))


def os_error_message(err: OSError) -> str:
    """``file: problem`` for an OSError, naming both files of a rename or copy."""
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    return f"{' -> '.join(names) or 'a file'}: {err.strerror or err}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, deferred: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A crash or an error leaves no partial output under the final name, and no temporary file.
    Inside ``atomic_outputs()`` the rename waits for the end of the set, unless ``deferred`` is
    False (a resume checkpoint must survive the stage failing). An OSError (disk full, read-only
    folder) becomes an InputError naming ``path``.
    """
    path = Path(path)
    check_replaceable(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        if deferred and _PENDING:
            _PENDING[-1].append((tmp_path, path))
            tmp_path = None  # the set renames or removes it
        else:
            _commit(tmp_path, path)
    except OSError as err:
        raise _write_error(err, path, tmp_path or path) from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, deferred: bool = True) -> Iterator[Path]:
    """Like ``atomic_path`` for a folder: yield an empty temporary folder beside ``path``.

    An existing folder at ``path`` is replaced (moved aside, then removed once the new one is
    in place): the caller checks first that it may be (that volinr wrote it, or it is empty).
    """
    path = Path(path)
    check_replaceable(path, directory=True)
    staging = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        yield staging
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private
        if deferred and _PENDING:
            _PENDING[-1].append((staging, path))
            staging = None
        else:
            _commit(staging, path)
    except OSError as err:
        raise _write_error(err, path, staging or path) from None
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _commit(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` (a file or a folder) to ``path``, checking ``path`` again first."""
    if not tmp.is_dir():
        check_replaceable(path)
        os.replace(tmp, path)
        return
    check_replaceable(path, directory=True)
    if not path.exists():
        os.rename(tmp, path)
        return
    holder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.rename(path, holder / path.name)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(holder / path.name, path)
        raise
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _discard(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_outputs() -> Iterator[None]:
    """Every ``atomic_path``/``atomic_dir`` output inside the block appears only if the block
    succeeds; on any error or signal its temporaries are removed and no output of the set is
    written. Nested sets join the outermost one."""
    if _PENDING:
        yield
        return
    pending: list[tuple[Path, Path]] = []
    _PENDING.append(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            _discard(tmp)
        raise
    finally:
        _PENDING.remove(pending)
    done: list[Path] = []
    try:
        for index, (tmp, path) in enumerate(pending):
            # a later write of the same output supersedes an earlier one
            if any(later == path for _, later in pending[index + 1 :]):
                _discard(tmp)
                continue
            _commit(tmp, path)
            done.append(path)
    except BaseException as err:
        # all or nothing: what this set already renamed into place is its own output
        for written in done:
            _discard(written)
        for leftover, _ in pending:
            if leftover.exists():
                _discard(leftover)
        if isinstance(err, OSError):
            raise _write_error(err, path, tmp) from None
        raise


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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file that must hold an object (a sidecar, a record): anything else is refused."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


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
    meta_path = sidecar_path(path)
    meta = read_json(meta_path) if meta_path.exists() else {}
    if array.dtype.kind not in "iuf":
        raise InputError(f"{path}: expected a numeric array, found dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"{path}: the array holds NaN or Inf values")
    return array, meta


def load_image(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """``load_array`` for a 2D slice or a 3D volume: any other dimensionality is refused."""
    array, meta = load_array(path)
    if array.ndim not in (2, 3) or min(array.shape) < 1:
        raise InputError(
            f"{path}: expected a 2D slice or a 3D volume, found an array of shape {array.shape}"
        )
    return array, meta
