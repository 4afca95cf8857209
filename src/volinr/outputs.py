"""Writing outputs atomically: a stage's outputs appear all together or not at all.

An output is written to a hidden temporary file beside it and renamed into place; a path
holding anything but a regular file (a folder, FIFO, device node, socket or symlink) is refused,
and an OSError while writing becomes an ``InputError`` naming the output.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from volinr.errors import InputError

log = logging.getLogger(__name__)

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
    # a later write of the same output supersedes an earlier one
    final = []
    for index, (tmp, path) in enumerate(pending):
        if any(later == path for _, later in pending[index + 1 :]):
            _discard(tmp)
        else:
            final.append((tmp, path))
    _commit_set(final)


def _commit_set(pending: list[tuple[Path, Path]]) -> None:
    """Rename every temporary into place, all or nothing: an output's earlier version is moved
    aside first and removed only once the whole set is in place, so a failure part-way (a
    read-only file, a full disk) puts every earlier version back instead of losing it."""
    holders: dict[Path, Path] = {}  # per folder: where earlier versions wait
    moved: list[tuple[Path, Path]] = []  # (earlier version set aside, its path)
    done: list[Path] = []
    kept: list[Path] = []
    tmp = path = None
    try:
        for tmp, path in pending:
            check_replaceable(path, directory=tmp.is_dir())
            if path.exists():
                holder = holders.get(path.parent)
                if holder is None:
                    holder = Path(tempfile.mkdtemp(prefix=".volinr-earlier.", dir=path.parent))
                    holders[path.parent] = holder
                aside = holder / str(len(moved))
                os.rename(path, aside)
                moved.append((aside, path))
            os.replace(tmp, path)
            done.append(path)
    except BaseException as err:
        # what this set renamed into place is its own output; the earlier versions go back
        for written in reversed(done):
            _discard(written)
        for aside, earlier in reversed(moved):
            try:
                os.rename(aside, earlier)
            except OSError:
                kept.append(aside)  # never removed: the user's earlier output lives there
        for leftover, _ in pending:
            if leftover.exists():
                _discard(leftover)
        if isinstance(err, OSError) and path is not None:
            raise _write_error(err, path, tmp) from None
        raise
    finally:
        for holder in holders.values():
            if any(aside.parent == holder for aside in kept):
                log.error("could not put earlier outputs back; they are kept in %s", holder)
            else:
                shutil.rmtree(holder, ignore_errors=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
