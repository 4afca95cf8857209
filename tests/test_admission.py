"""The readers' one admission of voxels (volinr.data.admission): float32 that holds the file's
values, or a refusal naming the file; the same rule for DICOM, NIfTI and arrays."""

import nibabel as nib
import numpy as np
import pydicom
import pytest

from test_volumes import write_series
from volinr.data.admission import FLOAT32_EXACT, float32_voxels
from volinr.data.dicom_series import read_dicom_series
from volinr.data.nifti import read_nifti
from volinr.errors import InputError

BEYOND = FLOAT32_EXACT + 1  # the first integer float32 cannot hold


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([0, BEYOND], np.int64), r"beyond \+-2\^24"),
        (np.array([0.0, BEYOND], np.float64), r"beyond \+-2\^24"),  # integer data as float64
        (np.array([0.0, np.nan], np.float64), "1 NaN"),
        (np.array([0.0, 1e300], np.float64), "1 out-of-float32-range"),
        (np.array([True, False]), "dtype bool"),
    ],
)
def test_values_float32_would_change_are_refused_naming_the_file(values, message):
    with pytest.raises(InputError, match=f"scan.nii: .*{message}"):
        float32_voxels(values, "scan.nii")


def test_values_float32_holds_pass_unchanged_or_within_its_precision():
    exact = np.array([-FLOAT32_EXACT, -1024, 0, 3071, FLOAT32_EXACT], np.int32)
    assert np.array_equal(float32_voxels(exact, "x").astype(np.int64), exact)
    fractional = np.array([0.25, 3.0e7 + 0.5], np.float64)  # not integer data: rounded, kept
    voxels = float32_voxels(fractional, "x")
    assert voxels.dtype == np.float32 and voxels.flags.c_contiguous
    np.testing.assert_allclose(voxels, fractional, rtol=1e-7)


def test_a_dicom_series_of_32_bit_integers_beyond_float32_is_refused_not_rounded(tmp_path):
    # before: the stored values went to float32 directly, 2^24 + 1 read back as 2^24
    paths = write_series(tmp_path / "series", np.zeros((2, 8, 8), np.uint16))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 1
        ds.RescaleIntercept = 0
        plane = np.zeros((8, 8), np.int32)
        plane[0, 0] = BEYOND
        ds.PixelData = plane.tobytes()
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match=r"IM\d+ \(.*\): integers beyond \+-2\^24"):
        read_dicom_series(tmp_path / "series")


def test_a_nifti_of_integers_beyond_float32_is_refused(tmp_path):
    data = np.zeros((4, 8, 8), np.int32)
    data[0, 0, 0] = BEYOND
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "scan.nii")
    with pytest.raises(InputError, match=r"scan\.nii: integers beyond \+-2\^24"):
        read_nifti(tmp_path / "scan.nii")
