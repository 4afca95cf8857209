"""Downloading the dataset: fetch each configured URL, verify it and unpack it safely.

The benchmark's CT series are published as archives (zip or tar) or bare files on web servers.
This stage fetches every configured URL into a downloads folder, checks the sha256 of what came
back against the configured one, and unpacks everything into one dataset folder. The dataset
folder appears only when every URL succeeded, so no later stage ever reads half a dataset, and a
rerun after an interruption resumes the download instead of starting again.

Downloads (http, https and file URLs; stdlib ``urllib``, no extra dependency):

- each URL is saved as ``downloads_dir/<last part of the URL path>`` through a ``.part`` file;
  an existing ``.part`` is resumed with an HTTP ``Range: bytes=N-`` request (206 answers are
  appended, a 200 answer from a server that ignores ranges restarts from zero), and the
  ``.part`` is renamed into place only when complete (checked against Content-Length);
- a file already downloaded whose sha256 matches the configured one is not fetched again;
- a download is checked before it is renamed into place: a configured sha256 that does not
  match deletes the ``.part`` and raises ``InputError``; with none configured a warning says so
  and the manifest records the sha256 seen, so it can be pinned;
- the program removes only files it wrote: ``downloads_dir/.volinr-downloads.json`` records the
  sha256 of every file it downloaded there, and a file of the same name that it did not write
  (or that changed since) is refused, never replaced (``*.part`` files are volinr's by name).

Archives come from the internet, so extraction trusts nothing in them. ``.zip``, ``.tar``,
``.tar.gz``/``.tgz``, ``.tar.bz2`` and ``.tar.xz`` files are unpacked by hand, member by member
(``tarfile``'s ``filter="data"`` check runs too, where Python has it, but is not relied on);
any other file (``.dcm``, ``.nii``, ``.nii.gz``, a DICOM file without extension) is copied as
is. A member is refused, with an ``InputError`` naming the archive and the member, when:

- its name is absolute, starts with a drive letter, holds a backslash, a NUL or a ``..``
  component, or its resolved path would fall outside the target folder;
- it is a symbolic or hard link, a device file, a FIFO or a socket (so nothing written later
  can be redirected through a link), or it is encrypted;
- its declared size, or the bytes it actually decompresses to (counted while writing, so a
  lying header gains nothing), exceed ``max_member_bytes``, or the dataset's total exceeds
  ``max_total_bytes``;
- it would overwrite a file already extracted (files are created with ``O_EXCL``).

Everything is extracted into a temporary folder beside ``out_dir`` that is renamed to
``out_dir`` at the end; on any error it is removed and ``out_dir`` is left as it was. An
existing ``out_dir`` is replaced only when it is empty or volinr extracted it (it holds the
marker file ``.volinr-dataset.json``); any other folder, file or link there is refused.

The tests need no network: they serve archives from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from volinr.data.archives import CHUNK, Extractor
from volinr.errors import InputError
from volinr.io import sha256_file
from volinr.outputs import atomic_dir, atomic_path, check_replaceable

log = logging.getLogger(__name__)

SCHEMES = ("http", "https", "file")


USER_AGENT = "volinr-download/0.1 (Python urllib)"
# The most one download may write: a CT archive of a few thousand 512x512 slices is a few GB;
# a URL that streams without end (file:///dev/zero, a misbehaving server) stops here.
MAX_DOWNLOAD_BYTES = 64 << 30


DATASET_MARKER = ".volinr-dataset.json"  # in out_dir: volinr extracted this folder


DOWNLOADS_RECORD = ".volinr-downloads.json"  # in downloads_dir: what volinr downloaded there


def fetch_dataset(
    urls: list[str],
    sha256s: list[str],
    out_dir: str | os.PathLike,
    downloads_dir: str | os.PathLike,
    max_member_bytes: int = 4 << 30,
    max_total_bytes: int = 64 << 30,
    timeout_seconds: float = 60.0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Download ``urls`` into ``downloads_dir``, verify them, and unpack them into ``out_dir``.

    ``sha256s`` holds one checksum per URL ("" when none is configured). Returns the manifest:
    ``{"files": [{"url", "file", "bytes", "sha256_seen", "sha256_configured", "members"}],
    "out_dir", "extracted_files"}``. Raises ``InputError`` (naming the URL or the archive and
    member) for anything wrong with the inputs, the download or the archives; ``out_dir`` is
    then left as it was.
    """
    out_dir = Path(out_dir)
    downloads_dir = Path(downloads_dir)
    if progress is None:
        progress = os.isatty(2)
    plan = _plan(urls, sha256s)
    _check_folders(out_dir, downloads_dir)

    for url, name, _ in plan:  # before any folder is made: a refused URL leaves nothing behind
        if not (downloads_dir / name).exists():  # a verified copy is reused (_obtain)
            _check_file_url(url)
    created = not downloads_dir.exists()
    downloads_dir.mkdir(parents=True, exist_ok=True)
    try:
        entries = _download_all(plan, downloads_dir, timeout_seconds, progress)
    except BaseException:
        if created and not any(downloads_dir.iterdir()):
            downloads_dir.rmdir()  # this run's own folder, still empty
        raise

    # renamed into place (replacing the folder of an earlier extraction) only when complete
    with atomic_dir(out_dir) as staging:
        # first, so that an archive member of the same name is refused, not overwritten
        marker = {"written_by": "volinr download", "urls": list(urls)}
        (staging / DATASET_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        extractor = Extractor(staging, max_member_bytes, max_total_bytes)
        for entry in entries:
            entry["members"] = extractor.unpack(Path(entry["file"]), progress)
    count = sum(len(entry["members"]) for entry in entries)
    log.info("%s: %d files (%d bytes) from %d URLs", out_dir, count, extractor.total, len(urls))
    return {"files": entries, "out_dir": str(out_dir), "extracted_files": count}


def _plan(urls: list[str], sha256s: list[str]) -> list[tuple[str, str, str | None]]:
    """(url, file name, configured sha256 or None) per URL, all checked before any download."""
    if not urls:
        raise InputError("no dataset URLs configured")
    if len(urls) != len(sha256s):
        raise InputError(
            f"{len(urls)} dataset URLs but {len(sha256s)} sha256 checksums: give one checksum "
            "(or an empty string) per URL"
        )
    plan = []
    names: dict[str, str] = {}
    for url, sha in zip(urls, sha256s, strict=True):
        name = _file_name(url)
        if name in names:
            raise InputError(f"{url}: would be saved as {name!r}, like {names[name]}")
        names[name] = url
        plan.append((url, name, _configured_sha(url, sha)))
    return plan


def _file_name(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = repr(scheme) if scheme else "no scheme"
        raise InputError(f"{url}: unsupported URL scheme ({shown}); use http, https or file")
    name = PurePosixPath(urllib.parse.unquote(parts.path)).name
    if name in ("", ".", "..") or "\\" in name or "\0" in name or name.endswith(".part"):
        raise InputError(f"{url}: the URL path does not end in a usable file name")
    return name


def _configured_sha(url: str, sha: str | None) -> str | None:
    sha = (sha or "").strip().lower()
    if not sha:
        return None
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise InputError(f"{url}: the configured sha256 {sha!r} is not 64 hexadecimal digits")
    return sha


def _check_folders(out_dir: Path, downloads_dir: Path) -> None:
    if out_dir.name in ("", ".", "..") or not out_dir.resolve().name:
        raise InputError(f"{out_dir}: the dataset folder must be given by its own name")
    out, downloads = out_dir.resolve(), downloads_dir.resolve()
    if downloads == out or downloads.is_relative_to(out):
        # Replacing out_dir would delete the downloads.
        raise InputError(f"{downloads_dir}: the downloads folder must not be inside {out_dir}")
    check_replaceable(out_dir, directory=True)
    check_replaceable(downloads_dir, directory=True)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / DATASET_MARKER).is_file():
        raise InputError(
            f"{out_dir}: the folder exists and was not extracted by volinr (no {DATASET_MARKER}"
            " in it); it is left as it is: give another --out-dir, or empty it"
        )


def _owned_downloads(downloads_dir: Path) -> dict[str, str]:
    """File name -> sha256 of the files volinr downloaded into ``downloads_dir``."""
    try:
        record = json.loads((downloads_dir / DOWNLOADS_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _record_download(path: Path, sha256: str) -> None:
    record = _owned_downloads(path.parent) | {path.name: sha256}
    # kept whatever happens later in the stage: the downloads persist between runs
    with atomic_path(path.parent / DOWNLOADS_RECORD, deferred=False) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _check_ours(path: Path, seen: str, why: str) -> None:
    """Refuse to replace ``path`` (sha256 ``seen``) unless volinr downloaded it as it is."""
    if _owned_downloads(path.parent).get(path.name) != seen:
        raise InputError(
            f"{path}: {why}, and volinr did not download this file (or it changed since); it "
            "is left as it is: move it away, or give another --downloads-dir"
        )


def _obtain(url: str, path: Path, configured: str | None, timeout: float, progress: bool) -> str:
    """Make sure ``path`` holds the file at ``url``; return its sha256."""
    check_replaceable(path)
    if path.exists():
        seen = sha256_file(path)
        if seen == configured:
            log.info("%s: %s is already downloaded and its sha256 matches", url, path)
            return seen
        why = f"its sha256 is {seen}, not {configured}" if configured else "no sha256 is set"
        _check_ours(path, seen, f"it must be downloaded again ({why})")
        log.warning("%s: %s is downloaded again (%s)", url, path, why)

    part = path.with_name(path.name + ".part")
    _download(url, part, timeout, progress)
    seen = sha256_file(part)
    if configured is None:
        log.warning(
            "%s: no sha256 configured, so the download cannot be verified; its sha256 is %s "
            "(add it to the config to pin it)",
            url,
            seen,
        )
    elif seen != configured:
        part.unlink()
        raise InputError(
            f"{url}: sha256 mismatch: expected {configured}, downloaded {seen} "
            f"(the download was deleted)"
        )
    os.replace(part, path)
    return seen


class _Restart(Exception):
    """The partial download cannot be resumed; it was deleted and must start from zero."""


def _download_all(
    plan: list[tuple[str, str, str]], downloads_dir: Path, timeout: float, progress: bool
) -> list[dict[str, Any]]:
    """Each planned URL downloaded (or reused) and verified: its manifest entry."""
    entries = []
    for url, name, configured in plan:
        path = downloads_dir / name
        seen = _obtain(url, path, configured, timeout, progress)
        _record_download(path, seen)
        entries.append(
            {
                "url": url,
                "file": str(path),
                "bytes": path.stat().st_size,
                "sha256_seen": seen,
                "sha256_configured": configured,
                "members": [],
            }
        )
    return entries


def _check_file_url(url: str) -> None:
    """A file: URL must name a regular file (not /dev/zero, a FIFO or a folder)."""
    if urllib.parse.urlsplit(url).scheme == "file":
        source = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        if not source.is_file():
            raise InputError(f"{url}: not a regular file (a file: URL must name one)")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http and https URLs (never to file: or ftp:)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise InputError(f"{req.full_url}: redirected to {newurl}, which is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part`` (a ``.part`` file), resuming one left before."""
    check_replaceable(part)
    _check_file_url(url)
    path = part.with_suffix("")
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    for _ in range(2):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            log.info("%s: resuming %s at byte %d", url, part, offset)
        else:
            log.info("%s: downloading to %s", url, path)
        try:
            response = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as err:
            err.close()
            if err.code == 416 and offset:
                log.warning("%s: the server cannot resume at byte %d; starting again", url, offset)
                part.unlink()
                continue
            raise InputError(f"{url}: HTTP error {err.code} ({err.reason})") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            raise InputError(f"{url}: cannot download ({reason})") from None
        try:
            with response:
                _receive(url, response, part, offset, progress)
        except _Restart:
            continue
        return
    raise InputError(f"{url}: the server answered range requests inconsistently")


def _receive(url: str, response: Any, part: Path, offset: int, progress: bool) -> None:
    status = getattr(response, "status", None)  # None for file: URLs
    length = _int_header(response.headers.get("Content-Length"))
    if status == 206 and offset:
        match = re.fullmatch(
            r"bytes\s+(\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip()
        )
        if not match or int(match[1]) != offset:
            log.warning("%s: unexpected Content-Range; starting the download again", url)
            part.unlink()
            raise _Restart
        mode = "ab"
        if match[3] != "*":
            expected: int | None = int(match[3])
        else:
            expected = None if length is None else offset + length
    elif status in (None, 200):
        if offset:
            log.warning("%s: the server ignored the range request; starting from zero", url)
        mode, offset, expected = "wb", 0, length
    else:
        raise InputError(f"{url}: unexpected HTTP status {status}")

    bar = tqdm(
        total=expected,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name.removesuffix(".part"),
        disable=not progress,
    )
    with bar, open(part, mode) as handle:
        try:
            while block := response.read(CHUNK):
                if handle.tell() + len(block) > MAX_DOWNLOAD_BYTES:
                    handle.close()
                    part.unlink()  # this run's own partial download
                    raise InputError(
                        f"{url}: more than {MAX_DOWNLOAD_BYTES} bytes "
                        "(volinr.data.download.MAX_DOWNLOAD_BYTES); the download was deleted"
                    )
                handle.write(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as err:
            raise InputError(
                f"{url}: download interrupted after {handle.tell()} bytes ({err}); "
                "run again to resume it"
            ) from None
    size = part.stat().st_size
    if expected is not None and size != expected:
        if size > expected:
            part.unlink()
        raise InputError(
            f"{url}: download incomplete: received {size} of {expected} bytes"
            + ("; run again to resume it" if size < expected else "")
        )


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
