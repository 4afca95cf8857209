"""The report stages' inputs (metrics records, method groups' rows, the published numbers, a
suite's per-dataset tables): each bad one exits 2 naming its file and the problem, before any
table, figure or summary is written (they once gave tracebacks, or a table that set two images'
rows side by side)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT
from test_geometry_admission import refused
from volinr.errors import InputError
from volinr.report.table_io import load_published, load_rows

PUBLISHED = ROOT / "config/published.yaml"


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


ROW = {"method": "zstd", "family": "codec", "kind": "lossless", "setting": "lossless",
       "bits_per_voxel": 8.0, "psnr_8bit_minmax_db": 60.0}  # fmt: skip


def _rows(path: Path, fingerprint: str | None) -> None:
    record = {"group": path.stem, "rows": [ROW]}
    if fingerprint is not None:
        record["image_sha256"] = fingerprint
    path.write_text(json.dumps(record).replace("Infinity", "null"))


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_rate_distortion_refuses_rows_without_an_image_fingerprint_beside_rows_with_one(
    work, caplog, capsys, order
):
    """N4: only files with an image_sha256 were compared, so a file without one (older, or
    edited) let another image's rows into the table."""
    _rows(work / "a.json", "1" * 64)
    _rows(work / "b.json", None)
    argv = ["rate-distortion", "--rows", *(f"{name}.json" for name in order),
            "--published", PUBLISHED, "--out-dir", "tables", "--figure", "rd.png"]  # fmt: skip
    refused(work, caplog, capsys, argv, "b.json", "image_sha256")


def test_rows_all_without_a_fingerprint_still_load(tmp_path):
    _rows(tmp_path / "a.json", None)
    _rows(tmp_path / "b.json", None)
    assert len(load_rows([tmp_path / "a.json", tmp_path / "b.json"])) == 2
    _rows(tmp_path / "c.json", "1" * 64)
    with pytest.raises(InputError, match=r"a\.json: records no image_sha256"):
        load_rows([tmp_path / "a.json", tmp_path / "c.json"])


def _metrics(path: Path, **label) -> None:
    record = {"method": "ours", "layers": 2, "seed": 0, "psnr_8bit_minmax_db": 30.0,
              "iterations": 100, "parameter_count": 17153, "window_minmax": [-1024, 3071],
              "window_tissue": [-1024, 3071], **label}  # fmt: skip
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ({"layers": "two", "seed": "zero"}, "layers is 'two'"),  # N6: once a ValueError
        ({"seed": "zero"}, "seed is 'zero'"),
        ({"layers": 2.5}, "layers is 2.5"),
        ({"seed": True}, "seed is True"),
        ({"layers": None}, "layers is None"),
    ],
)
def test_tables_refuse_a_label_that_is_not_an_integer(work, caplog, capsys, label, problem):
    _metrics(work / "e.json", **label)
    argv = ["tables", "--metrics", "e.json", "--published", PUBLISHED, "--out-dir", "tables"]
    refused(work, caplog, capsys, argv, "e.json", problem, "must be an integer")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("5\n", "must be a mapping"),  # N8: once a TypeError
        ("- a\n- b\n", "must be a mapping"),
        ("", "must be a mapping"),
        ("siren_params: {}\n", "lack ours"),
        (
            "siren_params: {}\nours: 5\nbaseline_full_res_siren: {}\n"
            "other_methods_best_psnr_db: {}\n",
            "ours must be a mapping",
        ),
        (
            "siren_params: {}\nours: {best_psnr_db: [1, 2]}\nbaseline_full_res_siren: {}\n"
            "other_methods_best_psnr_db: {}\n",
            "ours.best_psnr_db must be a mapping",
        ),
    ],
)
def test_tables_refuse_published_numbers_that_are_not_a_mapping(
    work, caplog, capsys, text, problem
):
    _metrics(work / "e.json")
    (work / "pub.yaml").write_text(text)
    argv = ["tables", "--metrics", "e.json", "--published", "pub.yaml", "--out-dir", "tables"]
    refused(work, caplog, capsys, argv, "pub.yaml", problem)


def test_the_repositorys_published_numbers_still_load():
    assert set(load_published(PUBLISHED)["ours"]["best_psnr_db"]) == {2, 3, 4}


SUITE = ["suite-report", "--dataset", "one", "t1", "head", "no-paper", "CC0",
         "--out-dir", "suite", "--figure", "suite.png", "--summary", "suite.md"]  # fmt: skip
BD_HEADER = "method,family,anchor,psnr,bd_rate_percent,bd_psnr_db\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not a readable CSV"),  # N7: once pandas' EmptyDataError
        ("a,b\n1,2\n", "no column method"),  # N7b: once KeyError 'psnr'
        (BD_HEADER + "m,neural codec,jpeg2000,psnr_8bit_minmax_db,lots,1\n", "'lots'"),
        (BD_HEADER + ",neural codec,jpeg2000,psnr_8bit_minmax_db,1,1\n", "empty cell"),
        ('"unclosed\n', "table_bd_rate"),
        (b"\xff\xfe\x00\x01".decode("latin-1"), "table_bd_rate"),
    ],
)
def test_suite_report_refuses_a_table_it_cannot_read_naming_the_dataset_and_file(
    work, caplog, capsys, text, problem
):
    (work / "t1").mkdir()
    (work / "t1/table_bd_rate.csv").write_text(text, encoding="latin-1")
    refused(work, caplog, capsys, SUITE, "table_bd_rate.csv", "dataset one", problem)


def test_suite_report_refuses_a_layer_count_that_is_not_whole(work, caplog, capsys):
    (work / "t1").mkdir()
    (work / "t1/table_bd_rate.csv").write_text(BD_HEADER)
    (work / "t1/table6_side_by_side.csv").write_text(
        "quantity,layers,ours_measured,baseline_measured\nbest PSNR,2.5,30,29\n"
    )
    argv = [*SUITE]
    argv[5] = "paper"
    refused(work, caplog, capsys, argv, "table6_side_by_side.csv", "layers", "whole number")
