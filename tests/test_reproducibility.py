"""A fixed seed gives bitwise-identical weights, reconstructions and tables on a CPU."""

import numpy as np
import pandas as pd
import pytest
import torch

from volinr.cli import main
from volinr.io import load_array
from volinr.provenance import determinism
from volinr.training.siren import FitSettings, fit_siren

# Columns that are timings or say where a run happened, not what it computed.
NOT_RESULTS = ("seconds", "memory", "speed")


def _phantom(size=24):
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    return (1000 * (x**2 + y**2 < 0.6) - 1000 + 200 * np.sin(6 * x)).astype(np.float32)


def test_a_fixed_seed_gives_bitwise_identical_weights_on_cpu():
    target = _phantom()
    settings = FitSettings.make(sine_layers=2, iterations=20, width=16, eval_every=5, seed=3)
    first = fit_siren(target, settings, torch.device("cpu"), progress=False)
    second = fit_siren(target, settings, torch.device("cpu"), progress=False)
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    other = fit_siren(target, FitSettings(**{**vars(settings), "seed": 4}), torch.device("cpu"))
    assert not torch.equal(other.model.output.weight, first.model.output.weight)


def test_a_fit_split_between_two_workers_is_bitwise_repeatable():
    torch.set_num_threads(2)  # two workers in the blocked step (reset by conftest)
    target = _phantom(32)
    settings = FitSettings.make(
        sine_layers=3, iterations=15, width=16, eval_every=5, batch_size=600
    )
    first = fit_siren(target, settings, torch.device("cpu"), progress=False)
    second = fit_siren(target, settings, torch.device("cpu"), progress=False)
    assert torch.get_num_threads() == 2
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name


def _results_only(table: pd.DataFrame) -> pd.DataFrame:
    """Rows and columns that are computed results (Table 6 has a row a quantity)."""
    if "quantity" in table.columns:
        timing = table["quantity"].str.contains("|".join(NOT_RESULTS))
        table = table[~timing].reset_index(drop=True)
    return table


def _pipeline_by_hand(folder):
    """prepare -> downsample -> fit (LR and full resolution) -> decode -> upsample ->
    evaluate -> tables, each a `volinr` subcommand as the workflow calls it."""
    f = {name: str(folder / name) for name in (
        "hr.npy", "lr.npy", "lr_fit.pt", "lr_fit.json", "lr_curve.csv", "hr_fit.pt",
        "hr_fit.json", "hr_curve.csv", "lr_rec.npy", "ours.npy", "base.npy", "ours.metrics.json",
        "base.metrics.json", "ref.npy", "ref.metrics.json", "tables")}  # fmt: skip
    common = ["--threads", "1", "--device", "cpu"]
    steps = [
        ["prepare", "--source", "pydicom:CT_small.dcm", "--out", f["hr.npy"]],
        ["downsample", "--input", f["hr.npy"], "--factor", "4", "--out", f["lr.npy"]],
        ["fit", "--target", f["lr.npy"], "--sine-layers", "2", "--iterations", "8",
         "--eval-every", "4", "--width", "16", "--weights", f["lr_fit.pt"],
         "--record", f["lr_fit.json"], "--curve", f["lr_curve.csv"], *common],
        ["fit", "--target", f["hr.npy"], "--sine-layers", "2", "--iterations", "8",
         "--eval-every", "4", "--width", "16", "--batch-size", "4096",
         "--weights", f["hr_fit.pt"], "--record", f["hr_fit.json"], "--curve", f["hr_curve.csv"],
         *common],
        ["decode", "--weights", f["lr_fit.pt"], "--out", f["lr_rec.npy"], *common],
        ["upsample", "--input", f["lr_rec.npy"], "--method", "lanczos", "--reference",
         f["hr.npy"], "--out", f["ours.npy"], *common],
        ["decode", "--weights", f["hr_fit.pt"], "--out", f["base.npy"], *common],
        ["evaluate", "--reference", f["hr.npy"], "--reconstruction", f["ours.npy"], "--label",
         '{"method": "ours", "layers": 2, "seed": 0}', "--fit-record", f["lr_fit.json"],
         "--out", f["ours.metrics.json"]],
        ["evaluate", "--reference", f["hr.npy"], "--reconstruction", f["base.npy"], "--label",
         '{"method": "baseline", "layers": 2, "seed": 0}', "--fit-record", f["hr_fit.json"],
         "--out", f["base.metrics.json"]],
        ["upsample", "--input", f["lr.npy"], "--method", "lanczos", "--reference", f["hr.npy"],
         "--out", f["ref.npy"], *common],
        ["evaluate", "--reference", f["hr.npy"], "--reconstruction", f["ref.npy"], "--label",
         '{"method": "true LR + lanczos"}', "--stored-array", f["lr.npy"], "--out",
         f["ref.metrics.json"]],
        ["tables", "--metrics", f["ours.metrics.json"], f["base.metrics.json"],
         f["ref.metrics.json"], "--published",
         "config/published.yaml", "--out-dir", f["tables"]],
    ]  # fmt: skip
    for argv in steps:
        assert main(argv) == 0, argv
    return folder


@pytest.fixture
def two_runs(tmp_path, monkeypatch):
    from conftest import ROOT

    monkeypatch.chdir(ROOT)  # the published numbers' path is relative to the repository
    return [_pipeline_by_hand(tmp_path / name) for name in ("first", "second")]


def test_two_runs_give_bitwise_identical_weights_reconstructions_and_tables(two_runs):
    first, second = two_runs
    for name in ("lr_fit.pt", "hr_fit.pt"):
        a = torch.load(first / name, weights_only=True)["state_dict"]
        b = torch.load(second / name, weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    for name in ("lr_rec.npy", "ours.npy", "base.npy"):
        assert np.array_equal(load_array(first / name)[0], load_array(second / name)[0]), name
    tables = sorted(p.name for p in (first / "tables").glob("*.csv"))
    assert tables, "no table was written"
    for name in tables:
        a, b = (_results_only(pd.read_csv(run / "tables" / name)) for run in (first, second))
        keep = [c for c in a.columns if not any(word in c for word in NOT_RESULTS)]
        assert keep, name
        pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=True, obj=name)


def test_a_fit_record_states_its_determinism(two_runs):
    import json

    record = json.loads((two_runs[0] / "lr_fit.json").read_text())
    assert record["provenance"]["device"]["determinism"] == determinism(torch.device("cpu"))
    assert "bitwise" in determinism(torch.device("cpu"))
    assert "not bitwise" in determinism(torch.device("cuda"))
