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
