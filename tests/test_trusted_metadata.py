"""Numbers that used to come out silently wrong, through `volinr` as a user meets them.

- DICOM rescale: a slope of 0 or one that cannot be right is refused; a CT without a rescale is
  read as stored, with a warning, and not labelled HU; enhanced objects are rescaled from their
  shared or per-frame functional groups; a series that mixes rescales is rescaled per slice.
- Integer images: ranges and errors never wrap in the array's dtype nor merge in float32, for
  every integer dtype an array may have.
- Metadata beside or inside a file: a sidecar that does not describe its array, a container
  header or a SIREN weights file that claims what cannot be decoded, are refused (exit 2) with
  the file and the field named, before anything is built.

The DICOM files are written here with pydicom, not with volinr's own writer.
"""

import csv
import json
import logging
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from test_bad_inputs import assert_refused, volinr
from test_container import frame, split
from volinr.checkpoints import save_checkpoint
from volinr.container import write_container
from volinr.io import save_array, sha256_array
from volinr.models.siren import Siren
from volinr.siren_container import encode_container
from volinr.siren_grid import WEIGHTS_FORMAT

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
STORED = (np.arange(16).reshape(4, 4) * 10 + 1000).astype(np.uint16)
FRAMES = np.stack([STORED, STORED + 1, STORED + 2])


# --- DICOM objects ---------------------------------------------------------------------------


def image(stored, modality="CT", sop_class=CTImageStorage, **tags) -> Dataset:
    """A single- or multi-frame image of ``stored`` values (uint16) with ``tags``."""
    stored = np.asarray(stored)
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = "P"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns = stored.shape[-2:]
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.5, 0.5]
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def transformation(slope, intercept, rescale_type="HU") -> Sequence:
    """A Pixel Value Transformation Sequence of one item."""
    item = Dataset()
    item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, intercept, rescale_type
    return Sequence([item])


def enhanced(stored, shared=None, per_frame=None, **tags) -> Dataset:
    """An enhanced CT: the rescale ``shared`` by every frame, or ``per_frame`` (one (slope,
    intercept) or None per frame), in the functional groups."""
    ds = image(stored, sop_class=ENHANCED_CT, **tags)
    group = Dataset()
    if shared is not None:
        group.PixelValueTransformationSequence = transformation(*shared)
    ds.SharedFunctionalGroupsSequence = Sequence([group])
    items = []
    for index in range(len(stored)):
        item = Dataset()
        if per_frame is not None and per_frame[index] is not None:
            item.PixelValueTransformationSequence = transformation(*per_frame[index])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    return ds


def prepare(caplog, tmp_path, ds, frame_index=0):
    """`volinr prepare` of ``ds``: (exit status, errors, warnings, array, sidecar)."""
    source = tmp_path / "in.dcm"
    ds.save_as(source, enforce_file_format=True)
    out = tmp_path / "out" / "image.npy"
    code, errors = volinr(
        caplog, "prepare", "--source", source, "--frame", frame_index, "--out", out
    )
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    if code != 0:
        return code, errors, warnings, None, None
    return code, errors, warnings, np.load(out), json.loads(out.with_suffix(".json").read_text())


@pytest.mark.parametrize(
    "tags, problem",
    [
        ({"RescaleSlope": 0, "RescaleIntercept": -1024}, "RescaleSlope 0"),
        ({"RescaleSlope": "1e-300", "RescaleIntercept": -1024}, "RescaleSlope 1e-300"),
        ({"RescaleSlope": 2}, "RescaleSlope without RescaleIntercept"),
        ({"RescaleIntercept": -1024}, "RescaleIntercept without RescaleSlope"),
    ],
    ids=["slope-zero", "slope-underflows-float32", "slope-only", "intercept-only"],
)
def test_a_rescale_that_cannot_be_right_is_refused(caplog, tmp_path, tags, problem):
    outcome = prepare(caplog, tmp_path, image(STORED, **tags))
    assert_refused(outcome[:2], tmp_path / "out", tmp_path / "in.dcm", problem)


def test_a_ct_without_rescale_is_read_as_stored_and_not_labelled_hu(caplog, tmp_path):
    code, _, warnings, pixels, meta = prepare(caplog, tmp_path, image(STORED))
    assert code == 0
    np.testing.assert_array_equal(pixels, STORED)
    assert "a CT without Rescale Slope/Intercept" in warnings and "in.dcm" in warnings
    assert meta["rescale"] == {
        "slope": 1.0,
        "intercept": 0.0,
        "source": "absent (assumed identity)",
        "type": None,
    }
    assert "HU" != meta["units"] and "not known to be HU" in meta["units"]


