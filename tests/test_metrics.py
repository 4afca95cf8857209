import math

import numpy as np
import pytest

from volinr import metrics


def test_psnr_on_known_arrays():
    reference = np.zeros((10, 10))
    test = np.ones((10, 10))
    assert metrics.psnr(reference, test, 255) == pytest.approx(20 * math.log10(255))
    assert metrics.psnr(reference, reference, 255) == math.inf
    test = reference.copy()
    test[0, 0] = 10  # MSE = 100 / 100 = 1
    assert metrics.psnr(reference, test, 1.0) == pytest.approx(0.0)


def test_8bit_window_and_psnr():
    image = np.array([[-3024.0, -1024.0], [476.0, 1976.0]])
    assert metrics.window_to_8bit(image, -1024, 1976).tolist() == [[0, 0], [128, 255]]
    shifted = image + 1.0  # below one grey level in a 3000 HU window: rounds away
    assert metrics.psnr_8bit(image, shifted, (-1024, 1976)) == math.inf


def test_native_psnr_and_ssim():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1000, 1000, size=(64, 64))
    noisy = image + rng.normal(0, 20, size=image.shape)
    expected = 10 * math.log10((image.max() - image.min()) ** 2 / np.mean((noisy - image) ** 2))
    assert metrics.psnr_native(image, noisy) == pytest.approx(expected)
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    assert metrics.ssim(image, noisy) < 1.0


def test_windows_and_rates():
    image = np.array([-3024.0, 0.0, 1500.0])
    assert metrics.tissue_window(image, -1024, None) == (-1024.0, 1500.0)
    assert metrics.minmax_window(image) == (-3024.0, 1500.0)
    assert metrics.compression_rate(512 * 512, 71_800) == pytest.approx(3.651, abs=1e-3)
    assert metrics.bits_per_voxel(1024, 8192) == 1.0
    with pytest.raises(ValueError):
        metrics.window_to_8bit(image, 5, 5)


def test_an_infinite_psnr_says_what_is_equal():
    """+-3 HU everywhere is equal after 8-bit windowing (a gray level is about 16 HU on a
    4,000 HU range) but not exactly: the reason must not say 'identical'."""
    from volinr import evaluation

    # every value at the centre of its 8-bit gray level, so that +3 HU rounds back to it
    reference = (np.repeat(np.arange(256), 16) * (4000 / 255) - 1000).reshape(64, 64)
    shifted = reference + 3.0
    minmax = (float(reference.min()), float(reference.max()))
    quality = evaluation.finish(evaluation.quality(reference, shifted, minmax, minmax), "x")
    reason = quality["psnr_infinite_reason"]
    assert quality["psnr_native_db"] != float("inf")
    assert "after both images are windowed to 8 bits" in reason and "identical" not in reason
    exact = evaluation.finish(evaluation.quality(reference, reference, minmax, minmax), "x")
    assert "psnr_native_db: MSE 0, every value identical" in exact["psnr_infinite_reason"]


def test_evaluate_writes_the_max_error_its_infinite_psnr_reason_points_to(tmp_path):
    from volinr.cli import main
    from volinr.io import read_json, save_array

    reference = (np.repeat(np.arange(256), 16) * (4000 / 255) - 1000).reshape(64, 64)
    save_array(tmp_path / "ref.npy", reference.astype(np.float32), {"units": "HU"})
    save_array(tmp_path / "rec.npy", (reference + 3).astype(np.float32), {"units": "HU"})
    ref, rec, out = (str(tmp_path / name) for name in ("ref.npy", "rec.npy", "e.json"))
    argv = ["evaluate", "--reference", ref, "--reconstruction", rec, "--label", "{}", "--out", out]
    assert main(argv) == 0
    result = read_json(tmp_path / "e.json")
    assert "max_abs_error_hu" in result["psnr_infinite_reason"]
    assert result["max_abs_error_hu"] == pytest.approx(3.0, abs=1e-3)
