import numpy as np
import pytest
import torch

from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.siren_grid import (
    coordinate_grid,
    decode_siren,
    grid_coordinates,
    grid_extent,
    load_siren,
    save_siren,
)
from volinr.training.siren import FitSettings, fit_siren, resolve_step
from volinr.training.siren_blocked import BlockedSirenStep


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
    settings = FitSettings.make(sine_layers=2, iterations=60, width=32, eval_every=10, seed=0)
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


def test_minibatches_cover_every_voxel_once_per_epoch():
    target = _phantom(16)  # 256 voxels, batch 64: four batches an epoch
    settings = FitSettings.make(sine_layers=2, iterations=8, width=8, batch_size=64, eval_every=8)
    result = fit_siren(target, settings, torch.device("cpu"), progress=False)
    assert len(result.loss) == 8 and np.isfinite(result.loss).all()


def test_constant_image_and_bad_weights_are_refused(tmp_path):
    settings = FitSettings.make(sine_layers=2, iterations=2)
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
    settings = FitSettings.make(
        sine_layers=2, iterations=4, width=8, eval_every=2, compile=True, step="autograd"
    )
    result = fit_siren(_phantom(16), settings, torch.device("cpu"), progress=False)
    assert "fitting in eager mode" in caplog.text
    assert result.compile_seconds == 0.0 and np.isfinite(result.loss).all()


@pytest.mark.parametrize("sine_layers, workers", [(1, 1), (2, 2), (4, 3)])
def test_blocked_step_gives_autograd_gradient(sine_layers, workers):
    torch.manual_seed(0)
    model = Siren(3, 32, sine_layers, 1, 30.0)
    x, y = torch.rand(1000, 3) * 2 - 1, torch.rand(1000, 1) * 2 - 1
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    # 1000 rows: a short last block; several workers: uneven row ranges
    blocked = BlockedSirenStep(model, block_rows=96, workers=workers)
    assert float(blocked(x, y)) == pytest.approx(loss.item(), rel=1e-5)
    blocked.close()
    assert torch.get_num_threads() == 1  # the workers' one-thread setting is undone
    for name, p in model.named_parameters():
        scale = expected[name].abs().max()
        assert (p.grad - expected[name]).abs().max() <= 1e-4 * scale, name


def test_blocked_and_autograd_fits_agree():
    target = _phantom(32)
    settings = FitSettings.make(
        sine_layers=2, iterations=60, width=32, eval_every=20, batch_size=256
    )
    blocked = fit_siren(target, settings, torch.device("cpu"), progress=False)
    autograd = fit_siren(
        target, FitSettings(**{**vars(settings), "step": "autograd"}), torch.device("cpu")
    )
    assert blocked.step == "blocked" and autograd.step == "autograd"
    assert blocked.final_psnr_db == pytest.approx(autograd.final_psnr_db, abs=0.1)


def test_precision_options_are_checked():
    cpu = torch.device("cpu")
    with pytest.raises(InputError, match="tf32 needs a CUDA"):
        resolve_step(FitSettings.make(sine_layers=2, iterations=1, precision="tf32"), cpu)
    with pytest.raises(InputError, match="blocked step runs in float32"):
        resolve_step(
            FitSettings.make(sine_layers=2, iterations=1, precision="bfloat16", step="blocked"), cpu
        )
    settings = FitSettings.make(
        sine_layers=2, iterations=4, width=16, eval_every=2, precision="bfloat16"
    )
    result = fit_siren(_phantom(16), settings, cpu, progress=False)
    assert result.step == "autograd" and np.isfinite(result.loss).all()


class _Killed(Exception):
    pass


def test_an_interrupted_fit_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    target = _phantom(24)
    settings = FitSettings.make(
        sine_layers=2, iterations=30, width=16, eval_every=5, batch_size=128, checkpoint_every=10
    )
    cpu = torch.device("cpu")
    whole = fit_siren(target, settings, cpu, progress=False)
    resume = tmp_path / "fit.resume.pt"
    calls = {"n": 0}
    real_call = BlockedSirenStep.__call__

    def dies_at_step_23(self, x, y):
        calls["n"] += 1
        if calls["n"] == 23:
            raise _Killed
        return real_call(self, x, y)

    monkeypatch.setattr(BlockedSirenStep, "__call__", dies_at_step_23)
    with pytest.raises(_Killed):
        fit_siren(target, settings, cpu, progress=False, resume_path=resume)
    assert resume.exists()  # written at iteration 20
    monkeypatch.setattr(BlockedSirenStep, "__call__", real_call)
    resumed = fit_siren(target, settings, cpu, progress=False, resume_path=resume)
    assert resumed.resumed_from_iteration == 20 and not resume.exists()
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert np.array_equal(whole.loss, resumed.loss)
    assert [e["psnr_db"] for e in whole.evaluations] == [e["psnr_db"] for e in resumed.evaluations]


def test_a_resume_file_that_is_not_this_fits_checkpoint_is_refused_and_kept(tmp_path, caplog):
    target = _phantom(16)
    cpu = torch.device("cpu")
    resume = tmp_path / "fit.resume.pt"
    first = FitSettings.make(
        sine_layers=2, iterations=10, width=8, eval_every=5, checkpoint_every=5
    )
    another = {"format": "volinr-siren-resume-1", "fingerprint": "another"}
    for content, problem in [(another, "of another fit"), (b"cut short", "not a readable")]:
        if isinstance(content, dict):
            torch.save(content, resume)
        else:
            resume.write_bytes(content)
        kept = resume.read_bytes()
        with pytest.raises(InputError, match=f"fit.resume.pt: .*{problem}.*left as it is"):
            fit_siren(target, first, cpu, progress=False, resume_path=resume)
        assert resume.read_bytes() == kept
    # At the default path beside the weights, another fit's checkpoint is the job's own, left
    # by an earlier run with other settings: replaced, then removed when the fit is done.
    torch.save(another, resume)
    result = fit_siren(
        target, first, cpu, progress=False, resume_path=resume, replace_stale_resume=True
    )
    assert "other data or settings" in caplog.text and result.resumed_from_iteration == 0
    assert len(result.loss) == 10 and not resume.exists()
    resume.write_bytes(b"cut short")  # never written by volinr (checkpoints are renamed whole)
    with pytest.raises(InputError, match="not a readable SIREN resume checkpoint"):
        fit_siren(target, first, cpu, progress=False, resume_path=resume, replace_stale_resume=True)
    assert resume.read_bytes() == b"cut short"


def test_decoding_gives_the_same_bits_whatever_the_chunk():
    """The last bits of the network's products and sines depend on a value's place in a
    batch; the decoder feeds the network whole tiles, each voxel at the same place whatever
    the chunk, so any chunk decodes the same array (several tiles and a partial last one;
    without the tiles chunk 1 differs from the others by 1.2e-7)."""
    from volinr.limits import DECODE_TILE

    torch.manual_seed(0)
    model = Siren(3, 64, 3, 1, 30.0)
    shape = (3, 61, 77)  # 14,091 voxels: three tiles and a part
    assert np.prod(shape) > 3 * DECODE_TILE
    decoded = [
        decode_siren(model, shape, (-1.0, 1.0), chunk=chunk, progress=False)
        for chunk in (1, DECODE_TILE - 1, DECODE_TILE + 1, 5000, 1 << 18)
    ]
    for other in decoded[1:]:
        assert np.array_equal(other, decoded[0])
