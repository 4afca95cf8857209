import argparse
import json

import numpy as np
import pytest
import torch

from volinr.errors import InputError
from volinr.io import sha256_file
from volinr.models import SRDenseNet
from volinr.resample import lanczos_resize
from volinr.super_resolution import (
    load_sr_checkpoint,
    save_sr_checkpoint,
    super_resolve,
    super_resolve_volume,
)
from volinr.training.sr import (
    PatchPairs,
    SRTrainingSettings,
    checkpoint_reuse_reason,
    train_srdensenet,
)

TINY = {"blocks": 1, "layers_per_block": 2, "growth": 4, "bottleneck": 8, "global_residual": True}


def _images(rng, count=2, size=64):
    return [rng.normal(0, 300, size=(size, size)).astype(np.float32) for _ in range(count)]


def test_patch_pairs_are_aligned(rng):
    image = lanczos_resize(rng.normal(size=(32, 32)).astype(np.float32), (128, 128))
    pairs = PatchPairs.from_hr_images([image], 4)
    lr, hr = pairs.sample(np.random.default_rng(1), 3, 8)
    assert lr.shape == (3, 1, 8, 8) and hr.shape == (3, 1, 32, 32)
    # Downsampling a smooth HR patch gives back its LR patch, away from the borders.
    again = lanczos_resize(hr[0, 0], (8, 8))
    assert np.abs(again[2:-2, 2:-2] - lr[0, 0, 2:-2, 2:-2]).max() < 0.1 * np.ptp(lr[0, 0])


def test_training_runs_and_checkpoint_round_trips(tmp_path, rng):
    pairs = PatchPairs.from_hr_images(_images(rng), 4)
    settings = SRTrainingSettings(
        steps=3, lr_patch=8, batch_size=2, monitor_every=1, monitor_patches=2
    )
    model, curve = train_srdensenet(pairs, TINY, settings, torch.device("cpu"), progress=False)
    assert [row["step"] for row in curve] == [1, 2, 3]
    assert all(np.isfinite(row["train_l1"]) for row in curve)
    path = tmp_path / "sr.pt"
    save_sr_checkpoint(path, model, {"settings": {}, "split": {}}, curve)
    loaded, payload = load_sr_checkpoint(path)
    assert payload["config"]["scale"] == 4
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))


def test_tiled_super_resolution_equals_whole_image(rng):
    torch.manual_seed(0)
    model = SRDenseNet(**TINY).eval()
    for p in model.reconstruction.parameters():  # make the correction non-zero
        torch.nn.init.normal_(p, std=0.1)
    lr = rng.normal(0, 100, size=(40, 36)).astype(np.float32)
    whole = super_resolve(model, lr, tile=64)
    tiled = super_resolve(model, lr, tile=16)
    assert whole.shape == (160, 144)
    # The margin covers the network's receptive field: no seams.
    np.testing.assert_allclose(tiled, whole, atol=1e-3)
    deep = SRDenseNet(blocks=3, layers_per_block=4, growth=4, bottleneck=8).eval()
    assert deep.receptive_radius_lr == 15
    np.testing.assert_allclose(
        super_resolve(deep, lr, tile=8), super_resolve(deep, lr, tile=64), atol=1e-3
    )
    volume = super_resolve(model, np.stack([lr, lr]), tile=64)
    assert volume.shape == (2, 160, 144)


def _args(tmp_path, checkpoint, sha, settings, retrain=False):
    return argparse.Namespace(
        retrain=retrain,
        pretrained=str(checkpoint),
        pretrained_sha256=sha,
        model=dict(TINY),
        factor=4,
        settings=settings,
    )


def test_checkpoint_is_reused_only_when_everything_matches(tmp_path):
    settings = {"steps": 1}
    split = {"evaluation": {"sha256": "eval"}, "training": [{"sha256": "a"}, {"sha256": "b"}]}
    path = tmp_path / "sr.pt"
    save_sr_checkpoint(path, SRDenseNet(**TINY), {"settings": settings, "split": split}, [])
    sha = sha256_file(path)
    assert checkpoint_reuse_reason(_args(tmp_path, path, sha, settings), split) is None
    assert "asked" in checkpoint_reuse_reason(
        _args(tmp_path, path, sha, settings, retrain=True), split
    )
    assert "sha256" in checkpoint_reuse_reason(_args(tmp_path, path, "0" * 64, settings), split)
    assert "settings" in checkpoint_reuse_reason(_args(tmp_path, path, sha, {"steps": 2}), split)
    other = {"evaluation": {"sha256": "a"}, "training": [{"sha256": "b"}]}
    assert "other images" in checkpoint_reuse_reason(_args(tmp_path, path, sha, settings), other)
    leaked = {"evaluation": {"sha256": "a"}, "training": split["training"]}
    assert "evaluation image" in checkpoint_reuse_reason(
        _args(tmp_path, path, sha, settings), leaked
    )


def test_a_foreign_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(InputError, match="not a volinr-srdensenet-1 file"):
        load_sr_checkpoint(path)
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(InputError, match="x.pt"):
        load_sr_checkpoint(path)


@pytest.mark.parametrize("z_restore", ["lanczos", "sr-coronal"])
def test_volume_super_resolution_restores_every_axis(z_restore, rng):
    torch.manual_seed(0)
    model = SRDenseNet(**TINY).eval()
    lr = rng.normal(0, 1, (3, 5, 6)).astype(np.float32)
    high = super_resolve_volume(model, lr, (11, 20, 24), z_restore=z_restore, progress=False)
    assert high.shape == (11, 20, 24) and np.isfinite(high).all()
    # in-plane SR of each axial slice; with sr-coronal the slice axis differs from Lanczos
    other = "lanczos" if z_restore == "sr-coronal" else "sr-coronal"
    again = super_resolve_volume(model, lr, (11, 20, 24), z_restore=other, progress=False)
    assert not np.allclose(high, again)
    with pytest.raises(ValueError, match="z_restore"):
        super_resolve_volume(model, lr, (11, 20, 24), z_restore="cubic")
