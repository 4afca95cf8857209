import numpy as np
import pytest
from PIL import Image

from volinr.resample import downsampled_shape, lanczos_resize, resize


def test_lanczos_equals_pillow_on_a_2d_float_image(rng):
    image = rng.normal(size=(96, 80)).astype(np.float32) * 300
    expected = np.asarray(
        Image.fromarray(image, mode="F").resize((20, 24), Image.Resampling.LANCZOS)
    )
    np.testing.assert_allclose(lanczos_resize(image, (24, 20)), expected, rtol=1e-4, atol=1e-3)


def test_downsampling_is_antialiased(rng):
    noise = rng.normal(size=(256, 256)).astype(np.float32)
    block_std = noise.reshape(64, 4, 64, 4).mean(axis=(1, 3)).std()  # ~0.25
    lanczos_std = lanczos_resize(noise, (64, 64)).std()
    # Without a widened kernel (aliasing) the std would stay near 1.
    assert abs(lanczos_std - block_std) < 0.1 * 1.0
    assert lanczos_std < 0.4


def test_separable_3d_call_keeps_a_constant_volume_constant():
    volume = np.full((20, 32, 28), -1000.0, np.float32)
    small = lanczos_resize(volume, (5, 8, 7))
    assert small.shape == (5, 8, 7) and small.dtype == np.float32
    np.testing.assert_allclose(small, -1000.0, rtol=1e-6)


def test_no_clipping_overshoot_is_kept():
    step = np.zeros((64, 64), np.float32)
    step[:, 32:] = 1000.0
    small = lanczos_resize(step, (16, 16))
    assert small.max() > 1000.0 or small.min() < 0.0  # Lanczos rings at an edge


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="axes"):
        resize(np.zeros((8, 8)), (4, 4, 4))
    with pytest.raises(ValueError, match="unknown resampling"):
        resize(np.zeros((8, 8)), (4, 4), "nearest-ish")
    with pytest.raises(ValueError, match="too small"):
        downsampled_shape((5, 512), 4)
    assert downsampled_shape((512, 512, 463), 4) == (128, 128, 116)


def test_slab_wise_resize_equals_one_pass_and_takes_int16(rng):
    volume = (rng.normal(0, 300, (13, 20, 24))).astype(np.int16)
    whole = resize(volume.astype(np.float32), (4, 5, 6), "lanczos", slab_voxels=1 << 30)
    slabs = resize(volume, (4, 5, 6), "lanczos", slab_voxels=50)  # several slabs per axis
    np.testing.assert_array_equal(whole, slabs)
    assert slabs.dtype == np.float32
