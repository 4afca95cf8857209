"""Reading and writing volumes: DICOM series, NIfTI and the phantom, on a real head CT (headsq).

Most series here are written with pydicom directly (shuffled file names, uint16 stored values,
RescaleIntercept -1024), so the reader is tested independently of volinr's own writer.
"""

import json
import logging
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from volinr.data.dicom_series import BLANK_SERIES_UID, read_dicom_series
from volinr.data.export import write_dicom_series, write_nifti
from volinr.data.geometry import crop_slices
from volinr.data.nifti import read_nifti
from volinr.data.phantom import synthetic_head_phantom
from volinr.data.volume import read_volume
from volinr.errors import InputError
from volinr.io import sha256_file

ROOT = Path(__file__).resolve().parents[1]
HEADSQ = ROOT / "data/headsq"  # shipped with the repository (data/README.md)
SPACING = [1.5, 3.2, 3.2]  # z, y, x (headsq.json)
INTERCEPT = -1024.0
FIRST_POSITION = np.array([-100.8, -100.8, -60.0])  # LPS mm of voxel (0, 0, 0)


@pytest.fixture(scope="module")
def headsq():
    """The raw headsq volume (int16, z y x) and its description."""
    raw = np.load(HEADSQ / "headsq.npy")
    info = json.loads((HEADSQ / "headsq.json").read_text())
    assert sha256_file(HEADSQ / "headsq.npy") == info["sha256_npy"]
    assert raw.shape == (93, 64, 64) and info["spacing_zyx_mm"] == SPACING
    return raw


