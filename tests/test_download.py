"""The dataset download, against a local HTTP server (no internet): DICOM and hostile archives."""

import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from volinr.data.download import DATASET_MARKER, DOWNLOADS_RECORD, fetch_dataset
from volinr.errors import InputError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- small DICOM files and archives --------------------------------------------------------


def dicom_bytes(index: int) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["slice", str(index)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("slice.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series"])
    ds.Modality = "CT"
    ds.InstanceNumber = index + 1
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    pixels = (np.arange(256, dtype=np.int16).reshape(16, 16) * (index + 1)) - 500
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def slices() -> dict[str, bytes]:
    return {f"series/slice{i:02d}.dcm": dicom_bytes(i) for i in range(3)}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def files_under(folder: Path) -> dict[str, bytes]:
    """The extracted files (volinr's marker that it wrote the folder left out)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != DATASET_MARKER
    }


def assert_nothing_left(tmp_path: Path, out_dir: Path) -> None:
    """No out_dir, no staging folder beside it, and no 'evil' file anywhere."""
    assert not out_dir.exists()
    assert not list(out_dir.parent.glob(f".{out_dir.name}*"))
    assert not list(tmp_path.rglob("evil*"))


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "data" / "dataset", tmp_path / "downloads"


# --- good archives -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_is_extracted_with_identical_bytes(server, dirs, slices, kind):
    out_dir, downloads = dirs
    if kind == "zip":
        data = zip_bytes(slices)
    else:
        data = tar_bytes([regular(name, blob) for name, blob in slices.items()])
    url = server.put(f"ct.{kind}", data)

    manifest = fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)

    assert files_under(out_dir) == slices and (out_dir / DATASET_MARKER).is_file()
    pydicom.dcmread(out_dir / "series/slice01.dcm")  # still valid DICOM
    [entry] = manifest["files"]
    assert entry["url"] == url and entry["sha256_seen"] == entry["sha256_configured"] == sha(data)
    assert entry["bytes"] == len(data) and Path(entry["file"]) == downloads / f"ct.{kind}"
    assert sorted(entry["members"]) == sorted(slices)
    assert manifest["extracted_files"] == 3 and manifest["out_dir"] == str(out_dir)
    assert (downloads / f"ct.{kind}").read_bytes() == data
    assert not list(downloads.glob("*.part"))
    assert [p.name for p in out_dir.parent.iterdir()] == ["dataset"]  # no staging left


def test_plain_files_are_copied_and_several_urls_make_one_folder(server, dirs, slices, tmp_path):
    out_dir, downloads = dirs
    blob = slices["series/slice00.dcm"]
    local = tmp_path / "local" / "scan.nii.gz"  # not a tar: copied as is
    local.parent.mkdir()
    local.write_bytes(b"\x1f\x8b not really a nifti")
    urls = [server.put("bare", blob), local.as_uri(), server.put("more.zip", zip_bytes(slices))]

    manifest = fetch_dataset(urls, ["", "", ""], out_dir, downloads, progress=False)

    assert files_under(out_dir) == {"bare": blob, "scan.nii.gz": local.read_bytes(), **slices}
    assert [e["members"] for e in manifest["files"][:2]] == [["bare"], ["scan.nii.gz"]]
    assert manifest["extracted_files"] == 5


def test_an_existing_dataset_folder_is_replaced_only_on_success(server, dirs, slices, tmp_path):
    out_dir, downloads = dirs
    old = {"old.dcm": slices["series/slice00.dcm"]}
    old_url = server.put("old.zip", zip_bytes(old))
    fetch_dataset([old_url], [""], out_dir, downloads, progress=False)  # an earlier extraction
    data = zip_bytes(slices)
    url = server.put("ct.zip", data)

    with pytest.raises(InputError):
        fetch_dataset([url], ["0" * 64], out_dir, downloads, progress=False)
    assert files_under(out_dir) == old

    fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)
    assert files_under(out_dir) == slices
    assert [p.name for p in out_dir.parent.iterdir()] == ["dataset"]


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_dataset_folder_volinr_did_not_write_is_never_replaced(server, dirs, slices, kind):
    out_dir, downloads = dirs
    out_dir.parent.mkdir(parents=True)
    if kind == "folder":
        out_dir.mkdir()
        (out_dir / "notes.txt").write_text("mine")
    else:
        out_dir.write_text("mine")
    url = server.put("ct.zip", zip_bytes(slices))

    with pytest.raises(
        InputError, match=f"{re.escape(str(out_dir))}: .*(not extracted by|is a regular file)"
    ):
        fetch_dataset([url], [""], out_dir, downloads, progress=False)
    assert server.requests == []  # refused before any download
    assert (out_dir / "notes.txt" if kind == "folder" else out_dir).read_text() == "mine"


@pytest.mark.parametrize("configured", ["mismatch", "none"])
def test_a_file_in_the_downloads_folder_volinr_did_not_write_is_never_replaced(
    server, dirs, slices, configured
):
    out_dir, downloads = dirs
    downloads.mkdir()
    (downloads / "ct.zip").write_text("mine")
    data = zip_bytes(slices)
    url = server.put("ct.zip", data)
    checksum = sha(data) if configured == "mismatch" else ""

    with pytest.raises(InputError, match="volinr did not download this file"):
        fetch_dataset([url], [checksum], out_dir, downloads, progress=False)
    assert (downloads / "ct.zip").read_text() == "mine" and not out_dir.exists()

    # one volinr downloaded is its own: replaced when it no longer matches
    (downloads / "ct.zip").unlink()
    fetch_dataset([url], [""], out_dir, downloads, progress=False)
    server.put("ct.zip", zip_bytes({"other.dcm": slices["series/slice00.dcm"]}))
    fetch_dataset([url], [""], out_dir, downloads, progress=False)
    assert files_under(out_dir) == {"other.dcm": slices["series/slice00.dcm"]}
    assert (downloads / DOWNLOADS_RECORD).is_file()


def test_no_checksum_configured_records_the_one_seen(server, dirs, slices, caplog):
    out_dir, downloads = dirs
    data = zip_bytes(slices)
    url = server.put("ct.zip", data)

    manifest = fetch_dataset([url], [""], out_dir, downloads, progress=False)

    [entry] = manifest["files"]
    assert entry["sha256_configured"] is None and entry["sha256_seen"] == sha(data)
    assert any("no sha256 configured" in r.getMessage() for r in caplog.records)
    assert files_under(out_dir) == slices


def test_a_verified_download_is_not_fetched_again(server, dirs, slices):
    out_dir, downloads = dirs
    data = zip_bytes(slices)
    url = server.put("ct.zip", data)
    fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)
    assert len(server.requests) == 1

    fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)
    assert len(server.requests) == 1
    assert files_under(out_dir) == slices


# --- resuming ------------------------------------------------------------------------------


def test_a_partial_download_is_resumed_with_a_range_request(server, dirs, slices):
    out_dir, downloads = dirs
    data = zip_bytes(slices)
    url = server.put("ct.zip", data)
    half = len(data) // 2
    downloads.mkdir()
    (downloads / "ct.zip.part").write_bytes(data[:half])

    manifest = fetch_dataset([url], [sha(data)], out_dir, downloads, progress=True)

    assert server.requests == [("/ct.zip", f"bytes={half}-")]
    assert manifest["files"][0]["sha256_seen"] == sha(data)
    assert (downloads / "ct.zip").read_bytes() == data
    assert not (downloads / "ct.zip.part").exists()
    assert files_under(out_dir) == slices


def test_a_server_that_ignores_range_still_gives_the_right_file(server, dirs, slices):
    out_dir, downloads = dirs
    server.honour_range = False
    data = zip_bytes(slices)
    url = server.put("ct.zip", data)
    half = len(data) // 2
    downloads.mkdir()
    (downloads / "ct.zip.part").write_bytes(b"x" * half)  # appending to it would be wrong

    manifest = fetch_dataset([url], [""], out_dir, downloads, progress=False)

    assert server.requests == [("/ct.zip", f"bytes={half}-")]  # asked, answered with 200
    assert manifest["files"][0]["sha256_seen"] == sha(data)
    assert (downloads / "ct.zip").read_bytes() == data
    assert files_under(out_dir) == slices


def test_an_interrupted_download_keeps_its_part_and_the_next_run_resumes(server, dirs, slices):
    out_dir, downloads = dirs
    data = zip_bytes(slices)
    url = server.put("ct.zip", data)
    server.cut_next_response_after(1000)

    with pytest.raises(
        InputError, match=f"{re.escape(url)}: download incomplete.*1000 of {len(data)}"
    ):
        fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)
    assert (downloads / "ct.zip.part").read_bytes() == data[:1000]
    assert not (downloads / "ct.zip").exists() and not out_dir.exists()

    fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)
    assert server.requests == [("/ct.zip", None), ("/ct.zip", "bytes=1000-")]
    assert (downloads / "ct.zip").read_bytes() == data
    assert files_under(out_dir) == slices


def test_a_complete_part_answered_416_is_downloaded_again(server, dirs, slices):
    out_dir, downloads = dirs
    data = zip_bytes(slices)
    url = server.put("ct.zip", data)
    downloads.mkdir()
    (downloads / "ct.zip.part").write_bytes(data)

    fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)

    assert server.requests == [("/ct.zip", f"bytes={len(data)}-"), ("/ct.zip", None)]
    assert (downloads / "ct.zip").read_bytes() == data


# --- refusals ------------------------------------------------------------------------------


def test_a_tampered_archive_is_refused_and_deleted(server, dirs, slices, tmp_path):
    out_dir, downloads = dirs
    good = zip_bytes(slices)
    tampered = bytearray(good)
    tampered[-30] ^= 0xFF
    url = server.put("ct.zip", bytes(tampered))

    with pytest.raises(InputError) as raised:
        fetch_dataset([url], [sha(good)], out_dir, downloads, progress=False)

    message = str(raised.value)
    assert url in message and sha(good) in message and sha(bytes(tampered)) in message
    assert not downloads.exists()  # neither the file nor a .part, nor the folder it made
    assert_nothing_left(tmp_path, out_dir)


@pytest.mark.parametrize(
    "name", ["../evil.dcm", "series/../../evil.dcm", "/evil.dcm", "C:/evil.dcm", "..\\evil.dcm"]
)
def test_a_zip_with_an_escaping_path_is_refused(server, dirs, slices, tmp_path, name):
    out_dir, downloads = dirs
    data = zip_bytes({**slices, name: b"evil"})
    url = server.put("traversal.zip", data)

    with pytest.raises(InputError, match=re.escape(repr(name))) as raised:
        fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)

    assert "traversal.zip" in str(raised.value)
    assert_nothing_left(tmp_path, out_dir)


def test_a_tar_with_an_absolute_member_is_refused(server, dirs, slices, tmp_path):
    out_dir, downloads = dirs
    target = tmp_path / "data" / "evil_absolute.dcm"  # where a naive extractall would write
    data = tar_bytes([*(regular(n, b) for n, b in slices.items()), regular(str(target), b"evil")])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert str(target) in archive.getnames()  # the archive really holds the absolute name
    url = server.put("absolute.tar.gz", data)

    with pytest.raises(InputError, match="absolute path"):
        fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)

    assert_nothing_left(tmp_path, out_dir)


def test_a_tar_with_a_symlink_member_is_refused(server, dirs, tmp_path):
    out_dir, downloads = dirs
    link = tarfile.TarInfo("series/link.dcm")
    link.type = tarfile.SYMTYPE
    link.linkname = str(tmp_path / "evil_target.dcm")
    # The classic attack: a link, then a file written through it.
    data = tar_bytes([(link, None), regular("series/link.dcm", b"evil")], mode="w")
    url = server.put("symlink.tar", data)

    with pytest.raises(InputError, match="symbolic link") as raised:
        fetch_dataset([url], [sha(data)], out_dir, downloads, progress=False)

    assert "symlink.tar" in str(raised.value) and "series/link.dcm" in str(raised.value)
    assert_nothing_left(tmp_path, out_dir)


def test_a_tar_with_a_hard_link_or_a_fifo_is_refused(server, dirs, tmp_path):
    out_dir, downloads = dirs
    hard = tarfile.TarInfo("hard.dcm")
    hard.type = tarfile.LNKTYPE
    hard.linkname = "/etc/passwd"
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    for info, problem in ((hard, "hard link"), (fifo, "FIFO")):
        data = tar_bytes([(info, None)], mode="w:bz2")
        url = server.put(f"{info.name}.tar.bz2", data)
        with pytest.raises(InputError, match=problem):
            fetch_dataset([url], [""], out_dir, downloads, progress=False)
        assert_nothing_left(tmp_path, out_dir)


def test_oversized_members_and_datasets_are_refused(server, dirs, slices, tmp_path):
    out_dir, downloads = dirs
    data = tar_bytes([regular(n, b) for n, b in slices.items()], mode="w:xz")
    url = server.put("ct.tar.xz", data)
    size = len(slices["series/slice00.dcm"])

    with pytest.raises(InputError, match=r"series/slice00\.dcm.*over the 100-byte limit"):
        fetch_dataset([url], [sha(data)], out_dir, downloads, max_member_bytes=100, progress=False)
    assert_nothing_left(tmp_path, out_dir)

    with pytest.raises(InputError, match="takes the dataset over"):
        fetch_dataset([url], [sha(data)], out_dir, downloads, max_total_bytes=2 * size)
    assert_nothing_left(tmp_path, out_dir)


def test_a_zip_whose_header_understates_a_member_size_is_refused(server, dirs, slices, tmp_path):
    out_dir, downloads = dirs
    data = bytearray(zip_bytes({"series/slice00.dcm": slices["series/slice00.dcm"]}))
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = (50).to_bytes(4, "little")  # uncompressed size: 50
    data = bytes(data)
    url = server.put("liar.zip", data)

    with pytest.raises(InputError, match="liar.zip"):
        fetch_dataset([url], [sha(data)], out_dir, downloads, max_member_bytes=100, progress=False)
    assert_nothing_left(tmp_path, out_dir)


def test_bad_urls_are_refused(server, dirs, tmp_path):
    out_dir, downloads = dirs
    with pytest.raises(InputError, match="ftp://example.org/ct.zip.*scheme"):
        fetch_dataset(["ftp://example.org/ct.zip"], [""], out_dir, downloads, progress=False)
    missing = f"{server.base}/missing.zip"
    with pytest.raises(InputError, match=re.escape(missing) + ".*404"):
        fetch_dataset([missing], [""], out_dir, downloads, progress=False)
    with pytest.raises(InputError, match="sha256"):
        fetch_dataset([missing, missing], [""], out_dir, downloads, progress=False)
    with pytest.raises(InputError, match="not 64 hexadecimal"):
        fetch_dataset([missing], ["abc"], out_dir, downloads, progress=False)
    assert_nothing_left(tmp_path, out_dir)


def test_bytes_beyond_a_lying_header_size_are_counted_and_refused(
    server, dirs, tmp_path, monkeypatch
):
    out_dir, downloads = dirs
    data = tar_bytes([regular("series/small.dcm", b"0123456789")], mode="w")
    url = server.put("liar.tar", data)
    # Stand in for a reader that yields more than the header declared (10 bytes).
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, member: io.BytesIO(b"x" * 500))

    with pytest.raises(InputError, match=r"series/small\.dcm.*more than 100 bytes.*said 10"):
        fetch_dataset([url], [sha(data)], out_dir, downloads, max_member_bytes=100, progress=False)
    assert_nothing_left(tmp_path, out_dir)


def test_a_file_url_that_is_not_a_regular_file_is_refused(dirs):
    out_dir, downloads = dirs
    with pytest.raises(InputError, match="not a regular file"):
        fetch_dataset(["file:///dev/zero"], [""], out_dir, downloads, progress=False)
    assert not downloads.exists()  # refused before any folder is made (was left empty)


def test_a_download_beyond_the_size_cap_is_stopped_and_deleted(server, dirs, slices, monkeypatch):
    from volinr.data import download

    out_dir, downloads = dirs
    data = tar_bytes([regular(name, blob) for name, blob in slices.items()])
    url = server.put("big.tar", data)
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", len(data) // 2)
    with pytest.raises(InputError, match="more than .* bytes"):
        fetch_dataset([url], [""], out_dir, downloads, progress=False)
    assert not list(downloads.glob("big.tar*"))
