"""Every result file records the settings that made it, the package versions, the git commit
and the device: a ``provenance`` key in JSON, ``<file>.provenance`` beside CSV tables and
containers, a footer line under Markdown, a text chunk in PNG figures."""

import json
import re

import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import ROOT
from volinr import provenance
from volinr.cli import main
from volinr.io import load_array
from volinr.report import figure_common, paper_figures, table_io

KEYS = {"config", "versions", "git_commit", "device"}


def check_block(block: dict, command: str | None = None) -> None:
    assert set(block) == KEYS, sorted(block)
    assert block["versions"]["volinr"] and block["versions"]["torch"] == torch.__version__
    commit = block["git_commit"]
    if (ROOT / ".git").exists():  # the package runs from this checkout
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit), commit
    else:
        assert commit
    assert block["device"]["type"] in ("cpu", "cuda") and block["device"]["name"]
    if command is not None:
        assert block["config"]["command"] == command, block["config"]


def sidecar(path) -> dict:
    return json.loads(provenance.sidecar_path(path).read_text())


def png_block(path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text[figure_common.PNG_KEY])


def test_stages_run_by_hand_record_their_provenance(tmp_path):
    def run(*argv: str) -> None:
        assert main([str(a) for a in argv]) == 0, argv

    hr, lr = tmp_path / "hr.npy", tmp_path / "lr.npy"
    run("prepare", "--source", "pydicom:CT_small.dcm", "--out", hr)
    run("downsample", "--input", hr, "--factor", "4", "--out", lr)
    # the downsampled array's block is its own, not the one copied from its input's sidecar
    check_block(load_array(hr)[1]["provenance"], "prepare")
    block = load_array(lr)[1]["provenance"]
    check_block(block, "downsample")
    assert block["config"]["factor"] == 4

    fit = tmp_path / "fit"
    run("fit", "--target", lr, "--sine-layers", "2", "--width", "16", "--iterations", "2",
        "--eval-every", "1", "--weights", fit / "siren.pt", "--record", fit / "fit.json",
        "--curve", fit / "curve.csv", "--device", "cpu", "--threads", "1")  # fmt: skip
    record = json.loads((fit / "fit.json").read_text())
    check_block(record["provenance"], "fit")
    assert record["provenance"]["device"]["threads"] == 1
    assert record["provenance"]["config"]["sine_layers"] == 2
    assert not {"device", "versions", "git_commit"} & set(record)  # one block, not loose keys
    assert sidecar(fit / "curve.csv") == record["provenance"]

    decoded = tmp_path / "decoded.npy"
    run("decode", "--weights", fit / "siren.pt", "--shape", "128", "128",
        "--like", hr.with_suffix(".json"), "--out", decoded, "--device", "cpu")  # fmt: skip
    check_block(load_array(decoded)[1]["provenance"], "decode")

    metrics = tmp_path / "metrics.json"
    run("evaluate", "--reference", hr, "--reconstruction", decoded,
        "--label", '{"method": "ours", "layers": 2, "seed": 0}', "--fit-record", fit / "fit.json",
        "--per-slice", tmp_path / "slices.csv", "--out", metrics)  # fmt: skip
    result = json.loads(metrics.read_text())
    check_block(result["provenance"], "evaluate")
    assert result["device"] == record["provenance"]["device"]["name"]
    assert sidecar(tmp_path / "slices.csv") == result["provenance"]
    assert pd.read_csv(tmp_path / "slices.csv")["method"].eq("ours").all()  # plain CSV still

    container = tmp_path / "siren.volinr"
    run("compress", "--weights", fit / "siren.pt", "--quantization", "q8", "--out", container)
    check_block(sidecar(container), "compress")
    # the rated bytes hold what the decoder needs, not the provenance
    assert b"git_commit" not in container.read_bytes()


def test_tables_and_figures_carry_the_block(tmp_path):
    block = provenance.record({"command": "tables", "metrics": ["a.json"]})
    table = pd.DataFrame({"layers": [2, 3], "psnr": [30.0, 31.5]})
    table_io.TITLES["table_test"] = "Test table"
    try:
        table_io.write_tables({"table_test": table}, ["a note"], tmp_path, "slice", block)
        table_io.write_tables({"table_test": table}, ["a note"], tmp_path / "bare")
    finally:
        del table_io.TITLES["table_test"]
    assert sidecar(tmp_path / "table_test.csv") == block
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "table_test.csv"), table)
    text = (tmp_path / "table_test.md").read_text()
    assert provenance.from_markdown(text) == block
    assert f"\n\n{provenance.FOOTER_PREFIX}`" in text  # a paragraph of its own, not a table row
    check_block(block, "tables")
    check_block(sidecar(tmp_path / "bare/table_test.csv"))  # no settings given: still a block

    curve = tmp_path / "curve.csv"
    curve.write_text("step,monitor_psnr_db,monitor_bicubic_psnr_db\n1,30,29\n2,31,29\n")
    with figure_common.recording(block):
        paper_figures.sr_training_figure(curve, tmp_path / "with.png")
    paper_figures.sr_training_figure(curve, tmp_path / "without.png")
    assert png_block(tmp_path / "with.png") == block
    check_block(png_block(tmp_path / "without.png"))


SNAKEMAKE_OWN = ("logs", "benchmarks")  # Snakemake's logs and timings, not volinr's results


@pytest.mark.slow
def test_every_result_of_the_tiny_workflow_records_its_provenance(tiny_run):
    seen = {}
    for path in sorted(tiny_run.rglob("*")):
        relative = path.relative_to(tiny_run)
        if not path.is_file() or relative.parts[0] in SNAKEMAKE_OWN:
            continue
        name = path.name
        if name.endswith(provenance.SIDECAR_SUFFIX) or name.endswith(".html"):
            continue
        if name == ".snakemake_timestamp":  # Snakemake's own, in folder outputs
            continue
        kind = "".join(path.suffixes[-1:])
        if kind == ".json":
            block = json.loads(path.read_text())["provenance"]
        elif kind in (".csv", ".volinr", ".bin", ".lr", ".vnc"):  # a method's point files too
            block = sidecar(path)
        elif kind == ".md":
            block = provenance.from_markdown(path.read_text())
        elif kind == ".png":
            block = png_block(path)
        elif kind == ".npy":  # arrays: their .json sidecar
            block = json.loads(path.with_suffix(".json").read_text())["provenance"]
        elif kind == ".npz":  # the SR training set: its split record
            block = json.loads((path.parent / "split.json").read_text())["provenance"]
        elif kind == ".pt" and relative.parts[0] == "fits":  # SIREN weights: the fit record
            block = json.loads((path.parent / "fit.json").read_text())["provenance"]
        elif kind == ".pt":  # the SR checkpoint carries its training record
            block = torch.load(path, weights_only=True)["training"]["provenance"]
        else:
            pytest.fail(f"{relative}: a result file of a kind this audit does not know")
        check_block(block)
        assert block["config"].get("command"), relative  # the stage's arguments
        seen[kind] = seen.get(kind, 0) + 1
    assert {".json", ".csv", ".md", ".png", ".npy", ".pt", ".volinr"} <= set(seen), seen
    fit = json.loads((tiny_run / "fits/lr/L2_s0/fit.json").read_text())["provenance"]
    assert fit["config"]["command"] == "fit" and fit["config"]["iterations"] == 12
    summary = provenance.from_markdown((tiny_run / "summary.md").read_text())
    assert summary["config"]["command"] == "summary"