def write_series(
    folder,
    raw,
    *,
    series_uid=None,
    study_uid="1.2.3.4",
    patient_id="HEADSQ",
    modality="CT",
    seed=0,
    transfer_syntax=ExplicitVRLittleEndian,
):
    """Write ``raw`` (uint16-able stored values, z y x) as one file per slice with pydicom.

    File names are shuffled and InstanceNumber runs against the slice position, so only
    ImagePositionPatient orders the slices. Returns the paths in slice order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid() if series_uid is None else series_uid
    frame_uid = generate_uid(entropy_srcs=[study_uid])
    order = np.random.default_rng(seed).permutation(len(raw))
    paths = []
    for index, plane in enumerate(raw):
        ds = pydicom.Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = modality
        ds.PatientName = "Head^Square"
        ds.PatientID = patient_id
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesDescription = "headsq quarter"
        ds.SeriesNumber = 3
        ds.InstanceNumber = len(raw) - index
        ds.ImagePositionPatient = [*FIRST_POSITION[:2], FIRST_POSITION[2] + SPACING[0] * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = SPACING[1:]
        ds.SliceThickness = SPACING[0]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleSlope = 1
        ds.RescaleIntercept = INTERCEPT
        ds.PixelData = plane.astype(np.uint16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if transfer_syntax == RLELossless:
            ds.compress(RLELossless, encoding_plugin="pydicom")
        path = folder / f"IM{order[index]:04d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def headsq_series(headsq, tmp_path_factory):
    """The whole headsq volume as a DICOM series, half of it in a subfolder, plus files the
    reader must skip (hidden, DICOMDIR)."""
    folder = tmp_path_factory.mktemp("headsq") / "series"
    paths = write_series(folder, headsq)
    (folder / "sub").mkdir()
    for path in paths[::2]:
        path.rename(folder / "sub" / path.name)
    (folder / ".DS_Store").write_bytes(b"\x00\x01 not dicom")
    (folder / "DICOMDIR").write_bytes(b"not a real DICOMDIR")
    return folder


@pytest.fixture
def small(headsq):
    return headsq[30:42]  # 12 slices: enough for the error cases, fast to write


# --- reading DICOM series -----------------------------------------------------------------


def test_series_written_with_pydicom_reads_back_in_hu_with_its_geometry(headsq, headsq_series):
    volume = read_dicom_series(headsq_series)
    assert volume.voxels.dtype == np.float32 and volume.voxels.shape == (93, 64, 64)
    np.testing.assert_array_equal(volume.voxels, headsq.astype(np.float32) + INTERCEPT)
    meta = volume.meta
    assert meta["kind"] == "dicom_series" and meta["modality"] == "CT" and meta["units"] == "HU"
    assert meta["spacing_mm"] == pytest.approx(SPACING)
    assert meta["origin_mm"] == pytest.approx(FIRST_POSITION)
    assert meta["orientation"] == [1, 0, 0, 0, 1, 0] and meta["slice_normal"] == [0, 0, 1]
    z = [p[2] for p in meta["slice_positions_mm"]]
    assert z == pytest.approx(FIRST_POSITION[2] + SPACING[0] * np.arange(93))
    assert meta["rescale_slope"] == 1 and meta["rescale_intercept"] == INTERCEPT
    assert meta["stored_dtype"] == "uint16" and meta["transfer_syntax"] == ExplicitVRLittleEndian
    assert len(meta["files"]) == 93 and meta["files"] == sorted(meta["files"])
    assert meta["template_file"] == meta["slice_files"][0]
    assert meta["study_uid"] == "1.2.3.4" and meta["series_uid"] and meta["frame_of_reference_uid"]
    json.dumps(meta)  # the sidecar must serialize


def test_compressed_transfer_syntax_is_decoded(tmp_path, small):
    write_series(tmp_path, small, transfer_syntax=RLELossless)
    volume = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(volume.voxels, small + INTERCEPT)
    assert volume.meta["transfer_syntax"] == RLELossless


def test_undecodable_pixel_data_names_the_file_and_a_decoder(tmp_path, small):
    paths = write_series(tmp_path, small)
    ds = pydicom.dcmread(paths[4])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    ds["PixelData"].VR = "OB"
    ds.save_as(paths[4], enforce_file_format=True)
    with pytest.raises(InputError, match="JPEG 2000") as error:
        read_dicom_series(tmp_path)
    assert str(paths[4]) in str(error.value)


def test_two_series_are_listed_and_one_can_be_chosen(tmp_path, small):
    first, second = generate_uid(), generate_uid()
    write_series(tmp_path / "a", small, series_uid=first)
    write_series(tmp_path / "b", small[::-1], series_uid=second, seed=1)
    with pytest.raises(InputError) as error:
        read_dicom_series(tmp_path)
    message = str(error.value)
    assert first in message and second in message and "dataset.series_uid" in message
    assert "12 files" in message and "CT" in message
    chosen = read_dicom_series(tmp_path, series_uid=second)
    np.testing.assert_array_equal(chosen.voxels, small[::-1] + INTERCEPT)
    assert chosen.meta["series_uid"] == second
    with pytest.raises(InputError, match=first):  # an absent one lists what is there
        read_dicom_series(tmp_path, series_uid="1.2.999")


def _edit_headers(paths, **values):
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path)


def test_a_series_whose_uid_an_anonymiser_blanked_reads_and_stays_apart(tmp_path, small, caplog):
    # TotalSegmentator's example series ships with its UIDs blanked (tag present, value empty)
    paths = write_series(tmp_path / "a", small, series_uid="")
    with caplog.at_level(logging.WARNING, logger="volinr.data.dicom_series"):
        volume = read_dicom_series(tmp_path / "a")
    np.testing.assert_array_equal(volume.voxels, small + INTERCEPT)
    assert volume.meta["series_uid"].startswith(BLANK_SERIES_UID)
    assert "blank SeriesInstanceUID" in caplog.text and "12 file(s)" in caplog.text

    # a second blanked series with its own SeriesNumber is listed apart, not merged
    other = write_series(tmp_path / "b", small[::-1], series_uid="", seed=1)
    _edit_headers(other, SeriesNumber=4)
    with pytest.raises(InputError, match="2 DICOM series found") as error:
        read_dicom_series(tmp_path)
    assert "SeriesNumber '3'" in str(error.value) and "SeriesNumber '4'" in str(error.value)

    # ... and one that shares every fallback field meets the duplicate check
    _edit_headers(other, SeriesNumber=3)
    with pytest.raises(InputError, match="same position|duplicate"):
        read_dicom_series(tmp_path)

    # a file without the tag at all is still refused by name
    _edit_headers(paths[:1], SeriesInstanceUID=None)
    with pytest.raises(InputError, match="no SeriesInstanceUID") as error:
        read_dicom_series(tmp_path / "a")
    assert str(paths[0]) in str(error.value)


def test_a_missing_slice_is_a_gap_error_or_is_interpolated(tmp_path, small):
    paths = write_series(tmp_path, small)
    paths[6].unlink()
    with pytest.raises(InputError) as error:
        read_dicom_series(tmp_path)
    message = str(error.value)
    assert "gap" in message and str(tmp_path) in message
    assert str(paths[5]) in message and str(paths[7]) in message
    below, above = FIRST_POSITION[2] + 1.5 * 5, FIRST_POSITION[2] + 1.5 * 7
    assert f"{below:.3f} mm" in message and f"{above:.3f} mm" in message
    assert "1 slice(s) missing" in message and "gap_policy" in message

    filled = read_volume(
        {"kind": "dicom_series", "path": str(tmp_path), "gap_policy": "interpolate"}
    )
    assert filled.voxels.shape == small.shape and filled.meta["filled_slices"] == [6]
    expected = (small[5].astype(np.float32) + small[7]) / 2 + INTERCEPT
    np.testing.assert_allclose(filled.voxels[6], expected, atol=1e-3)
    np.testing.assert_array_equal(filled.voxels[7], small[7] + INTERCEPT)
    assert filled.meta["slice_positions_mm"][6][2] == pytest.approx(FIRST_POSITION[2] + 9.0)
    assert filled.meta["spacing_mm"] == pytest.approx(SPACING)
    assert filled.meta["slice_files"][6] is None


def test_a_duplicated_slice_is_an_error_or_the_first_is_kept(tmp_path, small, caplog):
    paths = write_series(tmp_path, small)
    copy = tmp_path / "AA_copy"  # first by name, last by InstanceNumber
    ds = pydicom.dcmread(paths[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 999
    ds.PixelData = np.zeros_like(small[3], dtype=np.uint16).tobytes()
    ds.save_as(copy, enforce_file_format=True)
    with pytest.raises(InputError, match="duplicate") as error:
        read_dicom_series(tmp_path)
    assert str(paths[3]) in str(error.value) and str(copy) in str(error.value)
    with caplog.at_level(logging.WARNING, logger="volinr.data"):
        kept = read_dicom_series(tmp_path, duplicate_policy="first")
    np.testing.assert_array_equal(kept.voxels, small + INTERCEPT)  # not the zeros
    assert kept.meta["dropped_duplicates"] == [str(copy)] and "duplicate" in caplog.text


def test_uneven_spacing_is_refused(tmp_path, small):
    paths = write_series(tmp_path, small)
    ds = pydicom.dcmread(paths[-1])
    ds.ImagePositionPatient[2] += 0.3  # a step of 1.8 mm among steps of 1.5
    ds.save_as(paths[-1], enforce_file_format=True)
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        read_dicom_series(tmp_path)


def test_a_text_file_in_the_folder_is_named(tmp_path, small):
    write_series(tmp_path, small)
    notes = tmp_path / "notes.txt"
    notes.write_text("acquired on the old scanner\n" * 20)
    with pytest.raises(InputError, match="not a DICOM file") as error:
        read_dicom_series(tmp_path)
    assert str(notes) in str(error.value)


def test_a_truncated_file_is_named(tmp_path, small):
    paths = write_series(tmp_path, small)
    data = paths[8].read_bytes()
    paths[8].write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as error:
        read_dicom_series(tmp_path)
    assert str(paths[8]) in str(error.value)


def test_an_object_without_pixels_is_refused(tmp_path, small):
    seg = pydicom.Dataset()
    seg.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    seg.SOPInstanceUID = generate_uid()
    seg.SeriesInstanceUID = generate_uid()
    seg.Modality = "SEG"
    seg.PatientID = "HEADSQ"
    seg.file_meta = FileMetaDataset()
    seg.file_meta.MediaStorageSOPClassUID = seg.SOPClassUID
    seg.file_meta.MediaStorageSOPInstanceUID = seg.SOPInstanceUID
    seg.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    (tmp_path / "seg").mkdir()
    seg.save_as(tmp_path / "seg" / "labels.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="SEG object, not an image") as error:
        read_dicom_series(tmp_path / "seg")
    assert "labels.dcm" in str(error.value)
    # Beside a CT series the folder holds two series; choosing the CT one reads it.
    ct_uid = generate_uid()
    write_series(tmp_path / "seg" / "ct", small, series_uid=ct_uid)
    with pytest.raises(InputError, match="SEG"):
        read_dicom_series(tmp_path / "seg")
    assert read_dicom_series(tmp_path / "seg", series_uid=ct_uid).voxels.shape == small.shape


def test_a_modality_not_allowed_is_refused(tmp_path, small):
    paths = write_series(tmp_path, small, modality="PT")
    with pytest.raises(InputError, match="modality PT") as error:
        read_dicom_series(tmp_path)
    assert str(paths[0].parent) in str(error.value)
    assert read_dicom_series(tmp_path, allow_modalities=["PT"]).meta["units"] == "scanner units"


def test_a_series_mixing_patients_names_both_files(tmp_path, small):
    uid = generate_uid()
    write_series(tmp_path, small[:6], series_uid=uid)
    other = write_series(tmp_path / "other", small[6:], series_uid=uid, patient_id="SOMEONE")
    with pytest.raises(InputError, match="patients") as error:
        read_dicom_series(tmp_path)
    message = str(error.value)
    assert "'HEADSQ'" in message and "'SOMEONE'" in message
    assert any(str(path) in message for path in other)


def test_inconsistent_pixel_spacing_names_both_files(tmp_path, small):
    paths = write_series(tmp_path, small)
    ds = pydicom.dcmread(paths[5])
    ds.PixelSpacing = [3.0, 3.0]
    ds.save_as(paths[5], enforce_file_format=True)
    with pytest.raises(InputError, match="pixel spacings") as error:
        read_dicom_series(tmp_path)
    assert str(paths[5]) in str(error.value)


def test_a_multiframe_file_is_not_supported(tmp_path, small):
    paths = write_series(tmp_path, small[:1])
    ds = pydicom.dcmread(paths[0])
    ds.NumberOfFrames = 2
    ds.PixelData = small[:2].astype(np.uint16).tobytes()
    ds.save_as(paths[0], enforce_file_format=True)
    with pytest.raises(InputError, match="multi-frame") as error:
        read_dicom_series(tmp_path)
    assert str(paths[0]) in str(error.value)


def test_empty_or_absent_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_text("x")
    with pytest.raises(InputError, match="no files found"):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(InputError, match="no such folder"):
        read_dicom_series(tmp_path / "absent")


# --- NIfTI -------------------------------------------------------------------------------


def lps_of(affine_ras, ijk):
    """LPS position of NIfTI voxel (i, j, k) under a RAS affine."""
    ras = affine_ras @ np.append(np.asarray(ijk, float), 1.0)
    return np.array([-ras[0], -ras[1], ras[2]])


def volinr_position(meta, k, j, i):
    row, column = np.array(meta["orientation"][:3]), np.array(meta["orientation"][3:])
    _, dy, dx = meta["spacing_mm"]
    return np.array(meta["slice_positions_mm"][k]) + j * dy * column + i * dx * row


@pytest.mark.parametrize(
    "diagonal, rows_reversed",
    [((-3.2, -3.2, 1.5), False), ((-3.2, 3.2, 1.5), True)],
    ids=["LPS-stored (right-handed)", "LAS-stored (left-handed)"],
)
def test_nifti_reads_into_slices_rows_columns_with_lps_geometry(
    tmp_path, headsq, diagonal, rows_reversed
):
    affine = np.diag([*diagonal, 1.0])
    affine[:3, 3] = [90.0, -20.0, -60.0]
    data = headsq.transpose(2, 1, 0)  # NIfTI's data[i, j, k]
    image = nib.Nifti1Image(data.astype(np.int16), affine)
    image.header.set_slope_inter(1.0, INTERCEPT)
    nib.save(image, tmp_path / "head.nii.gz")

    volume = read_nifti(tmp_path / "head.nii.gz")
    expected = headsq.astype(np.float32) + INTERCEPT
    if rows_reversed:
        expected = expected[:, ::-1, :]
    assert volume.voxels.dtype == np.float32
    np.testing.assert_array_equal(volume.voxels, expected)
    meta = volume.meta
    assert meta["spacing_mm"] == pytest.approx(SPACING)
    assert meta["rows_reversed"] is rows_reversed and meta["kind"] == "nifti"
    assert meta["slice_normal"] == pytest.approx([0, 0, 1])  # slices ascend along it
    # Each voxel sits where the file's affine puts it.
    rows = volume.voxels.shape[1]
    for k, j, i in [(0, 0, 0), (92, 63, 63), (40, 10, 50)]:
        j_file = rows - 1 - j if rows_reversed else j
        assert volinr_position(meta, k, j, i) == pytest.approx(lps_of(affine, (i, j_file, k)))
    assert meta["origin_mm"] == pytest.approx(volinr_position(meta, 0, 0, 0))
    json.dumps(meta)


def test_nifti_with_nan_or_wrong_dimensions_is_refused(tmp_path):
    data = np.zeros((8, 8, 8), np.float32)
    data[1, 2, 3] = np.nan
    data[4, 4, 4] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(InputError, match="1 NaN and 1 Inf") as error:
        read_nifti(tmp_path / "nan.nii")
    assert "nan.nii" in str(error.value)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(InputError, match="3D"):
        read_nifti(tmp_path / "4d.nii")
    nib.save(nib.Nifti1Image(np.ones((8, 7, 6, 1), np.float32), np.eye(4)), tmp_path / "one.nii")
    assert read_nifti(tmp_path / "one.nii").voxels.shape == (6, 7, 8)
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="broken.nii.gz"):
        read_nifti(tmp_path / "broken.nii.gz")


# --- writing -----------------------------------------------------------------------------


def test_write_dicom_series_round_trip_keeps_values_geometry_and_study(
    tmp_path, headsq, headsq_series
):
    original = read_dicom_series(headsq_series)
    changed = original.voxels + np.linspace(-0.49, 0.49, original.voxels.size).reshape(
        original.voxels.shape
    ).astype(np.float32)  # not integers: the stored values round
    files = write_dicom_series(
        tmp_path / "export", changed, original.meta, "volinr test", derived_from="recon.npy"
    )
    assert len(files) == 93 and all(f.is_file() for f in files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    back = read_dicom_series(tmp_path / "export")
    assert np.abs(back.voxels - changed).max() <= 0.5 + 1e-4
    np.testing.assert_allclose(back.meta["slice_positions_mm"], original.meta["slice_positions_mm"])
    assert back.meta["spacing_mm"] == pytest.approx(SPACING)
    assert back.meta["orientation"] == pytest.approx(original.meta["orientation"])
    assert back.meta["series_uid"] != original.meta["series_uid"]
    assert back.meta["study_uid"] == original.meta["study_uid"] == "1.2.3.4"
    assert back.meta["frame_of_reference_uid"] == original.meta["frame_of_reference_uid"]
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert "DERIVED" in header.ImageType and header.SOPClassUID == CTImageStorage
    assert header.PatientID == "HEADSQ" and header.SeriesDescription == "volinr test"
    assert "recon.npy" in header.DerivationDescription
    assert len({pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}) == 93


def test_write_dicom_series_without_template_and_atomically(tmp_path, monkeypatch):
    phantom = synthetic_head_phantom((10, 24, 24), seed=2)
    files = write_dicom_series(tmp_path / "phantom", phantom.voxels, phantom.meta, "phantom")
    back = read_dicom_series(tmp_path / "phantom")
    assert np.abs(back.voxels - phantom.voxels).max() <= 0.5 + 1e-4
    assert back.meta["origin_mm"] == pytest.approx(phantom.meta["origin_mm"])
    assert back.meta["study_uid"] == phantom.meta["study_uid"]
    with pytest.raises(FileExistsError):  # never over a folder that holds files
        write_dicom_series(tmp_path / "phantom", phantom.voxels, phantom.meta, "again")
    assert sorted(tmp_path.joinpath("phantom").iterdir()) == files

    calls = []
    save_as = pydicom.Dataset.save_as

    def failing_save_as(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return save_as(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", failing_save_as)
    with pytest.raises(InputError, match="failed: cannot write \\(disk full\\)"):
        write_dicom_series(tmp_path / "failed", phantom.voxels, phantom.meta, "phantom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]


def test_write_nifti_round_trip(tmp_path, headsq_series):
    volume = read_dicom_series(headsq_series)
    write_nifti(tmp_path / "head.nii.gz", volume.voxels, volume.meta)
    assert nib.load(tmp_path / "head.nii.gz").get_data_dtype() == np.int16  # integral HU
    back = read_nifti(tmp_path / "head.nii.gz")
    np.testing.assert_array_equal(back.voxels, volume.voxels)
    for key in ("spacing_mm", "origin_mm", "orientation", "slice_normal", "slice_positions_mm"):
        np.testing.assert_allclose(back.meta[key], volume.meta[key], err_msg=key)
    assert not back.meta["rows_reversed"]

    # An oblique, non-integral volume: float32, and the same geometry back.
    phantom = synthetic_head_phantom((12, 20, 16), seed=5, spacing_mm=(2.0, 0.8, 0.9))
    yaw, tilt = np.deg2rad(20), np.deg2rad(15)
    row = [np.cos(yaw), np.sin(yaw), 0]
    column = [-np.sin(yaw) * np.cos(tilt), np.cos(yaw) * np.cos(tilt), np.sin(tilt)]
    normal = np.cross(row, column)  # unit: row and column are orthonormal
    origin = np.array([10.0, -30.0, 45.0])
    meta = phantom.meta | {
        "orientation": [*row, *column],
        "slice_positions_mm": [list(origin + 2.0 * k * normal) for k in range(12)],
    }
    write_nifti(tmp_path / "oblique.nii", phantom.voxels, meta)
    back = read_nifti(tmp_path / "oblique.nii")
    np.testing.assert_array_equal(back.voxels, phantom.voxels)
    # The NIfTI header holds the affine in float32.
    np.testing.assert_allclose(back.meta["orientation"], meta["orientation"], atol=1e-6)
    np.testing.assert_allclose(
        back.meta["slice_positions_mm"], meta["slice_positions_mm"], atol=1e-5
    )
    assert back.meta["spacing_mm"] == pytest.approx([2.0, 0.8, 0.9])
    # Equal volumes give equal compressed files (no timestamp in the gzip header).
    write_nifti(tmp_path / "a.nii.gz", phantom.voxels, meta)
    write_nifti(tmp_path / "b.nii.gz", phantom.voxels, meta)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()


# --- phantom and dispatch ----------------------------------------------------------------


def test_phantom_is_deterministic_plausible_and_fast():
    synthetic_head_phantom((8, 8, 8))  # imports out of the timing
    start = time.perf_counter()
    phantom = synthetic_head_phantom()
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0  # about 0.06 s on a laptop; loose for a loaded CI machine
    voxels = phantom.voxels
    assert voxels.shape == (48, 96, 96) and voxels.dtype == np.float32
    np.testing.assert_array_equal(voxels, synthetic_head_phantom(seed=0).voxels)
    other = synthetic_head_phantom(seed=1).voxels
    assert np.abs(other - voxels).mean() > 20  # another head, not only other noise
    assert voxels[0, 0, 0] < -900 and np.mean(voxels < -900) > 0.2  # air
    assert voxels.max() > 900 and np.mean(voxels > 900) > 0.01  # skull
    brain = voxels[24, 40:56, 40:56]
    assert -20 < np.median(brain) < 60  # soft tissue around 30-40 HU, CSF ~5
    meta = phantom.meta
    assert meta["modality"] == "CT" and meta["units"] == "HU" and meta["kind"] == "phantom"
    assert meta["spacing_mm"] == [2.5, 1.0, 1.0] and len(meta["slice_positions_mm"]) == 48
    json.dumps(meta)


def test_read_volume_dispatches_and_crops_with_the_geometry(headsq_series):
    volume = read_volume({"kind": "dicom_series", "path": str(headsq_series), "slices": [10, 30]})
    assert volume.voxels.shape == (20, 64, 64)
    first = FIRST_POSITION + [0, 0, 10 * 1.5]
    assert volume.meta["origin_mm"] == pytest.approx(first)
    assert volume.meta["slice_positions_mm"][0] == pytest.approx(first)
    assert len(volume.meta["slice_positions_mm"]) == 20
    assert volume.meta["source_slice_range"] == [10, 30]
    again = crop_slices(volume, 5, 10)  # ranges compose
    assert again.meta["source_slice_range"] == [15, 20]
    assert again.meta["origin_mm"] == pytest.approx(FIRST_POSITION + [0, 0, 15 * 1.5])
    with pytest.raises(InputError, match="slice range"):
        crop_slices(volume, 5, 25)

    spec = {"kind": "phantom", "phantom": {"shape": [8, 16, 16], "seed": 3}}
    assert read_volume(spec).voxels.shape == (8, 16, 16)
    flat = {"kind": "phantom", "shape": [8, 16, 16], "seed": 3, "spacing_mm": [2.5, 1, 1]}
    np.testing.assert_array_equal(read_volume(flat).voxels, read_volume(spec).voxels)
    with pytest.raises(ValueError, match="unknown volume kind"):
        read_volume({"kind": "slice"})
    with pytest.raises(InputError, match="dataset.path"):
        read_volume({"kind": "nifti", "path": ""})


def test_reader_ignores_copies_it_should_not_see(tmp_path, headsq_series):
    # A copy of the series inside a hidden folder is not a second series.
    shutil.copytree(headsq_series, tmp_path / "series")
    shutil.copytree(headsq_series / "sub", tmp_path / "series" / ".backup")
    assert read_dicom_series(tmp_path / "series").voxels.shape == (93, 64, 64)


@pytest.mark.parametrize(
    ("orientation", "problem"),
    [
        ([2, 0, 0, 0, 2, 0], "lengths 2 and 2, not 1"),
        ([1, 0, 0, 0.5, 0.8660254, 0], "not orthogonal"),
    ],
)
def test_a_series_whose_direction_cosines_are_not_an_orientation_is_refused(
    tmp_path, orientation, problem
):
    """(2,0,0,0,2,0) once gave a volume whose exported NIfTI said 1.0 mm for 0.5 mm pixels."""
    paths = write_series(tmp_path / "series", np.zeros((3, 8, 8), np.uint16) + 1000)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = orientation
        ds.save_as(path)
    with pytest.raises(InputError, match=problem):
        read_dicom_series(tmp_path / "series")


def test_a_slice_far_off_the_others_is_not_filled_with_millions_of_slices(tmp_path, small):
    """4 files with the last at z = 2e6 mm once planned 2 million slices in a Python loop."""
    paths = write_series(tmp_path, small[:4])
    ds = pydicom.dcmread(paths[-1])
    ds.ImagePositionPatient = [FIRST_POSITION[0], FIRST_POSITION[1], 2e6]
    ds.save_as(paths[-1])
    with pytest.raises(InputError, match=r"would make \d+ slices out of 4 files"):
        read_volume({"kind": "dicom_series", "path": str(tmp_path), "gap_policy": "interpolate"})


def test_a_nifti_of_integers_beyond_float32_is_refused_not_rounded(tmp_path):
    """As kind array refuses the same values: int32 above 2^24 would be rounded to float32."""
    import nibabel as nib

    data = np.full((4, 5, 6), (1 << 24) + 1, dtype=np.int32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "wide.nii")
    with pytest.raises(InputError, match=r"wide\.nii: integers beyond \+-2\^24"):
        read_nifti(tmp_path / "wide.nii")
