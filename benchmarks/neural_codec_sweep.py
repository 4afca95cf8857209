"""The neural codec's rate-distortion sweep on the embedded slice, through the pipeline's own
stages (a dev benchmark: more iterations than the default run affords on a CPU).

It runs what the workflow runs, by hand: ``volinr prepare`` (the slice), ``volinr rd`` for
each lambda of the neural codec (one process each, in parallel) and for the classical anchors,
then ``volinr rate-distortion`` over all the rows; and writes a Markdown summary of the neural
codec's points, its BD-rates and its comparison with the strongest anchor. Rows already in
``--work-dir`` are reused, so a sweep can be resumed or extended.

    python benchmarks/neural_codec_sweep.py --lambdas 0.003 0.001 0.0003 --iterations 1500 \
        --work-dir /tmp/sweep --out benchmarks/results/neural_codec_slice.md
    [--set context_coarser_levels=6 ...]   (settings over the defaults, values as JSON)

The lambdas and every codec setting are chosen before looking at this image (the codec's
defaults were tuned on the phantom and SR-training frames: neural_codec_tuning.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from volinr.provenance import device_info, git_commit
from volinr.settings import section

log = logging.getLogger("neural_codec_sweep")
ROOT = Path(__file__).resolve().parents[1]
SOURCE = "pydicom-data:693_UNCR.dcm"
ANCHORS = ("jpeg2000", "hevc", "av1", "jpegxl", "htj2k")


def volinr(*args: str) -> list[str]:
    return [sys.executable, "-m", "volinr", *args]


def rd_command(work: Path, family: str, group: str, settings: dict) -> list[str]:
    return volinr(
        "rd", "--method", family, "--group", group, "--image", str(work / "eval.npy"),
        "--settings", json.dumps(settings), "--inputs", "{}", "--tissue-window", "-1024", "nan",
        "--files-dir", str(work / "rd" / family / group),
        "--out", str(work / "rd" / family / f"{group}.json"), "--threads", "1",
    )  # fmt: skip


def run_all(commands: list[tuple[Path, list[str]]]) -> None:
    """Run the commands whose output is missing, all at once; fail if any fails."""
    running = []
    for out, command in commands:
        if out.exists():
            log.info("reusing %s", out)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        handle = open(out.with_suffix(".log"), "w")  # noqa: SIM115  (closed below)
        running.append((out, handle, subprocess.Popen(command, stderr=handle)))
    for out, handle, process in running:
        code = process.wait()
        handle.close()
        if code != 0:
            raise SystemExit(f"{out}: failed (exit {code}); see {out.with_suffix('.log')}")


def against_siren(rd: pd.DataFrame, ours: pd.DataFrame) -> list[str]:
    """Each point against the cheapest SIREN point (any fit, any weight format) at least as
    good in 8-bit PSNR: how many times its bits that SIREN point needs."""
    sirens = rd[rd["family"] == "siren"]
    if sirens.empty:
        return []
    rows = []
    for _, point in ours.iterrows():
        good = sirens[sirens["psnr_8bit_minmax_db"] >= point["psnr_8bit_minmax_db"]]
        cheapest = good.loc[good["bits_per_voxel"].idxmin()] if len(good) else None
        rows.append(
            {
                "method": point["method"],
                "setting": point["setting"],
                "bits_per_voxel": point["bits_per_voxel"],
                "psnr_8bit_minmax_db": point["psnr_8bit_minmax_db"],
                "cheapest_siren_at_least_as_good": None
                if cheapest is None
                else f"{cheapest['method']} {cheapest['setting']}",
                "its_bits_per_voxel": None if cheapest is None else cheapest["bits_per_voxel"],
                "siren_bits_over_ours": None
                if cheapest is None
                else cheapest["bits_per_voxel"] / point["bits_per_voxel"],
            }
        )
    return [
        "## Against the SIREN (the paper's method and the HR baseline)",
        "",
        "The cheapest SIREN point (any fit, any weight format) with at least the same 8-bit "
        "PSNR; empty where no SIREN point reaches it.",
        "",
        pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"),
        "",
    ]


def loss_curves_figure(rows: list[Path], out: Path) -> None:
    """Each point's training curve (the step's loss and, from the soft phase on, the loss
    with hard-rounded latents, the one that picks the coded state), one panel a method.
    Makes ``out``'s folder, where the summary goes too (a sweep once crashed there, after
    its hours of training)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    frames = []
    for path in rows:
        point = json.loads(path.read_text())["rows"][0]
        curve = pd.DataFrame(point["training_curve"], columns=["iteration", "step", "rounded"])
        curve = curve.melt("iteration", var_name="loss", value_name="value").dropna()
        frames.append(curve.assign(method=point["method"], setting=f"lambda {point['lambda']:g}"))
    data = pd.concat(frames, ignore_index=True)
    grid = sns.relplot(data=data, x="iteration", y="value", hue="setting", style="loss",
                       col="method", kind="line", height=3.2, aspect=1.4, lw=0.9)  # fmt: skip
    grid.set(yscale="log", ylabel="MSE + lambda x bits per voxel")
    grid.savefig(out, dpi=110)
    plt.close(grid.figure)