def test_mr_has_no_hu_and_no_rescale_is_no_warning(caplog, tmp_path):
    ds = image(STORED, modality="MR", sop_class=MRImageStorage)
    code, _, warnings, pixels, meta = prepare(caplog, tmp_path, ds)
    assert code == 0 and warnings == ""
    np.testing.assert_array_equal(pixels, STORED)
    assert meta["units"] == "scanner units" and meta["rescale"]["source"].startswith("absent")


def test_a_ct_whose_rescale_type_is_not_hu_says_so(caplog, tmp_path):
    ds = image(STORED, RescaleSlope=1, RescaleIntercept=0, RescaleType="US")
    code, _, _, _, meta = prepare(caplog, tmp_path, ds)
    assert code == 0 and meta["units"] == "US (RescaleType; not HU)"


def test_a_modality_lut_sequence_is_applied(caplog, tmp_path):
    item = Dataset()
    item.LUTDescriptor = [256, 1000, 16]  # entries, first stored value mapped, bits
    item.ModalityLUTType = "HU"
    item.add_new("LUTData", "US", [2 * i for i in range(256)])
    ds = image(STORED)
    ds.ModalityLUTSequence = Sequence([item])
    code, _, _, pixels, meta = prepare(caplog, tmp_path, ds)
    assert code == 0
    np.testing.assert_array_equal(pixels, 2 * (STORED.astype(np.float32) - 1000))
    assert meta["units"] == "HU" and meta["rescale"]["source"].startswith("Modality LUT Sequence")


def test_the_shared_functional_groups_rescale_an_enhanced_ct(caplog, tmp_path):
    # a top-level identity beside the functional groups' -1024 once gave +1024 HU everywhere
    ds = enhanced(FRAMES, shared=(1, -1024), RescaleSlope=1, RescaleIntercept=0)
    code, _, warnings, pixels, meta = prepare(caplog, tmp_path, ds, 2)
    assert code == 0 and "top-level" in warnings
    np.testing.assert_array_equal(pixels, FRAMES[2].astype(np.float32) - 1024)
    assert meta["units"] == "HU" and meta["rescale"]["intercept"] == -1024
    assert "Shared Functional Groups" in meta["rescale"]["source"]


