"""Numbers that used to come out silently wrong, through `volinr` as a user meets them.

- Integer images: ranges and errors never wrap in the array's dtype nor merge in float32, for
  every integer dtype an array may have.
"""

import csv
import json
import math
from fractions import Fraction

import numpy as np
import pytest

from test_bad_inputs import assert_refused, volinr
from volinr.io import save_array

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