def curves_section(curves: str) -> list[str]:
    return [
        "## Training curves",
        "",
        f"![loss curves]({curves}): each point's loss at its sampled iterations (solid: the "
        "step's, on the noisy or soft-rounded latents; dashed: with hard-rounded latents, from "
        "the soft phase on; the best dashed value's state is the one coded).",
        "",
    ]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def summary(tables: Path, rows: list[Path], title: str, how: str, curves: str = "") -> str:
    rd = pd.read_csv(tables / "table_rate_distortion.csv")
    bd = pd.read_csv(tables / "table_bd_rate.csv")
    best = pd.read_csv(tables / "table_vs_best_anchor.csv")
    ours = rd[rd["family"] == "neural codec"]
    points = [json.loads(p.read_text())["rows"][0] for p in rows]
    bits = pd.DataFrame(
        {
            "method": [p["method"] for p in points],
            "lambda": [p["lambda"] for p in points],
            "parameter_bits": [p["parameter_bits"] for p in points],
            "latent_bits": [p["latent_bits"] for p in points],
            "header_and_framing_bits": [p["header_and_framing_bits"] for p in points],
            "rate_estimate_error": [p["rate_estimate_error"] for p in points],
            "decode_macs_per_voxel": [p["decode_macs_per_voxel"] for p in points],
            "training_seconds": [p["training_seconds"] for p in points],
            "decode_seconds": [p["decode_seconds"] for p in points],
        }
    ).sort_values(["method", "lambda"], ascending=[True, False])
    columns = ["method", "setting", "bits_per_voxel", "psnr_8bit_minmax_db", "psnr_native_db"]
    columns.append("ssim")
    if "training_flag" in ours:  # what went wrong in training (`volinr.report.rd_tables`)
        columns.append("training_flag")
    versus = best[best["method"].str.startswith("neural codec")]
    bd_ours = bd[bd["method"].str.startswith("neural codec")].fillna({"bd_note": ""})
    # the commit that made the tables (a workflow run's), not the one summarising them
    provenance = tables / "table_rate_distortion.csv.provenance"
    commit = json.loads(provenance.read_text())["git_commit"] if provenance.exists() else None
    trained = sorted({p.get("provenance", {}).get("git_commit") for p in map(_json, rows)} - {None})
    if trained and trained != [commit]:
        commit = f"{commit} (the tables; the points' `volinr rd` at {', '.join(trained)})"
    return "\n".join(
        [
            f"# {title}",
            "",
            f"{how} On {device_info(None)['name']}, commit {commit or git_commit()}. Every rate "
            "is 8 x a real file's bytes / voxels; every PSNR is measured on the image decoded "
            "from that file (the pipeline's `volinr rd`). Codec defaults tuned only on the "
            "phantom and SR-training frames.",
            "",
            "## Points",
            "",
            ours[columns].to_markdown(index=False, floatfmt=".4g"),
            "",
            "## Where the bits go",
            "",
            "Parameters: the quantised synthesis, upsampling and entropy networks; latents: the "
            "range-coded grids; rate estimate error: the entropy model's estimate of the "
            "payload against the coded payload (header aside).",
            "",
            bits.to_markdown(index=False, floatfmt=".4g"),
            "",
            "## Against the strongest classical codec at each point's rate",
            "",
            versus.to_markdown(index=False, floatfmt=".4g"),
            "",
            *against_siren(rd, ours),
            "## Bjontegaard delta rate (negative: fewer bits than the anchor)",
            "",
            bd_ours.to_markdown(index=False, floatfmt=".4g"),
            "",
            *(curves_section(curves) if curves else []),
        ]
    )


