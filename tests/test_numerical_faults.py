"""Numerical faults: a run whose loss becomes NaN/Inf stops naming its configuration (or
restarts at a lower learning rate where configured), and no NaN reaches a result or a table."""

import dataclasses
import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from test_tables import PUBLISHED, _metrics
from volinr.cli import main
from volinr.errors import InputError
from volinr.io import sha256_file
from volinr.models import SRDenseNet
from volinr.report.paper_tables import build_tables
from volinr.report.summary import build_summary
from volinr.report.table_io import load_metrics, load_published, published_for_volume, write_tables
from volinr.super_resolution import load_sr_checkpoint, super_resolve, super_resolve_volume
from volinr.training import sr as sr_training
from volinr.training.siren import FitSettings, SirenDiverged, fit_siren
from volinr.training.sr import (
    PatchPairs,
    SRDiverged,
    SRTrainingSettings,
    train_srdensenet,
    train_srdensenet_retrying,
)

# ------------------------------------------------------------------------------------------
# SIREN


def _noise_image(size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)


def test_a_diverging_siren_fit_stops_naming_its_configuration():
    # a rate far beyond the schema's range, to make the fit diverge
    settings = dataclasses.replace(
        FitSettings.make(sine_layers=2, iterations=20, width=16, eval_every=5), learning_rate=1e30
    )
    with pytest.raises(SirenDiverged) as caught:
        fit_siren(_noise_image(), settings, torch.device("cpu"), progress=False, label="fit X")
    message = str(caught.value)
    for part in ("fit X", "NaN/Inf", "2 sine layers", "width 16", "learning rate 1e+30"):
        assert part in message
    assert "divergence_retries" in message


