"""One geometry check (``volinr.data.geometry.check_geometry``) wherever a geometry enters or
is written: a kind-array sidecar, a NIfTI affine, a phantom spec, downsample's input and output
spacing, export's --geometry and decode's --like. A NaN, an absurd voxel size or direction
cosines that are not an orientation exit 2 naming the file, before anything is written (they
once exited 3 from the JSON writer, passed into a NIfTI with the wrong voxel size, or stopped
nibabel with a traceback)."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from volinr.cli import main
from volinr.data import geometry as geo
from volinr.errors import InputError
from volinr.io import save_array, sha256_file


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _folders(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_dir())


def refused(work: Path, caplog, capsys, argv: list[str], *fragments: str) -> str:
    """Run ``argv``: exit 2, no traceback, every fragment in the message, nothing written."""
    before, folders = _snapshot(work), _folders(work)
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    message = "\n".join([*errors, capsys.readouterr().err])
    assert code == 2, message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _snapshot(work) == before, "an output was written or an input changed"
    assert _folders(work) == folders, "a folder was left behind"
    return message


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _array_kind(folder: Path, spacing=(2.0, 1.0, 1.0), **extra) -> str:
    np.save(folder / "scan.npy", np.arange(4 * 16 * 16, dtype=np.int16).reshape(4, 16, 16))
    sidecar = {"sha256_npy": sha256_file(folder / "scan.npy"), "spacing_zyx_mm": list(spacing),
               "units": "HU", **extra}  # fmt: skip
    (folder / "scan.json").write_text(json.dumps(sidecar))
    return json.dumps({"kind": "array", "path": "scan.npy"})


PREPARE = ["prepare-volume", "--factor", "2", "--volume-out", "v.npy", "--spec"]


def test_a_kind_array_sidecar_with_an_absurd_spacing_is_refused_naming_it(work, caplog, capsys):
    """EC3: [1e308, 1, 1] once made NaN slice positions and exited 3 from the JSON writer."""
    spec = _array_kind(work, spacing=(1e308, 1.0, 1.0))
    refused(work, caplog, capsys, [*PREPARE, spec], "scan.json", "spacing_zyx_mm")


def test_a_kind_array_sidecar_whose_shape_is_not_a_list_is_named(work, caplog, capsys):
    """N9: "shape_zyx": 5 once said "--spec {...}: 'int' object is not iterable"."""
    spec = _array_kind(work, shape_zyx=5)
    refused(work, caplog, capsys, [*PREPARE, spec], "scan.json", "shape_zyx")


def _nifti(path: Path, srow_x=None, affine=None) -> None:
    import nibabel as nib

    data = np.arange(8 * 8 * 8, dtype=np.int16).reshape(8, 8, 8)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    if srow_x is not None:  # written into the header, past nibabel's own checks
        raw = bytearray(path.read_bytes())
        struct.pack_into("<h", raw, 252, 0)  # qform_code 0
        struct.pack_into("<h", raw, 254, 1)  # sform_code 1
        struct.pack_into("<4f", raw, 280, *srow_x)
        path.write_bytes(bytes(raw))


def test_a_nifti_with_a_nan_affine_is_refused_naming_it(work, caplog, capsys):
    """EC2: NaN in srow_x once exited 3 ("refusing to write v.json: /spacing_mm/2 is NaN")."""
    _nifti(work / "nanaffine.nii", srow_x=(float("nan"), 0, 0, 0))
    spec = json.dumps({"kind": "nifti", "path": "nanaffine.nii"})
    refused(work, caplog, capsys, [*PREPARE, spec], "nanaffine.nii", "affine")


def test_a_nifti_whose_rows_are_not_perpendicular_to_its_columns_is_refused(work, caplog, capsys):
    affine = np.eye(4)
    affine[:3, 1] = [0.5, 0.8660254, 0]  # columns at 60 degrees to the rows
    _nifti(work / "skew.nii", affine=affine)
    spec = json.dumps({"kind": "nifti", "path": "skew.nii"})
    refused(work, caplog, capsys, [*PREPARE, spec], "skew.nii", "not orthogonal")


def test_a_phantom_with_an_absurd_spacing_is_refused_naming_the_spec(work, caplog, capsys):
    """N5: a valid-JSON spacing of 1e308 once exited 3."""
    spec = json.dumps({"kind": "phantom", "phantom": {"shape": [8, 16, 16],
                                                      "spacing_mm": [1e308, 1, 1]}})  # fmt: skip
    refused(work, caplog, capsys, ["prepare-volume", "--spec", spec, "--volume-out", "v.npy"],
            "--spec", "spacing_mm")  # fmt: skip


def test_downsample_refuses_an_absurd_spacing_in_and_out(work, caplog, capsys):
    """EC3b: an input spacing of [1e308, 1e308] once wrote lr.json with an infinite spacing."""
    image = np.arange(32 * 32, dtype=np.int16).reshape(32, 32)
    save_array("hr.npy", image, {"units": "HU", "spacing_mm": [1e308, 1e308]})
    argv = ["downsample", "--input", "hr.npy", "--factor", "4", "--out", "lr.npy"]
    refused(work, caplog, capsys, argv, "hr.json", "spacing_mm")
    # a spacing that is fine in, but not x4 out
    save_array("hr.npy", image, {"units": "HU", "spacing_mm": [5000.0, 5000.0]})
    refused(work, caplog, capsys, argv, "hr.npy downsampled by 4", "spacing_mm")


def _export(work: Path, geometry: str) -> list[str]:
    save_array("rec.npy", np.zeros((4, 8, 8), np.int16), {"units": "HU"})
    (work / "geom.json").write_text(geometry)
    return ["export", "--reconstruction", "rec.npy", "--geometry", "geom.json",
            "--description", "x", "--nifti", "out/v.nii", "--dicom", "out/dcm"]  # fmt: skip


@pytest.mark.parametrize(
    ("geometry", "problem"),
    [
        # N1: once exported with 1 mm voxels in the NIfTI for 0.5 mm ones
        ('{"shape": [4, 8, 8], "spacing_mm": [1, 0.5, 0.5], "orientation": [2, 0, 0, 0, 2, 0]}',
         "orientation"),
        # N2: once a nibabel traceback, and an empty out/ left behind
        ('{"shape": [4, 8, 8], "spacing_mm": [NaN, 1, 1]}', "spacing_mm"),
        ('{"shape": [4, 8, 8], "spacing_mm": [1, 1, 1], "slice_positions_mm": [[0, 0, 0]]}',
         "slice_positions_mm"),
        ('{"shape": [4, 8, 8], "spacing_mm": [1, 1, 1], "origin_mm": [0, Infinity, 0]}',
         "origin_mm"),
        ('{"shape": [4, 8, 8]}', "spacing_mm"),
    ],
)  # fmt: skip
def test_export_refuses_a_geometry_that_is_not_one(work, caplog, capsys, geometry, problem):
    argv = _export(work, geometry)
    refused(work, caplog, capsys, argv, "geom.json", problem)
    assert not (work / "out").exists()


SIREN_WEIGHTS = {"value_range": [-300.0, 300.0], "grid_shape": [8, 8], "grid_extent": [8.0, 8.0]}


@pytest.mark.parametrize(
    ("like", "problem"),
    [
        ('{"shape": [8, 8], "spacing_mm": [NaN, 1.0]}', "spacing_mm"),  # N14: once exit 3
        ('{"shape": [8, 8], "spacing_mm": [1.0, 1.0, 1.0]}', "spacing_mm"),
        ('{"shape": [8, 8], "spacing_mm": [1, 1], "orientation": [1, 0, 0, 1, 0, 0]}',
         "orientation"),
    ],
)  # fmt: skip
def test_decode_like_refuses_a_geometry_that_is_not_one(work, caplog, capsys, like, problem):
    from volinr.checkpoints import save_checkpoint
    from volinr.models.siren import Siren
    from volinr.siren_grid import WEIGHTS_FORMAT

    save_checkpoint(work / "w.pt", WEIGHTS_FORMAT, Siren(3, 8, 2), **SIREN_WEIGHTS)
    (work / "like.json").write_text(like)
    argv = ["decode", "--weights", "w.pt", "--like", "like.json", "--out", "d.npy",
            "--device", "cpu", "--threads", "1"]  # fmt: skip
    refused(work, caplog, capsys, argv, "like.json", problem)


GOOD = {
    "spacing_mm": [2.5, 0.5, 0.5],
    "orientation": [1, 0, 0, 0, 0.9999999, 0.0001],
    "origin_mm": [-100.0, -100.0, 20.0],
    "slice_positions_mm": [[-100.0, -100.0, 20.0], [-100.0, -100.0, 22.5]],
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"spacing_mm": [2.5, 0.5, 0]}, "positive"),
        ({"spacing_mm": [2.5, 0.5, 2e4]}, "to 10000 mm"),
        ({"spacing_mm": [2.5, 0.5, 5e-324]}, "from 1e-06"),  # 0 in a NIfTI header's float32
        ({"spacing_mm": [2.5, 0.5, float("inf")]}, "finite"),
        ({"spacing_mm": [2.5, 0.5]}, "expected 3 sizes"),
        ({"spacing_mm": [2.5, 0.5, "1"]}, "expected 3 sizes"),
        ({"spacing_mm": [2.5, 0.5, True]}, "expected 3 sizes"),
        ({"spacing_mm": 1.0}, "expected 3 sizes"),
        ({"orientation": [1, 0, 0, 0, 1]}, "six"),
        ({"orientation": [1, 0, 0, 0, 1, float("nan")]}, "six finite"),
        ({"orientation": [1, 0, 0, 0.1, 1, 0]}, "lengths"),
        ({"orientation": [1, 0, 0, 0.5, 0.8660254, 0]}, "not orthogonal"),
        ({"origin_mm": [0, 0]}, "origin_mm"),
        ({"orientation": None}, "orientation is null"),  # not the reader's default
        ({"slice_positions_mm": [[0, 0, 0]]}, "1 positions for 2 slices"),
        ({"slice_positions_mm": [[0, 0, 0], [0, 0, float("nan")]]}, "slice_positions_mm[1]"),
        ({"slice_positions_mm": [[0, 0, 0], [0, 0, 1e300]]}, "within"),
        ({"spacing_mm": None}, "no spacing_mm"),
    ],
)
def test_geometry_problem_names_what_is_wrong(change, problem):
    assert geo.geometry_problem(GOOD, (2, 4, 4)) is None
    bad = {**GOOD, **change}
    found = geo.geometry_problem(bad, (2, 4, 4))
    assert found is not None and problem in found, found
    with pytest.raises(InputError, match=r"^sidecar\.json: geometry unusable"):
        geo.check_geometry("sidecar.json", bad, (2, 4, 4))


def test_a_two_d_image_needs_two_sizes_and_no_geometry_is_needed_where_none_is_required():
    assert geo.geometry_problem({"spacing_mm": [0.5, 0.5]}, (8, 8)) is None
    assert "expected 2 sizes" in geo.geometry_problem({"spacing_mm": [1, 0.5, 0.5]}, (8, 8))
    assert geo.geometry_problem({"units": "HU"}, (8, 8), required=()) is None
    assert geo.geometry_problem(np.eye(3), (8, 8)) is not None  # not a mapping


def test_the_writers_refuse_a_geometry_that_is_not_one(tmp_path):
    from volinr.data.export import write_dicom_series, write_nifti

    voxels = np.zeros((2, 4, 4), np.float32)
    meta = {"spacing_mm": [1.0, 1.0, 1.0], "orientation": [2, 0, 0, 0, 2, 0]}
    with pytest.raises(InputError, match="refusing to write .*v.nii: geometry unusable"):
        write_nifti(tmp_path / "v.nii", voxels, meta)
    with pytest.raises(InputError, match="refusing to write .*dcm: geometry unusable"):
        write_dicom_series(tmp_path / "dcm", voxels, meta, "x")
    assert list(tmp_path.iterdir()) == []