def summarise_run(args) -> None:
    """The summary of a workflow run's results (e.g. the volume demo's), nothing rerun."""
    results = args.summarise_run
    rows = sorted((results / "rd" / "neural_codec").glob("*.json"))
    how = (
        f"The neural codec's rows of a workflow run (`{args.command}`), with the run's "
        "rate-distortion tables."
    )
    curves = args.out.with_name(args.out.stem + "_loss_curves.png")
    loss_curves_figure(rows, curves)
    args.out.write_text(summary(results / "tables", rows, args.title, how, curves.name))
    log.info("wrote %s and %s", args.out, curves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lambdas", type=float, nargs="+")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=JSON", help="codec settings over the defaults"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summarise-run", type=Path, help="a workflow run's results/ folder")
    parser.add_argument("--title", default="Neural codec")
    parser.add_argument("--command", default="", help="the command that made --summarise-run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.summarise_run:
        summarise_run(args)
        return
    if not (args.lambdas and args.iterations and args.work_dir):
        parser.error("a sweep needs --lambdas, --iterations and --work-dir")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    env_path = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = env_path
    if not (work / "eval.npy").exists():
        prepare = volinr("prepare", "--source", SOURCE, "--frame", "0")
        subprocess.run([*prepare, "--out", str(work / "eval.npy")], check=True)
    overrides = {key: json.loads(value) for key, value in (a.split("=", 1) for a in args.set)}
    codec = section(
        "neural_codec", {"lambdas": args.lambdas, "iterations": args.iterations} | overrides
    )
    dataset = {"kind": "slice"}
    commands, rows = [], []
    for lam in args.lambdas:
        group = f"lambda{lam:g}"
        out = work / "rd" / "neural_codec" / f"{group}.json"
        settings = {"neural_codec": codec, "dataset": dataset}
        commands.append((out, rd_command(work, "neural_codec", group, settings)))
        rows.append(out)
    classical = section("classical", {})
    for anchor in ANCHORS:
        out = work / "rd" / "classical" / f"{anchor}.json"
        settings = {"classical": classical, "dataset": dataset}
        commands.append((out, rd_command(work, "classical", anchor, settings)))
    run_all(commands)
    tables = work / "tables"
    all_rows = sorted(str(p) for p in (work / "rd").glob("*/*.json"))
    subprocess.run(
        volinr(
            "rate-distortion", "--rows", *all_rows,
            "--published", str(ROOT / "config/published.yaml"), "--mode", "slice",
            "--out-dir", str(tables), "--figure", str(work / "fig_rate_distortion.png"),
        ),
        check=True,
    )  # fmt: skip
    command = " ".join(
        ["python benchmarks/neural_codec_sweep.py", "--lambdas", *map(str, args.lambdas)]
        + ["--iterations", str(args.iterations), "--out", str(args.out)]
        + (["--set", *args.set] if args.set else [])
    )
    how = (
        f"`{command}`: {args.iterations} training iterations a lambda, one thread a lambda, "
        "the lambdas in parallel on the shared 2-core CPU."
    )
    title = "Neural codec on the embedded slice (693_UNCR, 512x512)"
    curves = args.out.with_name(args.out.stem + "_loss_curves.png")
    loss_curves_figure(rows, curves)
    args.out.write_text(summary(tables, rows, title, how, curves.name))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
