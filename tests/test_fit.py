import numpy as np
import pytest
import torch

from volinr.fit import (
    FitSettings,
    coordinate_grid,
    decode_siren,
    fit_siren,
    grid_coordinates,
    grid_extent,
    load_siren,
    save_siren,
)
from volinr.io import InputError


def test_coordinate_grid_2d_and_3d():
    grid = coordinate_grid((4, 6))
    assert grid.shape == (24, 3)
    assert torch.all(grid[:, 2] == 0)  # z = 0 for a slice
    # voxel centres: the longest axis (6 columns) spans (-1, 1) less half a voxel each side
    assert grid[:, 0].min() == pytest.approx(-5 / 6) and grid[:, 0].max() == pytest.approx(5 / 6)
    assert grid[:, 1].max() == pytest.approx(0.5)  # 4 rows: true proportions kept
    assert grid[1, 0] > grid[0, 0] and grid[1, 1] == grid[0, 1]  # x runs along columns
    volume = coordinate_grid((3, 4, 5))
    assert volume.shape == (60, 3) and volume[:, 2].unique().numel() == 3


def test_coordinates_are_physical_and_shared_by_lr_and_hr_grids():
    # anisotropic volume: 2 mm slices, 1 mm pixels; extent (8, 8, 8) mm is isotropic
    hr_extent = grid_extent((4, 8, 8), (2.0, 1.0, 1.0))
    assert hr_extent == [8.0, 8.0, 8.0]
    hr = coordinate_grid((4, 8, 8), extent=hr_extent)
    assert float(hr[:, 2].max()) == pytest.approx(0.75) and float(hr[:, 0].max()) == pytest.approx(
        0.875
    )
    # the x2 LR grid's voxel centres are the means of the HR centres they cover
    lr = coordinate_grid((2, 4, 4), extent=hr_extent).reshape(2, 4, 4, 3)
    hr = hr.reshape(4, 8, 8, 3)
    pooled = hr.reshape(2, 2, 4, 2, 4, 2, 3).mean(dim=(1, 3, 5))
    assert torch.allclose(lr, pooled, atol=1e-6)
    # any chunk of the grid equals the same rows of the whole grid
    assert torch.equal(
        grid_coordinates((4, 8, 8), hr_extent, "cpu", 37, 101), hr.reshape(-1, 3)[37:101]
    )


def _phantom(size=32):
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    return (1000 * (x**2 + y**2 < 0.6) - 1000 + 200 * np.sin(6 * x)).astype(np.float32)


def test_a_short_fit_reduces_the_loss_and_keeps_the_best_snapshot(tmp_path):
    target = _phantom()
    settings = FitSettings(sine_layers=2, iterations=60, width=32, eval_every=10, seed=0)
    result = fit_siren(target, settings, torch.device("cpu"), progress=False)
    assert result.loss[-10:].mean() < 0.5 * result.loss[:5].mean()
    assert result.best_psnr_db >= result.final_psnr_db
    assert result.best_psnr_db == max(e["psnr_db"] for e in result.evaluations)
    assert result.train_seconds > 0 and result.peak_memory_bytes >= 0
    # The saved weights decode to the image whose PSNR was recorded as best.
    path = tmp_path / "siren.pt"
    assert save_siren(path, result) == path.stat().st_size
    model, payload = load_siren(path)
    decoded = decode_siren(model, target.shape, tuple(payload["value_range"]), chunk=100)
    lo, hi = target.min(), target.max()
    mse = np.mean(((decoded - target) / (hi - lo) * 2) ** 2)
    assert 10 * np.log10(4 / mse) == pytest.approx(result.best_psnr_db, abs=0.01)


def test_same_seed_same_weights_on_cpu():
    target = _phantom(16)
    settings = FitSettings(sine_layers=2, iterations=5, width=16, eval_every=5, seed=3)
    first = fit_siren(target, settings, torch.device("cpu"), progress=False)
    second = fit_siren(target, settings, torch.device("cpu"), progress=False)
    pairs = zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    for a, b in pairs:
        assert torch.equal(a, b)


def test_minibatches_cover_every_voxel_once_per_epoch():
    target = _phantom(16)  # 256 voxels, batch 64: four batches an epoch
    settings = FitSettings(sine_layers=2, iterations=8, width=8, batch_size=64, eval_every=8)
    result = fit_siren(target, settings, torch.device("cpu"), progress=False)
    assert len(result.loss) == 8 and np.isfinite(result.loss).all()


def test_constant_image_and_bad_weights_are_refused(tmp_path):
    settings = FitSettings(sine_layers=2, iterations=2)
    with pytest.raises(InputError, match="constant"):
        fit_siren(np.zeros((8, 8), np.float32), settings, torch.device("cpu"), progress=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt"):
        load_siren(bad)


def test_compile_falls_back_to_eager_when_it_fails(monkeypatch, caplog):
    def broken_compile(model):
        raise RuntimeError("no C compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    settings = FitSettings(sine_layers=2, iterations=4, width=8, eval_every=2, compile=True)
    result = fit_siren(_phantom(16), settings, torch.device("cpu"), progress=False)
    assert "fitting in eager mode" in caplog.text
    assert result.compile_seconds == 0.0 and np.isfinite(result.loss).all()


def test_a_fixed_seed_gives_bitwise_identical_weights_on_cpu():
    target = _phantom(24)
    settings = FitSettings(sine_layers=2, iterations=20, width=16, eval_every=5, seed=3)
    first = fit_siren(target, settings, torch.device("cpu"), progress=False)
    second = fit_siren(target, settings, torch.device("cpu"), progress=False)
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    other = fit_siren(target, FitSettings(**{**vars(settings), "seed": 4}), torch.device("cpu"))
    assert not torch.equal(other.model.output.weight, first.model.output.weight)
