"""Safe extraction of downloaded archives: zip and tar unpacked member by member, trusting
nothing in them (see :mod:`volinr.data.download` for every refusal).
"""

from __future__ import annotations

import logging
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, NoReturn

from tqdm import tqdm

from volinr.errors import InputError

log = logging.getLogger(__name__)


CHUNK = 1 << 20  # bytes read and written at a time
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class Extractor:
    """Writes files into ``root`` only, within the size limits, and lists what it wrote."""

    def __init__(self, root: Path, max_member_bytes: int, max_total_bytes: int) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.max_member = max_member_bytes
        self.max_total = max_total_bytes
        self.total = 0
        self.archive = root
        self.members: list[str] = []

    def unpack(self, path: Path, progress: bool) -> list[str]:
        """Extract the archive at ``path`` (or copy a plain file); the relative paths written."""
        self.archive, self.members = path, []
        lower = path.name.lower()
        bar = tqdm(desc=f"unpacking {path.name}", unit=" files", disable=not progress)
        with bar:
            if lower.endswith(".zip"):
                self._zip(bar)
            elif lower.endswith(TAR_SUFFIXES):
                self._tar(bar)
            else:
                with open(path, "rb") as source:
                    self._file(path.name, path.stat().st_size, source, is_member=False)
                bar.update()
        log.info("%s: %d files written", path, len(self.members))
        return self.members

    def _zip(self, bar: tqdm) -> None:
        try:
            with zipfile.ZipFile(self.archive) as archive:
                for info in archive.infolist():
                    name = info.filename
                    self._target(name)
                    kind = stat.S_IFMT(info.external_attr >> 16)
                    if info.flag_bits & 0x1:
                        self._refuse(name, "is encrypted")
                    if kind == stat.S_IFLNK:
                        self._refuse(name, "is a symbolic link")
                    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                        self._refuse(name, "is a device file, FIFO or socket")
                    if info.is_dir():
                        self._directory(name)
                        continue
                    with archive.open(info) as source:
                        self._file(name, info.file_size, source)
                    bar.update()
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as err:
            raise InputError(f"{self.archive}: not a readable zip archive ({err})") from None
        except OSError as err:
            raise InputError(f"{self.archive}: cannot read the zip archive ({err})") from None

    def _tar(self, bar: tqdm) -> None:
        data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.11.4
        try:
            with tarfile.open(self.archive, "r:*") as archive:
                for member in archive:
                    name = member.name
                    self._target(name)
                    if member.issym():
                        self._refuse(name, f"is a symbolic link (to {member.linkname!r})")
                    if member.islnk():
                        self._refuse(name, f"is a hard link (to {member.linkname!r})")
                    if member.ischr() or member.isblk() or member.isfifo():
                        self._refuse(name, "is a device file or FIFO")
                    if not (member.isdir() or member.isfile()):
                        self._refuse(name, f"has an unsupported type ({member.type!r})")
                    if data_filter is not None:
                        try:
                            data_filter(member, self.real_root)
                        except tarfile.FilterError as err:
                            self._refuse(name, f"is refused by tarfile's data filter ({err})")
                    if member.isdir():
                        self._directory(name)
                        continue
                    source = archive.extractfile(member)
                    if source is None:
                        self._refuse(name, "has no data")
                    with source:
                        self._file(name, member.size, source)
                    bar.update()
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as err:
            raise InputError(f"{self.archive}: not a readable tar archive ({err})") from None
        except OSError as err:
            raise InputError(f"{self.archive}: cannot read the tar archive ({err})") from None

    def _refuse(self, name: str, problem: str) -> NoReturn:
        raise InputError(f"{self.archive}: refusing member {name!r}: it {problem}")

    def _target(self, name: str) -> Path | None:
        """Where member ``name`` goes inside the root (None for the root itself), or refuse it."""
        if not name or "\0" in name:
            self._refuse(name, "has an empty name or a NUL character")
        if "\\" in name:
            self._refuse(name, "contains a backslash")
        if name.startswith("/"):
            self._refuse(name, "is an absolute path")
        if re.match(r"[A-Za-z]:", name):
            self._refuse(name, "starts with a drive letter")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            self._refuse(name, "has a '..' component")
        if not parts:
            return None
        target = self.root.joinpath(*parts)
        real = os.path.realpath(target)
        if os.path.commonpath([self.real_root, real]) != self.real_root or real == self.real_root:
            self._refuse(name, "would be written outside the target folder")
        return target

    def _directory(self, name: str) -> None:
        target = self._target(name)
        if target is None:
            return
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._refuse(name, f"cannot be created as a folder ({err})")

    def _file(self, name: str, declared: int, source: IO[bytes], is_member: bool = True) -> None:
        target = self._target(name)
        if target is None:
            self._refuse(name, "is a file named like the target folder itself")
        if is_member and declared > self.max_member:
            self._refuse(name, f"is {declared} bytes, over the {self.max_member}-byte limit")
        if self.total + declared > self.max_total:
            self._refuse(name, f"takes the dataset over the {self.max_total}-byte limit")
        written = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:  # O_EXCL: never follows or overwrites anything
                while block := source.read(CHUNK):
                    written += len(block)
                    if is_member and written > self.max_member:
                        self._refuse(
                            name,
                            f"holds more than {self.max_member} bytes (its header said "
                            f"{declared}), over the limit",
                        )
                    if self.total + written > self.max_total:
                        self._refuse(
                            name, f"takes the dataset over the {self.max_total}-byte limit"
                        )
                    out.write(block)
        except FileExistsError:
            self._refuse(name, "would overwrite a file already extracted")
        except OSError as err:
            self._refuse(name, f"cannot be written ({err})")
        self.total += written
        self.members.append(target.relative_to(self.root).as_posix())
