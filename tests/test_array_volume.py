"""Dataset kind ``array``: a .npy volume and its JSON sidecar (the shipped headsq CT, and the
files it must refuse, naming them, before any output is written)."""

import json
import shutil

import numpy as np
import pydicom
import pytest

from conftest import ROOT
from volinr.cli import main
from volinr.data.array_file import read_array_volume
from volinr.data.export import write_dicom_series
from volinr.data.volume import read_volume
from volinr.errors import InputError
from volinr.io import load_array, sha256_file

HEADSQ = ROOT / "data/headsq"


def test_headsq_reads_as_raw_scanner_values_with_its_spacing_and_attribution():
    volume = read_volume({"kind": "array", "path": str(HEADSQ / "headsq.npy")})
    raw = np.load(HEADSQ / "headsq.npy")
    assert volume.voxels.dtype == np.float32 and volume.shape == (93, 64, 64)
    np.testing.assert_array_equal(volume.voxels, raw.astype(np.float32))
    meta = volume.meta
    assert meta["spacing_mm"] == [1.5, 3.2, 3.2]
    assert meta["units_are_hu"] is False and "not HU" in meta["units"]
    assert meta["modality"] == "CT" and meta["kind"] == "array"
    assert meta["file_sha256"] == meta["sidecar"]["sha256_npy"]
    assert meta["sidecar"]["repo"] == "pyvista/vtk-data" and "Apache" in meta["sidecar"]["license"]
    assert len(meta["slice_positions_mm"]) == 93


def _write(folder, array, **sidecar_changes):
    """An array and a sidecar that is right for it, then ``sidecar_changes`` applied (a value
    of None removes the key)."""
    path = folder / "volume.npy"
    np.save(path, array)
    sidecar = {
        "sha256_npy": sha256_file(path),
        "spacing_zyx_mm": [2.0, 1.0, 1.0],
        "units": "HU",
        "modality": "CT",
    }
    for key, value in sidecar_changes.items():
        if value is None:
            sidecar.pop(key)
        else:
            sidecar[key] = value
    (folder / "volume.json").write_text(json.dumps(sidecar))
    return path


def _cube(dtype=np.int16):
    return np.arange(6 * 8 * 8).reshape(6, 8, 8).astype(dtype)


def test_a_good_array_reads_and_a_float_one_too(tmp_path):
    volume = read_array_volume(_write(tmp_path, _cube()))
    assert volume.meta["units_are_hu"] is True and volume.meta["spacing_mm"] == [2.0, 1.0, 1.0]
    volume = read_array_volume(_write(tmp_path, _cube(np.float64) / 3))
    np.testing.assert_allclose(volume.voxels, _cube(np.float64) / 3, rtol=1e-6)


def _nan_cube():
    cube = _cube(np.float32)
    cube[2, 3, 4] = np.nan
    return cube


def _inf_cube():
    cube = _cube(np.float64)
    cube[0, 0, 0] = 1e300  # finite in float64, infinite in float32
    return cube


REFUSALS = {
    "wrong sha256": (_cube, {"sha256_npy": "0" * 64}, "does not match its sidecar"),
    "2-D array": (lambda: _cube()[0], {}, "expected a 3-D array"),
    "NaN": (_nan_cube, {}, "1 NaN"),
    "beyond float32": (_inf_cube, {}, "1 out-of-float32-range"),
    "boolean": (lambda: _cube() > 3, {}, "dtype bool"),
    "complex": (lambda: _cube(np.complex64), {}, "dtype complex64"),
    "huge integers": (lambda: _cube(np.int64) << 30, {}, r"beyond \+-2\^24"),
    "no spacing": (_cube, {"spacing_zyx_mm": None}, "missing spacing_zyx_mm"),
    "zero spacing": (_cube, {"spacing_zyx_mm": [1.0, 0, 1.0]}, "three positive finite sizes"),
    "two spacings": (_cube, {"spacing_zyx_mm": [1.0, 1.0]}, "three positive finite sizes"),
    "no units": (_cube, {"units": None}, "missing units"),
    "empty units": (_cube, {"units": " "}, "units must be a non-empty string"),
    "other shape": (_cube, {"shape_zyx": [6, 8, 9]}, "its sidecar"),
}


