"""Bad inputs end to end through `volinr`, as a user meets them: exit status 2, an error message
naming the offending file and the problem, and nothing left in the output folder (not even a
temporary file).

The readers' own checks are in test_volumes.py, test_io_and_sources.py and test_container.py;
this module checks what reaches the command line. The DICOM series are written with pydicom by
test_volumes.write_series, so the reader is not tested against volinr's own writer.
"""

import json
import logging
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import HTJ2KLossless, generate_uid

from conftest import ROOT, SNAKEMAKE, workflow_env
from test_volumes import write_series
from volinr.checkpoints import save_checkpoint
from volinr.cli import main
from volinr.io import save_array
from volinr.models.siren import Siren
from volinr.models.srdensenet import SRDenseNet
from volinr.siren_container import encode_container
from volinr.siren_grid import WEIGHTS_FORMAT
from volinr.super_resolution import SR_FORMAT

# 8 slices of 8 x 8: the smallest series a x4 downsampling accepts (round(8 / 4) = 2).
RAW = (np.arange(8 * 8 * 8).reshape(8, 8, 8) % 251 + 900).astype(np.uint16)
NON_IMAGE_CLASSES = {
    "SEG": "1.2.840.10008.5.1.4.1.1.66.4",
    "RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3",
    "SR": "1.2.840.10008.5.1.4.1.1.88.22",
}


