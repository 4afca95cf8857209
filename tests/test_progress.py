"""Progress of long loops: a log line now and then (a job's log file shows no tqdm bar), with
how far the loop is and about how long is left; the neural codec's training reports through it."""

import logging

import numpy as np
import torch

from volinr import progress as progress_module
from volinr.data.phantom import synthetic_head_phantom
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.settings import CodecSettings
from volinr.neural_codec.training import train
from volinr.progress import Progress, duration_words


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "volinr.progress"]


def test_a_log_line_says_how_far_the_loop_is_and_what_is_left(caplog):
    caplog.set_level(logging.INFO, logger="volinr.progress")
    with Progress("fit", total=10, initial=2, bar=False, log_every_seconds=0) as progress:
        for _ in range(3):
            progress.advance()
        progress.report(loss=0.25, phase="soft")
    (line,) = _lines(caplog)
    assert line.startswith("fit: iteration 5 of 10 (loss 0.25, phase soft), about ")
    assert line.endswith(" left")


def test_no_more_than_one_line_an_interval(caplog):
    caplog.set_level(logging.INFO, logger="volinr.progress")
    with Progress("fit", total=100, bar=False, log_every_seconds=3600) as progress:
        for _ in range(100):
            progress.advance()
            progress.report(loss=1.0)
    assert _lines(caplog) == []


def test_durations_read_in_the_unit_that_fits():
    assert duration_words(45) == "45 s"
    assert duration_words(12 * 60) == "12 min"
    assert duration_words(3.4 * 3600) == "3.4 h"


def test_the_codec_training_logs_its_warm_up_and_its_main_run(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_EVERY_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="volinr.progress")
    image = synthetic_head_phantom((4, 24, 20), seed=2).voxels[1]
    target = torch.from_numpy(((image - image.min()) / np.ptp(image)).astype(np.float32))
    settings = CodecSettings.make(
        iterations=20, log_every=5, levels=3, warmup_candidates=2, warmup_iterations=5
    )

    def make(seed):
        torch.manual_seed(seed)
        return LatentCodecModel(target.shape, settings)

    train(make, target, 1e-3, settings, seed=0)
    lines = _lines(caplog)
    assert any(line.startswith("neural codec warm-up 1/2: iteration 5 of 5 (") for line in lines)
    assert any(line.startswith("neural codec warm-up 2/2: iteration 5 of 5 (") for line in lines)
    main = [line for line in lines if line.startswith("neural codec: iteration ")]
    assert [line.split()[3] for line in main] == ["10", "15", "20"]
    assert all("bpv " in line for line in main)
    # the last line says where the loop ended, not "about 0 s left"
    assert main[-1].endswith(")") and "left" not in main[-1]


def test_a_siren_fit_logs_its_progress_without_a_bar(caplog, monkeypatch):
    from volinr.training.siren import FitSettings, fit_siren

    monkeypatch.setattr(progress_module, "LOG_EVERY_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="volinr.progress")
    y, x = np.mgrid[-1:1:16j, -1:1:16j]
    target = (1000 * (x**2 + y**2 < 0.6) - 1000).astype(np.float32)
    settings = FitSettings.make(sine_layers=2, iterations=20, width=8, eval_every=10, seed=0)
    fit_siren(target, settings, torch.device("cpu"), progress=False, label="fit lr_L2")
    lines = _lines(caplog)
    assert [line.split(" (")[0] for line in lines] == [
        "fit lr_L2: iteration 10 of 20",
        "fit lr_L2: iteration 20 of 20",
    ]
    assert all("psnr_db " in line and "best_db " in line for line in lines)
