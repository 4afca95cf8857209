import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from volinr import outputs
from volinr.data.dicom_frames import correlation_with, read_dicom_frames, read_frame, resolve_source
from volinr.errors import InputError
from volinr.io import load_array, read_json, save_array, write_json
from volinr.outputs import atomic_dir, atomic_outputs, atomic_path

EVAL = "pydicom-data:693_UNCR.dcm"


def test_evaluation_slice_is_read_in_hounsfield_units():
    frame = read_frame(EVAL)
    assert frame.pixels.shape == (512, 512) and frame.pixels.dtype == np.float32
    assert frame.pixels.min() == -3024 and frame.pixels.max() == 1468
    assert frame.meta["modality"] == "CT" and frame.meta["units"] == "HU"
    assert frame.meta["rescale_intercept"] == -1024
    assert frame.meta["spacing_mm"] == pytest.approx([0.478516, 0.478516])
    assert frame.meta["bits_stored"] == 14 and frame.meta["bits_allocated"] == 16


def test_multiframe_file_gives_every_frame():
    frames = read_dicom_frames("pydicom-data:eCT_Supplemental.dcm")
    assert len(frames) == 2 and frames[0].sha256 != frames[1].sha256


@pytest.mark.parametrize(
    "source",
    ["pydicom-data:693_UNCI.dcm", "pydicom-data:693_J2KR.dcm", "pydicom:693_J2KI.dcm"],
)
def test_re_encodings_of_the_evaluation_slice_correlate(source):
    evaluation = read_frame(EVAL).pixels
    assert correlation_with(evaluation, read_frame(source).pixels) > 0.9


def test_a_flipped_or_shifted_copy_still_correlates_and_other_slices_do_not():
    evaluation = read_frame(EVAL).pixels
    assert correlation_with(evaluation, evaluation[:, ::-1] + 10) > 0.99
    assert correlation_with(evaluation, np.roll(evaluation, 3, axis=0)) > 0.5
    other = read_frame("pydicom:J2K_pixelrep_mismatch.dcm").pixels  # another patient's head
    assert correlation_with(evaluation, other) < 0.3


def test_bad_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a DICOM file")
    with pytest.raises(InputError, match="notes.txt"):
        read_dicom_frames(str(text))
    with pytest.raises(InputError, match="no such file"):
        resolve_source(str(tmp_path / "missing.dcm"))
    with pytest.raises(InputError, match="modality RTDOSE"):
        read_dicom_frames("pydicom:rtdose.dcm")
    with pytest.raises(InputError, match="without pixel data"):
        read_dicom_frames("pydicom:rtplan.dcm")
    with pytest.raises(InputError, match="frame 3"):
        read_frame(EVAL, 3)


def test_truncated_dicom_names_the_file(tmp_path):
    data = resolve_source(EVAL).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.dcm"):
        read_dicom_frames(str(cut))
    assert pydicom.dcmread(resolve_source(EVAL)).Rows == 512


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_refuses_what_appears_at_the_path_meanwhile(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(InputError, match="out.npy: the output path is a FIFO"):
        with atomic_path(target) as tmp:
            tmp.write_text("complete")
            os.mkfifo(target)  # made while the output was being written
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"] and target.is_fifo()


def test_an_output_set_appears_all_together_or_not_at_all(tmp_path):
    with atomic_outputs():
        save_array(tmp_path / "a.npy", np.zeros(3, np.float32), {})
        with atomic_dir(tmp_path / "folder") as folder:
            (folder / "member").write_text("m")
        assert list(tmp_path.iterdir()) != [] and not (tmp_path / "a.npy").exists()  # pending
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy", "folder"]

    with pytest.raises(RuntimeError, match="boom"):
        with atomic_outputs():
            write_json(tmp_path / "b.json", {"b": 1})
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npy", "folder"]


def test_an_output_set_whose_rename_fails_midway_takes_back_what_it_renamed(tmp_path, monkeypatch):
    real_replace = os.replace

    def second_rename_fails(source, target):
        if Path(target).name == "second.json":
            raise OSError(28, "No space left on device", str(source))
        real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", second_rename_fails)
    with pytest.raises(InputError, match="second.json: cannot write"):
        with atomic_outputs():
            write_json(tmp_path / "first.json", {})
            write_json(tmp_path / "second.json", {})
    assert list(tmp_path.iterdir()) == []


def test_a_rerun_whose_last_rename_fails_puts_every_earlier_output_back(tmp_path, monkeypatch):
    # the download rerun case: a folder and a manifest replaced together, the manifest's
    # rename fails; before, the earlier folder had already been removed
    with atomic_outputs():
        with atomic_dir(tmp_path / "dataset") as folder:
            (folder / "scan.dcm").write_bytes(b"earlier")
        write_json(tmp_path / "manifest.json", {"run": 1})
    real_replace = os.replace

    def manifest_rename_fails(source, target):
        if Path(target).name == "manifest.json":
            raise OSError(30, "Read-only file system", str(target))
        real_replace(source, target)

    monkeypatch.setattr(outputs.os, "replace", manifest_rename_fails)
    with pytest.raises(InputError, match="manifest.json: cannot write"):
        with atomic_outputs():
            with atomic_dir(tmp_path / "dataset") as folder:
                (folder / "scan.dcm").write_bytes(b"later")
            write_json(tmp_path / "manifest.json", {"run": 2})
    assert (tmp_path / "dataset" / "scan.dcm").read_bytes() == b"earlier"
    assert read_json(tmp_path / "manifest.json") == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "manifest.json"]


def test_arrays_round_trip_with_sidecar_and_refuse_nan(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_array(tmp_path / "a.npy", array, {"source": "test"})
    loaded, meta = load_array(tmp_path / "a.npy")
    assert np.array_equal(loaded, array) and meta["source"] == "test" and len(meta["sha256"]) == 64
    with pytest.raises(FloatingPointError, match="NaN"):
        save_array(tmp_path / "b.npy", np.array([np.nan], np.float32), {})
    assert not (tmp_path / "b.npy").exists()
    with pytest.raises(InputError, match="missing.npy"):
        load_array(tmp_path / "missing.npy")


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    save_array(tmp_path / "a.npy", np.zeros(3, np.float32), {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.npy").stat().st_mode & 0o777 == 0o666 & ~mask