def volinr(caplog, *args) -> tuple[int, str]:
    """Exit status and the ERROR lines of one `volinr` command, run in this process."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main([str(a) for a in args])
    return code, "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def assert_refused(outcome, out_dir, *expected) -> None:
    code, message = outcome
    assert code == 2, message
    for text in expected:
        assert str(text) in message, f"{text!r} not in {message!r}"
    assert not out_dir.exists() or sorted(out_dir.iterdir()) == [], "output left behind"


def prepare_volume(caplog, out_dir, **spec):
    return volinr(
        caplog,
        "prepare-volume",
        "--spec",
        json.dumps(spec),
        "--volume-out",
        out_dir / "volume.npy",
        "--out",
        out_dir / "slab.npy",
    )


def rewrite(path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def non_image(template, path, modality, new_series=False) -> None:
    """``template``'s header as an object without pixel data: a segmentation, an RT structure
    set, a structured report."""
    ds = pydicom.dcmread(template, stop_before_pixels=True)
    ds.Modality = modality
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = NON_IMAGE_CLASSES[modality]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if new_series:
        ds.SeriesInstanceUID = generate_uid()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# --- DICOM series ---------------------------------------------------------------------------
# Each damage takes the series folder and its files in slice order, and returns the texts the
# error must hold: the offending file and a word for the problem.


def truncated_in_the_header(folder, paths):
    data = paths[3].read_bytes()
    cut = data.index(b"3.2\\3.2") + 5  # inside PixelSpacing: reads as [3.2, 3.0]
    paths[3].write_bytes(data[:cut])
    return paths[3], "truncated"


def truncated_in_the_pixels(folder, paths):
    paths[3].write_bytes(paths[3].read_bytes()[:-20])
    return paths[3], "pixel data"


def a_text_file(folder, paths):
    (folder / "notes.txt").write_text("scanned on the old machine\n" * 10)
    return folder / "notes.txt", "not a DICOM file"


def two_patients(folder, paths):
    rewrite(paths[5], PatientID="SOMEONE_ELSE")
    return paths[5], "patients", "SOMEONE_ELSE"


def two_orientations(folder, paths):
    rewrite(paths[5], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])  # a coronal slice
    return paths[5], "orientations"


def a_missing_slice(folder, paths):
    paths[4].unlink()
    return paths[3], paths[5], "gap", "1 slice(s) missing"


def a_duplicated_slice(folder, paths):
    copy = folder / "copy_of_slice_3"
    ds = pydicom.dcmread(paths[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(copy, enforce_file_format=True)
    return paths[3], copy, "duplicate slice"


def two_pixel_spacings(folder, paths):
    rewrite(paths[5], PixelSpacing=[3.0, 3.0])
    return paths[5], "pixel spacings"


def a_segmentation_in_the_series(folder, paths):
    non_image(paths[0], folder / "labels.dcm", "SEG")
    return folder / "labels.dcm", "SEG object, not an image"


def undecodable_pixels(folder, paths):
    decoder = get_decoder(HTJ2KLossless)
    if decoder.available_plugins:
        pytest.skip(f"a plugin decodes {HTJ2KLossless.name} here: {decoder.available_plugins}")
    ds = pydicom.dcmread(paths[2])
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 an HTJ2K codestream"])
    ds["PixelData"].VR = "OB"
    ds.save_as(paths[2], enforce_file_format=True)
    # pydicom decodes HTJ2K only with pylibjpeg-openjpeg: the message must say so.
    return paths[2], "pylibjpeg-openjpeg", "High-Throughput JPEG 2000"


@pytest.mark.parametrize(
    "damage",
    [
        truncated_in_the_header,
        truncated_in_the_pixels,
        a_text_file,
        two_patients,
        two_orientations,
        a_missing_slice,
        a_duplicated_slice,
        two_pixel_spacings,
        a_segmentation_in_the_series,
        undecodable_pixels,
    ],
)
def test_a_damaged_series_is_refused(tmp_path, caplog, damage):
    folder = tmp_path / "series"
    expected = damage(folder, write_series(folder, RAW))
    out = tmp_path / "out"
    assert_refused(
        prepare_volume(caplog, out, kind="dicom_series", path=str(folder)), out, *expected
    )


def test_the_undamaged_series_is_read(tmp_path, caplog):
    """The damages above are the only reason for the refusals."""
    folder = tmp_path / "series"
    write_series(folder, RAW)
    out = tmp_path / "out"
    code, message = prepare_volume(caplog, out, kind="dicom_series", path=str(folder))
    assert code == 0, message
    assert sorted(p.name for p in out.iterdir()) == [
        "slab.json",
        "slab.npy",
        "volume.json",
        "volume.npy",
    ]


@pytest.mark.parametrize("modality", ["SEG", "RTSTRUCT", "SR"])
def test_a_folder_of_a_non_image_object_is_refused(tmp_path, caplog, modality):
    template = write_series(tmp_path / "series", RAW[:2])[0]
    path = tmp_path / "objects" / "object.dcm"
    non_image(template, path, modality, new_series=True)
    out = tmp_path / "out"
    outcome = prepare_volume(caplog, out, kind="dicom_series", path=str(path.parent))
    assert_refused(outcome, out, path, f"{modality} object, not an image")


def test_a_single_file_without_pixels_is_refused_by_prepare(tmp_path, caplog):
    out = tmp_path / "out"
    outcome = volinr(caplog, "prepare", "--source", "pydicom:rtplan.dcm", "--out", out / "a.npy")
    assert_refused(outcome, out, "rtplan.dcm", "without pixel data")


@pytest.mark.parametrize("kind", ["dicom_series", "nifti"])
def test_an_empty_folder_is_refused(tmp_path, caplog, kind):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    outcome = prepare_volume(caplog, out, kind=kind, path=str(empty))
    problem = "no files found" if kind == "dicom_series" else "found none"
    assert_refused(outcome, out, empty, problem)


# --- NIfTI and arrays -----------------------------------------------------------------------


def test_a_nifti_with_nans_is_refused(tmp_path, caplog):
    data = np.zeros((8, 8, 8), np.float32)
    data[2, 3, 4] = np.nan
    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    out = tmp_path / "out"
    outcome = prepare_volume(caplog, out, kind="nifti", path=str(path))
    assert_refused(outcome, out, path, "1 NaN")


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 2), (64, 5)], ids=str)
def test_an_array_too_small_for_the_factor_is_refused_by_downsample(tmp_path, caplog, shape):
    path = tmp_path / "small.npy"
    save_array(path, np.ones(shape, np.float32), {})
    out = tmp_path / "out"
    outcome = volinr(caplog, "downsample", "--input", path, "--factor", 4, "--out", out / "lr.npy")
    assert_refused(outcome, out, path, "too small for a x4 downsampling")


def test_a_series_too_small_for_the_factor_is_refused_by_prepare_volume(tmp_path, caplog):
    folder = tmp_path / "series"
    write_series(folder, RAW[:3])
    out = tmp_path / "out"
    outcome = prepare_volume(caplog, out, kind="dicom_series", path=str(folder))
    assert_refused(outcome, out, folder, "too small for a x4 downsampling")


def pickled_array(path) -> None:
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize(
    "write, problem",
    [
        (lambda path: path.write_text("not an array\n"), "not a .npy array (no NUMPY magic"),
        (pickled_array, "Object arrays cannot be loaded"),
        (lambda path: None, "file not found"),
    ],
    ids=["text", "pickled", "missing"],
)
def test_an_unreadable_array_is_refused(tmp_path, caplog, write, problem):
    path = tmp_path / "input.npy"
    write(path)
    out = tmp_path / "out"
    outcome = volinr(caplog, "downsample", "--input", path, "--out", out / "lr.npy")
    assert_refused(outcome, out, path, problem)


# --- model files ----------------------------------------------------------------------------


def siren_weights(path, model: Siren, **config_changes) -> None:
    """A SIREN weights file as `volinr fit` writes it, its config changed afterwards."""
    save_checkpoint(
        path, WEIGHTS_FORMAT, model, value_range=[0.0, 1.0], grid_shape=[8, 8], grid_extent=[8, 8]
    )
    payload = torch.load(path, weights_only=True)
    payload["config"].update(config_changes)
    torch.save(payload, path)


@pytest.mark.parametrize(
    "changes, problem",
    [
        (
            {"hidden_features": 32},
            "net.0.linear.weight has shape [16, 3], the architecture's is [32, 3]",
        ),
        ({"hidden_features": 10**6, "sine_layers": 9}, "net.2.linear.weight is missing"),
        ({"sine_layers": 10**9}, "the architecture has more than 28 tensors"),  # not built
        ({"sine_layers": 0}, "a SIREN needs at least one sine layer"),
        ({"activation": "relu"}, "unexpected keyword argument 'activation'"),
    ],
    ids=["wider", "huge", "deep", "no-layers", "unknown-key"],
)
def test_siren_weights_that_do_not_match_their_architecture(tmp_path, caplog, changes, problem):
    path = tmp_path / "weights.pt"
    siren_weights(path, Siren(3, 16, 2), **changes)
    out = tmp_path / "out"
    outcome = volinr(caplog, "decode", "--weights", path, "--out", out / "decoded.npy")
    assert_refused(outcome, out, path, "do not match the stored architecture", problem)


@pytest.mark.parametrize(
    "model, edit, problem",
    [
        (Siren(3, 16, 2), lambda p: p.pop("grid_shape"), "bad or missing grid_shape None"),
        (Siren(3, 16, 2), lambda p: p.update(grid_shape=[8, -8]), "bad or missing grid_shape"),
        (Siren(3, 16, 2), lambda p: p.update(grid_extent=[8]), "bad or missing grid_extent"),
        (Siren(3, 16, 2), lambda p: p.update(value_range=[0, "x"]), "bad or missing value_range"),
        (Siren(2, 16, 2), lambda p: None, "a SIREN of 2 inputs and 1 outputs"),
    ],
    ids=["no-grid", "negative-grid", "short-extent", "bad-range", "two-inputs"],
)
def test_siren_weights_without_what_decoding_needs(tmp_path, caplog, model, edit, problem):
    path = tmp_path / "weights.pt"
    siren_weights(path, model)
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    out = tmp_path / "out"
    outcome = volinr(caplog, "decode", "--weights", path, "--out", out / "decoded.npy")
    assert_refused(outcome, out, path, problem)


def upsample_with_sr(caplog, lr, model, reference, out) -> tuple[int, str]:
    return volinr(caplog, "upsample", "--input", lr, "--method", "sr", "--sr-model", model,
                  "--reference", reference, "--out", out / "sr.npy")  # fmt: skip


def test_an_sr_checkpoint_that_does_not_match_its_architecture(tmp_path, caplog):
    model = SRDenseNet(blocks=1, layers_per_block=2, growth=4, bottleneck=8)
    path = tmp_path / "sr.pt"
    save_checkpoint(path, SR_FORMAT, model, training={}, curve=[])
    payload = torch.load(path, weights_only=True)
    payload["config"]["blocks"] = 2  # the weights are of one block
    torch.save(payload, path)
    save_array(tmp_path / "lr.npy", np.zeros((8, 8), np.float32), {})
    save_array(tmp_path / "hr.npy", np.zeros((32, 32), np.float32), {})
    out = tmp_path / "out"
    outcome = upsample_with_sr(caplog, tmp_path / "lr.npy", path, tmp_path / "hr.npy", out)
    assert_refused(outcome, out, path, "do not match the stored architecture")


def test_a_siren_file_given_as_the_sr_model_is_refused(tmp_path, caplog):
    path = tmp_path / "weights.pt"
    siren_weights(path, Siren(3, 16, 2))
    save_array(tmp_path / "lr.npy", np.zeros((8, 8), np.float32), {})
    out = tmp_path / "out"
    outcome = upsample_with_sr(caplog, tmp_path / "lr.npy", path, tmp_path / "lr.npy", out)
    assert_refused(outcome, out, path, f"not a {SR_FORMAT} file")


def test_a_corrupted_container_is_refused_by_decompress(tmp_path, caplog):
    model = Siren(3, 16, 2)
    data = bytearray(
        encode_container(model.state_dict(), model.config, [8, 8], [8.0, 8.0], [0.0, 1.0])
    )
    data[len(data) // 2] ^= 0x01
    path = tmp_path / "image.volinr"
    path.write_bytes(data)
    out = tmp_path / "out"
    outcome = volinr(caplog, "decompress", "--container", path, "--out", out / "image.npy")
    assert_refused(outcome, out, path, "checksum mismatch")


# --- configuration --------------------------------------------------------------------------
# test_config.py checks the schema itself (validate); here the workflow, as a user starts it.


@pytest.mark.parametrize(
    "config, expected",
    [
        (
            "dataset:\n  kind: phantom\n  gap_polcy: interpolate\n",
            ["Additional properties are not allowed ('gap_polcy' was unexpected)"],
        ),
        ("threads: 0\n", ["0 is less than the minimum of 1", "On instance['threads']"]),
        (
            "dataset:\n  kind: phantom\n  phantom:\n    spacing_mm: [1, 1, -2]\n",
            ["On instance['dataset']['phantom']['spacing_mm'][2]"],
        ),
    ],
    ids=["unknown-key", "out-of-range", "negative-spacing"],
)
def test_a_bad_config_stops_the_workflow_naming_the_key(tmp_path, config, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(config)
    run = subprocess.run(
        SNAKEMAKE + ["--directory", tmp_path, "-n", "--cores", "1", "--configfile", bad],
        capture_output=True,
        text=True,
        env=workflow_env(),
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0 and "Error validating config file" in output
    for text in expected:
        assert text in output
    assert not (tmp_path / "results").exists()


def test_the_command_line_reports_without_a_traceback(tmp_path):
    """One refusal through `python -m volinr` itself: the message, no traceback, status 2."""
    folder = tmp_path / "series"
    paths = write_series(folder, RAW)
    rewrite(paths[5], PixelSpacing=[3.0, 3.0])
    out = tmp_path / "out"
    spec = json.dumps({"kind": "dicom_series", "path": str(folder)})
    run = subprocess.run(
        [sys.executable, "-m", "volinr", "prepare-volume", "--spec", spec]
        + ["--volume-out", str(out / "volume.npy")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert str(paths[5]) in run.stderr and "pixel spacings" in run.stderr
    assert not out.exists()


@pytest.mark.parametrize(("make", "problem"), [("empty", "empty"), ("folder", "not a file")])
def test_evaluate_refuses_a_container_that_is_empty_or_a_folder(
    tmp_path, monkeypatch, make, problem
):
    """Once a ZeroDivisionError (empty) or a folder's size counted as the file's bytes."""
    from pathlib import Path

    from volinr.cli import main
    from volinr.io import save_array

    monkeypatch.chdir(tmp_path)
    save_array("o.npy", np.arange(100, dtype=np.int16).reshape(10, 10), {"units": "HU"})
    np.save("r.npy", np.arange(100, dtype=np.float32).reshape(10, 10))
    Path("c.vnc").mkdir() if make == "folder" else Path("c.vnc").write_bytes(b"")
    argv = ["evaluate", "--reference", "o.npy", "--reconstruction", "r.npy", "--label",
            '{"method": "x"}', "--container", "c.vnc", "--out", "out.json"]  # fmt: skip
    assert main(argv) == 2
    assert not Path("out.json").exists()
