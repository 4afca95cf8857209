"""Non-finite numbers in and out: a NaN tissue window is refused at the command line, and an
infinite PSNR (identical images) is written as strict JSON and read back as infinity by every
reader (tables, summary, figures), whose notes say what it means."""

import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest

from volinr.cli import main
from volinr.errors import InputError
from volinr.io import INFINITE_VALUES_KEY, read_json, save_array, write_json
from volinr.report.paper_tables import build_tables
from volinr.report.rd_tables import versus_codec
from volinr.report.summary import build_summary
from volinr.report.table_io import (
    CODEC_LOSSLESS_NOTE,
    LOSSLESS_NOTE,
    infinity_notes,
    load_metrics,
    load_published,
)

PUBLISHED = "config/published.yaml"


def strict_loads(text):
    """json.loads that refuses NaN and Infinity, as a strict JSON reader does."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# --- strict JSON -----------------------------------------------------------------------------


def test_infinities_are_written_as_null_and_read_back(tmp_path):
    path = tmp_path / "record.json"
    data = {"psnr_db": math.inf, "gain/db": -math.inf, "rows": [{"psnr": np.float64(np.inf)}]}
    write_json(path, data | {"ssim": 1.0})
    text = strict_loads(path.read_text())
    assert text["psnr_db"] is None and text["rows"][0]["psnr"] is None
    assert text[INFINITE_VALUES_KEY] == {
        "/psnr_db": "inf",
        "/gain~1db": "-inf",
        "/rows/0/psnr": "inf",
    }
    assert read_json(path) == data | {"ssim": 1.0}


def test_a_nan_is_never_written(tmp_path):
    path = tmp_path / "record.json"
    with pytest.raises(FloatingPointError, match="/rows/1 is NaN"):
        write_json(path, {"rows": [1.0, float("nan")]})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_a_wrong_list_of_infinite_values_is_refused(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"psnr_db": 31.0, INFINITE_VALUES_KEY: {"/psnr_db": "inf"}}))
    with pytest.raises(InputError, match="names '/psnr_db' wrongly"):
        read_json(path)
    path.write_text(json.dumps({"psnr_db": None, INFINITE_VALUES_KEY: ["/psnr_db"]}))
    with pytest.raises(InputError, match="is not an object"):
        read_json(path)


# --- volinr evaluate -------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path, rng):
    reference = rng.integers(-1024, 2000, size=(32, 32)).astype(np.int16)
    noisy = reference + rng.normal(0, 20, reference.shape).astype(np.float32)
    save_array(tmp_path / "ref.npy", reference, {"units": "HU"})
    save_array(tmp_path / "same.npy", reference.astype(np.float32), {"units": "HU"})
    save_array(tmp_path / "noisy.npy", noisy, {"units": "HU"})
    return tmp_path


def run_cli(caplog, capsys, args) -> tuple[int, str]:
    """Exit status and error messages of one command (argparse's refusals exit 2 through
    SystemExit and print to stderr)."""
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        try:
            code = main(args)
        except SystemExit as exit_:
            code = exit_.code
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    return code, "\n".join(errors + [capsys.readouterr().err])


def evaluate(caplog, capsys, folder, reconstruction, *extra):
    out = folder / "out" / "metrics.json"
    code, errors = run_cli(
        caplog,
        capsys,
        ["evaluate", "--reference", str(folder / "ref.npy"), "--reconstruction",
         str(folder / reconstruction), "--label", '{"method": "x"}', "--out", str(out), *extra],
    )  # fmt: skip
    return code, errors, out


@pytest.mark.parametrize(
    "window",
    [("nan", "nan"), ("nan", "500"), ("-1024", "inf"), ("-1024", "1e400")],
    ids=["nan-nan", "nan-low", "inf-high", "overflowing-high"],
)
def test_a_non_finite_tissue_window_is_refused(caplog, capsys, images, window):
    """Before: every image scored psnr_8bit_tissue_db Infinity with exit 0 (a NaN window maps
    both images to the same 8-bit values)."""
    code, errors, out = evaluate(caplog, capsys, images, "noisy.npy", "--tissue-window", *window)
    assert code == 2
    if math.isinf(float(window[1])):  # refused by the option's type, before the stage runs
        assert f"argument --tissue-window: must be finite (or nan), got '{window[1]}'" in errors
    else:
        assert f"--tissue-window {float(window[0]):g} {float(window[1]):g}" in errors
        assert "low must be a finite number" in errors
    assert not out.parent.exists()


def test_a_nan_high_is_the_image_maximum(caplog, capsys, images):
    code, errors, out = evaluate(
        caplog, capsys, images, "noisy.npy", "--tissue-window", "-1024", "nan"
    )
    assert code == 0, errors
    record = read_json(out)
    assert record["window_tissue"] == [-1024.0, float(np.load(images / "ref.npy").max())]
    assert math.isfinite(record["psnr_8bit_tissue_db"])


def test_identical_images_give_strict_json_with_the_reason(caplog, capsys, images):
    code, errors, out = evaluate(caplog, capsys, images, "same.npy")
    assert code == 0, errors
    text = strict_loads(out.read_text())  # before: bare Infinity, which is not JSON
    psnrs = ["psnr_8bit_minmax_db", "psnr_8bit_tissue_db", "psnr_native_db"]
    assert all(text[key] is None for key in psnrs)
    assert sorted(text[INFINITE_VALUES_KEY]) == sorted(f"/{key}" for key in psnrs)
    assert "MSE 0" in text["psnr_infinite_reason"]
    assert all(read_json(out)[key] == math.inf for key in psnrs)


# --- readers ---------------------------------------------------------------------------------


def _records(seeds=(0, 1), lossless=True):
    """Evaluation records of every method; the 2-layer baseline fit is lossless."""
    rows = []
    for method in ("ours", "baseline"):
        for layers in (2, 3):
            for seed in seeds:
                exact = lossless and method == "baseline" and layers == 2
                psnr = math.inf if exact else 30.0 + layers + seed
                rows.append(
                    {"method": method, "layers": layers, "seed": seed,
                     "psnr_8bit_minmax_db": psnr, "psnr_8bit_tissue_db": psnr,
                     "psnr_native_db": psnr, "ssim": 1.0 if exact else 0.9,
                     "parameter_count": 100 * layers, "iterations": 10,
                     "fit_best_psnr_db": 40.0, "fit_final_loss": 1e-4, "train_seconds": 5.0,
                     "seconds_per_50k_iterations_extrapolated": 2500.0,
                     "peak_memory_kb": 900.0, "memory_kind": "cpu_peak_rss_increase",
                     "device": "CPU", "compression_rate_paper": 3.6,
                     "compression_rate_16bit": 7.2, "compression_rate_16bit_with_sr": 0.5,
                     "bits_per_voxel": 2.2, "window_minmax": [-3024, 1468],
                     "window_tissue": [-1024, 1468]}
                )  # fmt: skip
    for method, psnr in (("sr", 33.0), ("lanczos", 32.5), ("bicubic", 32.2)):
        rows.append(
            {"method": f"true LR + {method}", "ssim": 0.95, "psnr_8bit_minmax_db": psnr,
             "psnr_8bit_tissue_db": psnr, "psnr_native_db": psnr, "bits_per_voxel": 0.3}
        )  # fmt: skip
    return rows


def _write(folder, rows):
    paths = []
    for index, row in enumerate(rows):
        write_json(folder / f"record_{index}.json", row)
        paths.append(folder / f"record_{index}.json")
    return paths


def test_tables_and_summary_show_a_lossless_psnr_as_inf_and_say_why(tmp_path):
    """Before: the tables refused the record (`measured value ... is inf`), exit 3."""
    paths = _write(tmp_path, _records())
    metrics = load_metrics(paths)
    baseline = metrics[(metrics["method"] == "baseline") & (metrics["layers"] == 2)]
    assert (baseline["psnr_8bit_minmax_db"] == math.inf).all()
    out = tmp_path / "tables"
    code = main(["tables", "--metrics", *map(str, paths), "--published", PUBLISHED,
                 "--out-dir", str(out)])  # fmt: skip
    assert code == 0
    table5 = pd.read_csv(out / "table5_baseline.csv").set_index("layers")
    assert table5.loc[2, "best_psnr_db_ours"] == math.inf
    assert math.isfinite(table5.loc[3, "best_psnr_db_ours"])
    markdown = (out / "table5_baseline.md").read_text()
    assert LOSSLESS_NOTE in markdown and re.search(r"\|\s+inf\s+\|", markdown)
    summary = build_summary(out, tmp_path)
    assert LOSSLESS_NOTE in summary  # under Table 6, whose 2-layer baseline PSNR is inf


def test_no_infinity_no_note(tmp_path):
    tables = build_tables(load_metrics(_write(tmp_path, _records(lossless=False))),
                          load_published(PUBLISHED))  # fmt: skip
    assert infinity_notes(tables.values()) == []


def test_a_nan_or_an_infinite_time_is_still_refused(tmp_path):
    rows = _records()
    rows[0]["train_seconds"] = math.inf
    paths = _write(tmp_path, rows)
    with pytest.raises(FloatingPointError, match="train_seconds is inf"):
        load_metrics(paths)
    rows[0]["train_seconds"], rows[0]["psnr_8bit_minmax_db"] = 5.0, -math.inf
    with pytest.raises(FloatingPointError, match="psnr_8bit_minmax_db is -inf"):
        load_metrics(_write(tmp_path, rows))


def test_the_codec_comparison_says_what_its_infinities_mean():
    table = pd.DataFrame(
        {
            "method": ["jpeg2000"] * 3 + ["SIREN"],
            "setting": ["0.5", "1", "lossless", "float32"],
            "family": ["codec"] * 3 + ["siren"],
            "bits_per_voxel": [0.5, 1.0, 3.0, 4.0],
            "psnr_8bit_minmax_db": [40.0, 45.0, math.inf, 35.0],
            "ssim": [0.9, 0.95, 1.0, 0.9],
        }
    )
    versus = versus_codec(table)
    assert versus["jpeg2000_psnr_at_same_rate_db"].iloc[0] == math.inf  # 4 bits >= lossless
    assert infinity_notes([versus]) == [CODEC_LOSSLESS_NOTE]
    assert infinity_notes([table]) == [LOSSLESS_NOTE]


def test_figures_mark_an_infinite_psnr_instead_of_dropping_it(tmp_path):
    from volinr.report import figure_common, rd_figure

    table = pd.DataFrame(
        {
            "method": ["jpeg2000"] * 3,
            "setting": ["0.5", "1", "lossless"],
            "family": ["codec"] * 3,
            "bits_per_voxel": [0.5, 1.0, 3.0],
            "psnr_8bit_minmax_db": [40.0, 45.0, math.inf],
            "psnr_native_db": [38.0, 43.0, math.inf],
            "ssim": [0.9, 0.95, 1.0],
        }
    )
    fig, ax = figure_common.plt.subplots()
    ax.plot([0.5, 1.0], [40.0, 45.0])
    assert figure_common.mark_lossless(ax, table["bits_per_voxel"], table["psnr_8bit_minmax_db"])
    marked = ax.lines[-1]
    assert list(marked.get_xdata()) == [3.0] and marked.get_ydata()[0] == ax.get_ylim()[1]
    figure_common.plt.close(fig)
    assert (
        figure_common.db_label(math.inf) == "∞ dB (lossless)"
        and figure_common.db_label(31.234) == "31.23 dB"
    )
    rd_figure.rate_distortion_figure(table, 100, tmp_path / "rd.png")  # no error, no warning
    assert (tmp_path / "rd.png").stat().st_size > 0


# --- volinr sr-dataset -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        # refused by the options' types before the stage runs
        (["--max-correlation", "nan"], "argument --max-correlation: must be a finite number"),
        (["--max-correlation", "inf"], "argument --max-correlation: must be a finite number"),
        (["--max-correlation", "0"], "--max-correlation 0: must be in (0, 1]"),
        (["--exclude-slices", "10", "5"], "--exclude-slices 10 5 --margin 0: need"),
        (["--exclude-slices", "2", "6", "--margin", "-3"], "argument --margin: must be 0 or"),
    ],
    ids=["nan", "inf", "zero", "reversed-slab", "negative-margin"],
)
def test_sr_dataset_refuses_settings_that_would_let_the_evaluated_image_train(
    caplog, capsys, images, args, message
):
    """Before: `--max-correlation nan` or `inf` accepted every frame, a re-encoding of the
    evaluation image included (a NaN threshold compares False)."""
    out = images / "out"
    code, errors = run_cli(
        caplog,
        capsys,
        ["sr-dataset", "--eval", str(images / "ref.npy"), "--volume", str(images / "ref.npy"),
         "--out", str(out / "t.npz"), "--split", str(out / "split.json"), *args],
    )  # fmt: skip
    assert code == 2 and message in errors
    assert not out.exists()