def test_siren_divergence_retries_lower_the_rate_until_the_fit_is_finite(caplog):
    settings = dataclasses.replace(
        FitSettings.make(
            sine_layers=2, iterations=20, width=16, eval_every=5, divergence_retries=40,
            divergence_lr_factor=1e-4,
        ),
        learning_rate=1e30,  # far beyond the schema's range: the fit must diverge
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = fit_siren(_noise_image(), settings, torch.device("cpu"), progress=False)
    assert result.divergence_retries_used >= 1 and "restarting with learning rate" in caplog.text
    assert result.learning_rate == pytest.approx(1e30 * 1e-4**result.divergence_retries_used)
    assert np.isfinite(result.loss).all() and math.isfinite(result.best_psnr_db)
    # the retry is a fresh fit at the lower rate, not a continuation of the diverged one
    fresh = fit_siren(
        _noise_image(),
        FitSettings(
            **{**vars(settings), "learning_rate": result.learning_rate, "divergence_retries": 0}
        ),  # fmt: skip
        torch.device("cpu"),
        progress=False,
    )
    assert torch.equal(fresh.model.output.weight, result.model.output.weight)


def test_exhausted_siren_retries_say_so():
    settings = dataclasses.replace(
        FitSettings.make(
            sine_layers=2, iterations=10, width=16, eval_every=5, divergence_retries=2,
            divergence_lr_factor=0.5,
        ),
        learning_rate=1e30,
    )  # fmt: skip
    with pytest.raises(SirenDiverged, match="after 2 retries"):
        fit_siren(_noise_image(), settings, torch.device("cpu"), progress=False)


def test_a_siren_target_holding_nan_is_refused():
    image = _noise_image()
    image[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        fit_siren(image, FitSettings.make(sine_layers=2, iterations=2), torch.device("cpu"))


# ------------------------------------------------------------------------------------------
# SRDenseNet

TINY = {"blocks": 1, "layers_per_block": 2, "growth": 4, "bottleneck": 8, "global_residual": True}
CPU = torch.device("cpu")


@pytest.fixture
def pairs(rng):
    images = [rng.normal(0, 300, size=(64, 64)).astype(np.float32) for _ in range(2)]
    return PatchPairs.from_hr_images(images, 4)


def _settings(**change):
    base = dict(steps=8, lr_patch=8, batch_size=2, monitor_every=4, monitor_patches=2)
    return SRTrainingSettings(**(base | change))


def test_a_diverging_sr_training_stops_naming_its_configuration(pairs):
    # Adam moves every weight by about the learning rate a step: 1e6 overflows at once. The
    # loss is read every monitor_every (4) steps, so the first check is at step 4.
    message = (
        "SRDenseNet training diverged (NaN/Inf loss) by step 4: SRDenseNet blocks 1, "
        "layers_per_block 2, growth 4, bottleneck 8, scale 4, global_residual True; "
        "learning rate 1e+06, batch 2, LR patch 8, seed 0, float32"
    )
    with pytest.raises(SRDiverged, match=re.escape(message)):
        train_srdensenet(pairs, TINY, _settings(learning_rate=1e6), CPU, progress=False)
    with pytest.raises(FloatingPointError, match="lower sr.training.learning_rate"):
        train_srdensenet_retrying(pairs, TINY, _settings(learning_rate=1e6), CPU, progress=False)


def test_a_nan_in_the_last_interval_is_caught_before_the_model_is_returned(pairs, monkeypatch):
    real_l1 = sr_training.F.l1_loss
    calls = []

    def l1_nan_once(prediction, target):
        calls.append(1)
        loss = real_l1(prediction, target)
        return loss * math.nan if len(calls) == 2 else loss

    monkeypatch.setattr(sr_training.F, "l1_loss", l1_nan_once)
    # 3 steps, monitoring every 50: the only check is at the end, and it still sees step 2.
    with pytest.raises(SRDiverged, match="by step 3"):
        train_srdensenet(pairs, TINY, _settings(steps=3, monitor_every=50), CPU, progress=False)


def test_divergence_retries_restart_from_the_initial_weights_at_a_lower_rate(pairs, caplog):
    with caplog.at_level(logging.WARNING, logger="volinr.training.sr"):
        run = train_srdensenet_retrying(
            pairs, TINY, _settings(learning_rate=1e6), CPU, progress=False,
            divergence_retries=2, divergence_lr_factor=1e-3,
        )  # fmt: skip
    assert run.divergence_retries_used == 1 and run.learning_rate == pytest.approx(1e3)
    assert "restarting from the initial weights with learning rate 1e+03 (retry 1 of 2)" in (
        caplog.text
    )
    # The same seed, weights and data order as a fresh training at the lower rate: bitwise.
    fresh, curve = train_srdensenet(pairs, TINY, _settings(learning_rate=1e3), CPU, progress=False)
    untimed = [
        [{k: v for k, v in row.items() if k != "seconds"} for row in c] for c in (run.curve, curve)
    ]
    assert untimed[0] == untimed[1]
    for a, b in zip(run.model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_exhausted_divergence_retries_report_every_rate_tried(pairs):
    with pytest.raises(SRDiverged) as caught:
        train_srdensenet_retrying(
            pairs, TINY, _settings(learning_rate=1e10), CPU, progress=False,
            divergence_retries=2, divergence_lr_factor=0.5,
        )  # fmt: skip
    text = str(caught.value)
    assert "learning rate 2.5e+09" in text  # the last attempt's configuration
    assert "after 2 retries (learning rates 1e+10, 5e+09, 2.5e+09)" in text


def _diverging_above(threshold):
    """make_train_step whose loss is NaN at learning rates above ``threshold``."""
    real = sr_training.make_train_step

    def make(model, learning_rate, execution, device):
        step = real(model, learning_rate, execution, device)
        if learning_rate <= threshold:
            return step
        return lambda lr_batch, hr_batch: step(lr_batch, hr_batch) * math.nan

    return make


def test_pretrain_sr_records_retries_and_they_do_not_block_reuse(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(sr_training, "make_train_step", _diverging_above(1e-4))
    images = {f"image_{i}": rng.normal(0, 300, size=(48, 48)).astype(np.float32) for i in (0, 1)}
    np.savez(tmp_path / "train.npz", **images)
    split = {"evaluation": {"sha256": "e"}, "training": [{"sha256": "a"}, {"sha256": "b"}]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    settings = {**vars(_settings(learning_rate=3e-4)), "divergence_lr_factor": 0.25}

    def pretrain(out, retries, *extra):
        return main(
            ["pretrain-sr", "--training", str(tmp_path / "train.npz"), "--split",
             str(tmp_path / "split.json"), "--model", json.dumps(TINY), "--settings",
             json.dumps(settings | {"divergence_retries": retries}), "--out", str(out),
             "--curve", str(tmp_path / "curve.csv"), "--device", "cpu", "--threads", "1",
             *extra]
        )  # fmt: skip

    assert pretrain(tmp_path / "failed.pt", 0) == 3  # numerical failure, nothing written
    assert not (tmp_path / "failed.pt").exists()
    assert pretrain(tmp_path / "sr.pt", 1) == 0
    training = load_sr_checkpoint(tmp_path / "sr.pt")[1]["training"]
    assert training["divergence_retries_used"] == 1
    assert training["learning_rate_used"] == pytest.approx(7.5e-5)
    assert training["settings"]["learning_rate"] == 3e-4  # as configured, for reuse checks
    assert "divergence_retries" not in training["settings"]
    # Reused although the retry settings differ: they do not change a converged result.
    sha = sha256_file(tmp_path / "sr.pt")
    pretrained = [f"--pretrained={tmp_path / 'sr.pt'}", f"--pretrained-sha256={sha}"]
    assert pretrain(tmp_path / "again.pt", 0, *pretrained) == 0
    assert sha256_file(tmp_path / "again.pt") == sha


def _model_with_correction():
    torch.manual_seed(0)
    model = SRDenseNet(**TINY).eval()
    torch.nn.init.normal_(model.reconstruction.weight, std=0.1)
    return model


def test_sr_inference_refuses_nan_weights_input_and_output(rng):
    lr = rng.normal(0, 100, size=(12, 12)).astype(np.float32)
    model = _model_with_correction()
    with torch.no_grad():
        model.blocks[0].layers[0][0].weight[0, 0, 1, 1] = math.nan
    with pytest.raises(FloatingPointError, match="weights of SRDenseNet blocks 1, .* hold NaN"):
        super_resolve(model, lr)
    with pytest.raises(FloatingPointError, match="weights of SRDenseNet"):
        super_resolve_volume(model, lr[None], (1, 48, 48), progress=False)
    model = _model_with_correction()
    bad = lr.copy()
    bad[3, 4] = math.inf
    with pytest.raises(FloatingPointError, match=r"\(12, 12\) plane holding NaN/Inf"):
        super_resolve(model, bad)
    # Finite weights whose output overflows float32: refused, not returned as Inf.
    with torch.no_grad():
        model.reconstruction.weight.fill_(3e38)
    with pytest.raises(FloatingPointError, match=r"produced NaN/Inf on a \(12, 12\) plane"):
        super_resolve(model, lr)
    # The model is left in its ordinary layout after a refused call.
    assert model.reconstruction.weight.is_contiguous()


# ------------------------------------------------------------------------------------------
# Tables


def _write_records(folder, metrics: pd.DataFrame):
    paths = []
    for i, record in enumerate(metrics.to_dict(orient="records")):
        path = folder / f"record_{i}.json"
        path.write_text(json.dumps({k: v for k, v in record.items() if v == v}))  # no NaN keys
        paths.append(path)
    return paths


def test_a_table_from_an_evaluation_record_holding_nan_is_refused_naming_the_file(tmp_path):
    paths = _write_records(tmp_path, _metrics())
    record = json.loads(paths[1].read_text())
    record["ssim"] = math.nan  # json writes NaN; one seed of two, which a mean would skip
    paths[1].write_text(json.dumps(record))
    with pytest.raises(FloatingPointError, match=f"{re.escape(str(paths[1]))}: .* ssim is nan"):
        load_metrics(paths)
    record["ssim"], record["train_seconds"] = 0.9, math.inf
    paths[1].write_text(json.dumps(record))
    out = tmp_path / "tables"
    code = main(["tables", "--metrics", *map(str, paths), "--published", PUBLISHED,
                 "--out-dir", str(out)])  # fmt: skip
    assert code == 3 and not out.exists()


def test_missing_published_numbers_still_print_n_a(tmp_path):
    paths = _write_records(tmp_path, _metrics())
    metrics = load_metrics(paths)  # every record finite: accepted
    published = published_for_volume(load_published(PUBLISHED))
    tables = build_tables(metrics, published)
    write_tables(tables, ["note"], tmp_path / "tables", "volume")
    text = (tmp_path / "tables" / "table4_ours.md").read_text()
    assert "n/a" in text and "nan" not in text.lower().replace("n/a", "")
    summary = build_summary(tmp_path / "tables", tmp_path)
    assert "n/a" in summary and "| nan" not in summary


def test_a_summary_refuses_a_blank_measured_cell_naming_the_table(tmp_path):
    tables = build_tables(_metrics(), load_published(PUBLISHED))
    write_tables(tables, ["note"], tmp_path)
    sr = pd.read_csv(tmp_path / "table_sr_check.csv")
    sr.loc[0, "ssim"] = math.nan
    sr.to_csv(tmp_path / "table_sr_check.csv", index=False)
    with pytest.raises(FloatingPointError, match="table_sr_check.csv: measured column ssim"):
        build_summary(tmp_path, tmp_path)