@pytest.mark.parametrize("problem", REFUSALS)
def test_a_bad_array_or_sidecar_is_refused_naming_the_file(tmp_path, problem):
    make, changes, message = REFUSALS[problem]
    path = _write(tmp_path, make(), **changes)
    with pytest.raises(InputError, match=message) as caught:
        read_array_volume(path)
    assert "volume.npy" in str(caught.value) or "volume.json" in str(caught.value)


def test_a_missing_sidecar_or_array_is_refused(tmp_path):
    path = _write(tmp_path, _cube())
    (tmp_path / "volume.json").unlink()
    with pytest.raises(InputError, match="sidecar .*volume.json is missing"):
        read_array_volume(path)
    with pytest.raises(InputError, match="no_such.npy: file not found"):
        read_array_volume(tmp_path / "no_such.npy")


def test_a_pickled_array_or_an_archive_is_refused_not_loaded(tmp_path):
    path = _write(tmp_path, _cube())
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    sidecar = json.loads((tmp_path / "volume.json").read_text())
    (tmp_path / "volume.json").write_text(json.dumps(sidecar | {"sha256_npy": sha256_file(path)}))
    with pytest.raises(InputError, match="not a readable .npy array"):
        read_array_volume(path)
    with open(path, "wb") as handle:
        np.savez(handle, a=_cube())
    (tmp_path / "volume.json").write_text(json.dumps(sidecar | {"sha256_npy": sha256_file(path)}))
    with pytest.raises(InputError, match="not a single .npy array"):
        read_array_volume(path)


@pytest.mark.parametrize("problem", ["wrong sha256", "2-D array", "NaN", "missing sidecar"])
def test_prepare_volume_exits_2_with_no_output_on_a_bad_array(tmp_path, caplog, problem):
    make, changes, _ = REFUSALS.get(problem, (_cube, {}, ""))
    path = _write(tmp_path, make(), **changes)
    if problem == "missing sidecar":
        (tmp_path / "volume.json").unlink()
    out = tmp_path / "out"
    spec = json.dumps({"kind": "array", "path": str(path)})
    code = main(
        ["prepare-volume", "--spec", spec, "--volume-out", str(out / "volume.npy")]
        + ["--out", str(out / "eval.npy")]
    )
    assert code == 2
    assert str(path) in caplog.text
    assert not out.exists() or not any(out.iterdir())


def test_prepare_volume_records_headsq_as_not_hu_with_its_attribution(tmp_path):
    spec = json.dumps({"kind": "array", "path": str(HEADSQ / "headsq.npy")})
    out = tmp_path / "eval.npy"
    assert main(["prepare-volume", "--spec", spec, "--volume-out", str(tmp_path / "v.npy")]
                + ["--out", str(out)]) == 0  # fmt: skip
    voxels, meta = load_array(out)
    assert voxels.shape == (93, 64, 64)
    assert meta["units"] == "raw scanner values (not HU-calibrated)"
    assert meta["units_are_hu"] is False
    assert "pyvista/vtk-data" in meta["sidecar"]["attribution"]


def test_a_dicom_export_of_raw_values_is_not_labelled_hu(tmp_path):
    volume = read_volume({"kind": "array", "path": str(HEADSQ / "headsq.npy"), "slices": [40, 43]})
    files = write_dicom_series(tmp_path / "raw", volume.voxels, volume.meta, "headsq raw")
    assert pydicom.dcmread(files[0]).RescaleType == "US"
    hu = dict(volume.meta, units="HU")
    files = write_dicom_series(tmp_path / "hu", volume.voxels, hu, "headsq as if HU")
    assert pydicom.dcmread(files[0]).RescaleType == "HU"


def test_the_shipped_sidecar_is_what_the_reader_checks(tmp_path):
    """A copy of headsq with one changed voxel is refused: its sidecar pins the file."""
    shutil.copy(HEADSQ / "headsq.json", tmp_path / "headsq.json")
    raw = np.load(HEADSQ / "headsq.npy")
    raw[0, 0, 0] += 1
    np.save(tmp_path / "headsq.npy", raw)
    with pytest.raises(InputError, match="does not match its sidecar"):
        read_array_volume(tmp_path / "headsq.npy")