def test_each_frame_of_an_enhanced_ct_gets_its_own_rescale(caplog, tmp_path):
    per_frame = [(1, -1024), (2, -2048), (0.5, 10)]
    ds = enhanced(FRAMES, per_frame=per_frame)
    for index, (slope, intercept) in enumerate(per_frame):
        code, _, _, pixels, meta = prepare(caplog, tmp_path, ds, index)
        assert code == 0
        np.testing.assert_array_equal(pixels, FRAMES[index] * np.float32(slope) + intercept)
        assert (meta["rescale"]["slope"], meta["rescale"]["intercept"]) == (slope, intercept)
        assert f"Per-Frame Functional Groups, frame {index}" in meta["rescale"]["source"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # the NaN written on purpose
@pytest.mark.parametrize(
    "per_frame, drop_item, problem",
    [
        ([(1, -1024), (0, -2048), (1, 0)], False, "RescaleSlope 0 (Per-Frame Functional Groups"),
        ([(1, -1024), (1, "NaN"), (1, 0)], False, "RescaleIntercept 'NaN' is not a finite"),
        ([(1, -1024), (2, -2048), (1, 0)], True, "has 2 items for 3 frames"),
    ],
    ids=["per-frame-slope-zero", "per-frame-intercept-nan", "per-frame-items-missing"],
)
def test_a_bad_per_frame_rescale_refuses_the_file(caplog, tmp_path, per_frame, drop_item, problem):
    ds = enhanced(FRAMES, per_frame=per_frame)
    if drop_item:
        del ds.PerFrameFunctionalGroupsSequence[2]
    # any frame: a file that cannot be right is not read in part
    outcome = prepare(caplog, tmp_path, ds, 0)
    assert_refused(outcome[:2], tmp_path / "out", tmp_path / "in.dcm", problem)


def test_pixel_spacing_of_three_values_is_refused_before_a_sidecar_is_written(caplog, tmp_path):
    ds = image(STORED, RescaleSlope=1, RescaleIntercept=-1024)
    ds.PixelSpacing = [0.5, 0.5, 0.5]
    outcome = prepare(caplog, tmp_path, ds)
    assert_refused(outcome[:2], tmp_path / "out", "in.dcm", "PixelSpacing")


def series(folder, rescales):
    """One single-frame file per (slope, intercept) or None (no rescale); slice k stores
    STORED + k. Returns the paths in slice order."""
    folder.mkdir()
    paths = []
    for index, rescale in enumerate(rescales):
        tags = {"RescaleSlope": rescale[0], "RescaleIntercept": rescale[1]} if rescale else {}
        ds = image(
            STORED + index,
            ImagePositionPatient=[0, 0, 2.5 * index],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            InstanceNumber=index + 1,
            FrameOfReferenceUID="1.2.3.5",
            **tags,
        )
        path = folder / f"IM{index}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def prepare_volume(caplog, folder, out_dir):
    spec = json.dumps({"kind": "dicom_series", "path": str(folder)})
    return volinr(
        caplog, "prepare-volume", "--spec", spec, "--factor", "2",
        "--volume-out", out_dir / "volume.npy",
    )  # fmt: skip


def test_a_series_that_mixes_rescales_is_rescaled_slice_by_slice(caplog, tmp_path):
    rescales = [(1, -1024), (1, -1024), (2, -2048), None, (1, -1024), (0.5, 7)]
    series(tmp_path / "series", rescales)
    code, message = prepare_volume(caplog, tmp_path / "series", tmp_path / "out")
    assert code == 0, message
    volume = np.load(tmp_path / "out/volume.npy")
    meta = json.loads((tmp_path / "out/volume.json").read_text())
    for index, rescale in enumerate(rescales):
        slope, intercept = rescale or (1, 0)
        expected = (STORED + index) * np.float32(slope) + np.float32(intercept)
        np.testing.assert_array_equal(volume[index], expected)
    assert [r["source"].split(",")[0] for r in meta["rescale"]] == [
        "absent (assumed identity)" if r is None else "RescaleSlope/RescaleIntercept"
        for r in rescales
    ]
    assert meta["units"] == (
        "mixed: HU (5 of 6); stored values (a CT without Rescale Slope/Intercept: not known to "
        "be HU) (1 of 6)"
    )
    assert "IM3: a CT without Rescale Slope/Intercept" in caplog.text


def test_one_slice_with_slope_zero_refuses_the_series(caplog, tmp_path):
    paths = series(tmp_path / "series", [(1, -1024), (1, -1024), (0, -1024), (1, -1024)])
    outcome = prepare_volume(caplog, tmp_path / "series", tmp_path / "out")
    assert_refused(outcome, tmp_path / "out", paths[2], "RescaleSlope 0")


# --- integer images through `volinr evaluate` ------------------------------------------------


def evaluate(caplog, tmp_path, reference, reconstruction, name="run", per_slice=False):
    """The metrics JSON (and per-slice rows) of `volinr evaluate`."""
    folder = tmp_path / name
    save_array(folder / "reference.npy", reference, {})
    save_array(folder / "reconstruction.npy", reconstruction, {})
    extra = ["--per-slice", folder / "slices.csv"] if per_slice else []
    code, message = volinr(
        caplog, "evaluate", "--reference", folder / "reference.npy",
        "--reconstruction", folder / "reconstruction.npy", "--label", '{"method": "test"}',
        "--out", folder / "metrics.json", *extra,
    )  # fmt: skip
    assert code == 0, message
    result = json.loads((folder / "metrics.json").read_text())
    if per_slice:
        with open(folder / "slices.csv") as handle:
            result["slices"] = list(csv.DictReader(handle))
    return result


def exact_psnr(reference, test) -> float:
    """PSNR with the peak and the squared errors in Python integers (no dtype, no rounding
    before the logarithm)."""
    ref = [int(v) for v in np.asarray(reference).reshape(-1)]
    tst = [int(v) for v in np.asarray(test).reshape(-1)]
    peak = max(ref) - min(ref)
    mse = Fraction(sum((a - b) ** 2 for a, b in zip(ref, tst, strict=True)), len(ref))
    return 10 * math.log10(Fraction(peak * peak) / mse)


def padded_ct(rng, shape=(3, 32, 32)):
    """An int16 CT with -32768 padding (max - min = 34,767 wraps in int16) and a
    reconstruction of it with errors of a few HU."""
    reference = rng.integers(-1024, 2000, shape).astype(np.int16)
    reference[..., :6] = -32768
    noisy = np.rint(reference + rng.normal(0, 20, shape)).clip(-32768, 32767)
    return reference, noisy.astype(np.int16)


def test_an_int16_ct_with_padding_gives_the_metrics_of_its_float64_copy(caplog, tmp_path, rng):
    reference, reconstruction = padded_ct(rng, (32, 32))
    native = evaluate(caplog, tmp_path, reference, reconstruction, "int16")
    copy = evaluate(
        caplog, tmp_path, reference.astype(np.float64), reconstruction.astype(np.float64), "f64"
    )
    for key in ("psnr_native_db", "ssim", "psnr_8bit_minmax_db", "psnr_8bit_tissue_db"):
        assert native[key] == pytest.approx(copy[key], rel=1e-12), key
    assert native["psnr_native_db"] == pytest.approx(exact_psnr(reference, reconstruction))


def test_per_slice_metrics_of_an_int16_volume_use_the_true_peak(caplog, tmp_path, rng):
    reference, reconstruction = padded_ct(rng)
    native = evaluate(caplog, tmp_path, reference, reconstruction, "int16", per_slice=True)
    copy = evaluate(
        caplog, tmp_path, reference.astype(np.float64), reconstruction.astype(np.float64),
        "f64", per_slice=True,
    )  # fmt: skip
    assert native["ssim"] == pytest.approx(copy["ssim"], rel=1e-12)
    for mine, theirs in zip(native["slices"], copy["slices"], strict=True):
        for key in ("psnr_native_db", "psnr_8bit_db", "ssim"):
            assert float(mine[key]) == pytest.approx(float(theirs[key]), rel=1e-12), key


def test_a_full_range_int32_array_gives_a_finite_correct_psnr(caplog, tmp_path, rng):
    info = np.iinfo(np.int32)
    reference = rng.integers(info.min, info.max, (16, 16), dtype=np.int32, endpoint=True)
    reference[0, 0], reference[-1, -1] = info.min, info.max
    reconstruction = reference.copy()
    reconstruction[3:6, 3:6] += np.int32(1000)  # 1000 apart, where float32 steps by 128..256
    result = evaluate(caplog, tmp_path, reference, reconstruction)
    assert math.isfinite(result["psnr_native_db"])
    assert result["psnr_native_db"] == pytest.approx(exact_psnr(reference, reconstruction))


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
)
def test_every_integer_dtype_gives_exact_native_psnr(caplog, tmp_path, dtype):
    info = np.iinfo(dtype)
    # the whole range of the dtype in 64 steps, its extremes included (exact integers)
    span = int(info.max) - int(info.min)
    reference = np.array([int(info.min) + span * k // 63 for k in range(64)], dtype).reshape(8, 8)
    reconstruction = reference.copy()
    reconstruction[4, 4] -= dtype(1)  # off by one, far from zero for the 64-bit types
    reconstruction[2, 5] += dtype(3)
    result = evaluate(caplog, tmp_path, reference, reconstruction)
    assert result["psnr_native_db"] == pytest.approx(exact_psnr(reference, reconstruction))
    assert result["window_minmax"] == [float(info.min), float(info.max)]
    if reference.dtype.itemsize <= 4:  # float64 holds these exactly: its copy is the truth
        copy = evaluate(
            caplog, tmp_path, reference.astype(np.float64), reconstruction.astype(np.float64),
            "f64",
        )  # fmt: skip
        assert result["ssim"] == pytest.approx(copy["ssim"], rel=1e-12)
    assert 0.99 < result["ssim"] < 1 + 1e-9


def test_a_fit_keeps_the_exact_range_of_an_int32_target(caplog, tmp_path):
    # values around 2^30: float32 steps by 64 there, so its copy moved the range's ends
    target = (np.arange(64).reshape(8, 8) * 7 + (1 << 30) + 3).astype(np.int32)
    save_array(tmp_path / "target.npy", target, {})
    code, message = volinr(
        caplog, "fit", "--target", tmp_path / "target.npy", "--sine-layers", 2, "--width", 8,
        "--iterations", 2, "--eval-every", 1, "--device", "cpu", "--threads", 1,
        "--weights", tmp_path / "siren.pt", "--record", tmp_path / "fit.json",
        "--curve", tmp_path / "curve.csv",
    )  # fmt: skip
    assert code == 0, message
    record = json.loads((tmp_path / "fit.json").read_text())
    assert record["value_range"] == [float(target.min()), float(target.max())]


def test_a_fit_refuses_64_bit_values_that_float64_cannot_tell_apart(caplog, tmp_path):
    target = (np.arange(64).reshape(8, 8) + (1 << 62)).astype(np.int64)
    save_array(tmp_path / "target.npy", target, {})
    outcome = volinr(
        caplog, "fit", "--target", tmp_path / "target.npy", "--sine-layers", 2, "--width", 8,
        "--iterations", 2, "--device", "cpu", "--weights", tmp_path / "out/siren.pt",
        "--record", tmp_path / "out/fit.json", "--curve", tmp_path / "out/curve.csv",
    )  # fmt: skip
    assert_refused(outcome, tmp_path / "out", "target.npy", "float64 cannot tell them apart")


# --- sidecars that do not describe their array -----------------------------------------------


def stale(tmp_path, change):
    """An array written by volinr whose sidecar is then changed by ``change(meta)``."""
    array = np.arange(16 * 16, dtype=np.int16).reshape(16, 16)
    save_array(tmp_path / "image.npy", array, {"spacing_mm": [0.5, 0.5], "units": "HU"})
    sidecar = tmp_path / "image.json"
    meta = json.loads(sidecar.read_text())
    meta = change(meta)
    sidecar.write_text(json.dumps(meta))
    return tmp_path / "image.npy"


def _set(**fields):
    return lambda meta: {**meta, **fields}


def _drop(key):
    return lambda meta: {k: v for k, v in meta.items() if k != key}


SIDECAR_CASES = {
    "other-shape": (_set(shape=[32, 32]), "records shape [32, 32], the array's is [16, 16]"),
    "other-dtype": (_set(dtype="float32"), "records dtype 'float32', the array's is int16"),
    "3d-spacing": (_set(spacing_mm=[2.5, 0.5, 0.5]), "records spacing_mm [2.5, 0.5, 0.5]"),
    "1d-spacing": (_set(spacing_mm=[0.5]), "not 2 positive finite numbers"),
    "zero-spacing": (_set(spacing_mm=[0.0, 0.5]), "records spacing_mm [0.0, 0.5]"),
    "string-spacing": (_set(spacing_mm=["0.5", "0.5"]), "records spacing_mm ['0.5', '0.5']"),
    "other-sha256": (_set(sha256="0" * 64), "records sha256 '000"),
    "no-sha256": (_drop("sha256"), "records no sha256"),
    "not-an-object": (lambda meta: [meta], "not a JSON object but list"),
}


@pytest.mark.parametrize("case", SIDECAR_CASES)
def test_a_stale_sidecar_is_refused(caplog, tmp_path, case):
    change, problem = SIDECAR_CASES[case]
    array = stale(tmp_path, change)
    outcome = volinr(
        caplog, "downsample", "--input", array, "--factor", 2, "--out", tmp_path / "out/lr.npy"
    )
    assert_refused(outcome, tmp_path / "out", tmp_path / "image.json", "image.npy", problem)


def test_a_stale_sidecar_never_reaches_the_fit(caplog, tmp_path):
    # the example: another spacing would have changed the fit's coordinates
    array = stale(tmp_path, _set(spacing_mm=[2.5, 0.5, 0.5], shape=[4, 16, 16]))
    outcome = volinr(
        caplog, "fit", "--target", array, "--sine-layers", 2, "--width", 8, "--iterations", 2,
        "--device", "cpu", "--weights", tmp_path / "out/siren.pt",
        "--record", tmp_path / "out/fit.json", "--curve", tmp_path / "out/curve.csv",
    )  # fmt: skip
    assert_refused(outcome, tmp_path / "out", tmp_path / "image.json", "records shape")


def test_a_sidecar_that_describes_its_array_is_used(caplog, tmp_path):
    array = stale(tmp_path, lambda meta: meta)
    code, message = volinr(
        caplog, "downsample", "--input", array, "--factor", 2, "--out", tmp_path / "lr.npy"
    )
    assert code == 0, message
    meta = json.loads((tmp_path / "lr.json").read_text())
    assert meta["spacing_mm"] == [1.0, 1.0] and meta["units"] == "HU"
    assert meta["sha256"] == sha256_array(np.load(tmp_path / "lr.npy"))


# --- containers whose header lies under a valid checksum -------------------------------------


@pytest.fixture(scope="module")
def containers():
    """Valid containers of a small SIREN: 2D upsampled by Lanczos, 3D by SR, 2D as is."""
    torch.manual_seed(0)
    model = Siren(3, 8, 2)

    def encode(grid, extra):
        extent = [float(n) for n in grid]
        state = model.state_dict()
        return encode_container(
            state, model.config, grid, extent, [0.0, 100.0], "q8", "zstd", extra
        )

    return {
        "lanczos": encode([4, 4], {"upsample": "lanczos", "target_shape": [8, 8]}),
        "sr": encode(
            [4, 4, 4],
            {
                "upsample": "sr",
                "target_shape": [16, 16, 16],
                "z_restore": "lanczos",
                "sr_model_sha256": "a" * 64,
            },
        ),  # fmt: skip
        "none": encode([4, 4], {"upsample": "none"}),
    }


def _extra(**fields):
    return lambda header: header["extra"].update(fields)


def _no_extra(key):
    return lambda header: header["extra"].pop(key)


def _header(**fields):
    return lambda header: header.update(fields)


def _architecture(**fields):
    return lambda header: header["architecture"].update(fields)


def _wide_constant(width, layers, grid=None):
    """A SIREN of ``width`` x ``layers`` whose every tensor is constant: uniform codes store no
    bytes for it, so the claim costs the file nothing."""

    def change(header):
        header["architecture"].update(hidden_features=width, sine_layers=layers)
        header.update(quantization={"kind": "uniform", "bits": 8}, coder="none")
        shapes = {"net.0.linear.weight": [width, 3], "net.0.linear.bias": [width]}
        for layer in range(1, layers):
            shapes[f"net.{layer}.linear.weight"] = [width, width]
            shapes[f"net.{layer}.linear.bias"] = [width]
        shapes.update({"output.weight": [1, width], "output.bias": [1]})
        header["tensors"] = [
            {"name": n, "shape": shapes[n], "offset_bytes": 0, "length_bytes": 0, "min": 0.0,
             "max": 0.0}
            for n in sorted(shapes)
        ]  # fmt: skip
        if grid:
            header.update(grid_shape=grid, grid_extent=[float(n) for n in grid])

    return change


CONTAINER_CASES = {
    # the list
    "target-missing": ("lanczos", _no_extra("target_shape"), "extra.target_shape None"),
    "method-unknown": ("lanczos", _extra(upsample="nearest"), "extra.upsample 'nearest'"),
    "target-zero": ("lanczos", _extra(target_shape=[0, 8]), "extra.target_shape [0, 8]"),
    "target-negative": ("lanczos", _extra(target_shape=[-8, 8]), "extra.target_shape [-8, 8]"),
    "target-3d-on-2d": ("lanczos", _extra(target_shape=[8, 8, 8]), "does not agree with grid"),
    "z-restore-unknown": ("sr", _extra(z_restore="cubic"), "extra.z_restore 'cubic'"),
    "sr-sha256-short": ("sr", _extra(sr_model_sha256="abc"), "extra.sr_model_sha256 'abc'"),
    "sr-sha256-upper": ("sr", _extra(sr_model_sha256="A" * 64), "extra.sr_model_sha256 'AAA"),
    "sr-sha256-missing": ("sr", _no_extra("sr_model_sha256"), "extra.sr_model_sha256 None"),
    "value-range-reversed": ("none", _header(value_range=[100.0, 0.0]), "is reversed"),
    "width-4096-in-1kb": ("none", _wide_constant(4096, 4), "hidden_features 4096"),
    # of our own
    "target-fraction": ("lanczos", _extra(target_shape=[8.5, 8]), "extra.target_shape [8.5, 8]"),
    "target-text": ("lanczos", _extra(target_shape="8x8"), "extra.target_shape '8x8'"),
    "target-smaller": ("lanczos", _extra(target_shape=[2, 2]), "does not agree with grid"),
    "target-huge": ("lanczos", _extra(target_shape=[10**6, 10**6]), "MAX_DECODE_VOXELS"),
    "grid-huge": ("none", _header(grid_shape=[10**5, 10**5]), "MAX_DECODE_VOXELS"),
    "value-range-empty": ("none", _header(value_range=[5.0, 5.0]), "is empty"),
    "value-range-beyond-float32": ("none", _header(value_range=[-1e300, 1e300]), "float32"),
    "extent-underflows": ("none", _header(grid_extent=[1e-300, 1e-300]), "grid_extent"),
    "extent-overflows": ("none", _header(grid_extent=[1e300, 4.0]), "grid_extent"),
    "width-zero": ("none", _architecture(hidden_features=0), "hidden_features 0"),
    "layers-true": ("none", _architecture(sine_layers=True), "sine_layers True"),
    "layers-100": ("none", _architecture(sine_layers=100), "sine_layers 100"),
    "width-2048-on-512x512": ("none", _wide_constant(2048, 2, [512, 512]), "hidden_features 2048"),
    "decode-too-long": ("none", _wide_constant(1024, 16, [2048, 2048]), "multiply-adds"),
}


@pytest.mark.parametrize("case", CONTAINER_CASES)
def test_a_header_that_lies_under_a_valid_checksum_is_refused(caplog, tmp_path, containers, case):
    kind, change, problem = CONTAINER_CASES[case]
    _, header, payload = split(containers[kind])
    change(header)
    path = tmp_path / "lying.volinr"
    write_container(path, frame(header, b"" if header["coder"] == "none" else payload))
    assert len(path.read_bytes()) < 4096  # every claim costs the file a few bytes
    outcome = volinr(
        caplog,
        "decompress",
        "--container",
        path,
        "--device",
        "cpu",
        "--out",
        tmp_path / "out/x.npy",
    )
    assert_refused(outcome, tmp_path / "out", path, problem)


def test_the_untouched_containers_still_decode(caplog, tmp_path, containers):
    path = tmp_path / "lanczos.volinr"
    write_container(path, containers["lanczos"])
    code, message = volinr(
        caplog, "decompress", "--container", path, "--device", "cpu", "--out", tmp_path / "x.npy"
    )
    assert code == 0, message
    assert np.load(tmp_path / "x.npy").shape == (8, 8)


# --- SIREN weights files ---------------------------------------------------------------------


def weights_file(path, **payload):
    torch.manual_seed(0)
    model = Siren(3, 8, 2)
    fields = {"value_range": [0.0, 100.0], "grid_shape": [8, 8], "grid_extent": [8.0, 8.0]}
    save_checkpoint(path, WEIGHTS_FORMAT, model, **(fields | payload))
    return path


@pytest.mark.parametrize(
    "payload, problem",
    [
        ({"value_range": [100.0, 0.0]}, "value_range [100.0, 0.0] is reversed"),
        ({"grid_extent": [1e-300, 1e-300]}, "grid_extent [1e-300, 1e-300] mm outside"),
        ({"value_range": [-1e300, 1e300]}, "within float32"),
    ],
    ids=["reversed-range", "extent-underflows", "range-beyond-float32"],
)
@pytest.mark.parametrize("command", ["decode", "compress"])
def test_a_weights_file_that_cannot_decode_is_refused(caplog, tmp_path, command, payload, problem):
    weights = weights_file(tmp_path / "siren.pt", **payload)
    outcome = volinr(
        caplog, command, "--weights", weights, "--device", "cpu", "--out", tmp_path / "out/x"
    ) if command == "decode" else volinr(
        caplog, command, "--weights", weights, "--out", tmp_path / "out/x.volinr"
    )  # fmt: skip
    assert_refused(outcome, tmp_path / "out", weights, problem)


def test_a_fit_refuses_a_spacing_its_float32_coordinates_cannot_hold(caplog, tmp_path):
    target = np.arange(64, dtype=np.float32).reshape(8, 8)
    # 1e-300 mm is 0 in float32: NaN coordinates, and the fit ended "diverged" (exit 3)
    save_array(tmp_path / "target.npy", target, {"spacing_mm": [1e-300, 1e-300]})
    outcome = volinr(
        caplog, "fit", "--target", tmp_path / "target.npy", "--sine-layers", 2, "--width", 8,
        "--iterations", 2, "--device", "cpu", "--weights", tmp_path / "out/siren.pt",
        "--record", tmp_path / "out/fit.json", "--curve", tmp_path / "out/curve.csv",
    )  # fmt: skip
    assert_refused(outcome, tmp_path / "out", "target.npy", "grid_extent", "mm outside")
