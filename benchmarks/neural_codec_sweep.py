"""The neural codec's rate-distortion sweep on the embedded slice, through the pipeline's own
stages (a dev benchmark: more iterations than the default run affords on a CPU).

It runs what the workflow runs, by hand: ``volinr prepare`` (the slice), ``volinr rd`` for
each lambda of the neural codec (one process each, in parallel) and for the classical anchors,
then ``volinr rate-distortion`` over all the rows; and writes a Markdown summary of the neural
codec's points, its BD-rates and its comparison with the strongest anchor. Rows already in
``--work-dir`` are reused, so a sweep can be resumed or extended.

    python benchmarks/neural_codec_sweep.py --lambdas 0.003 0.001 0.0003 --iterations 1500 \
        --work-dir /tmp/sweep --out benchmarks/results/neural_codec_slice.md

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


def summary(tables: Path, args, rows: list[Path]) -> str:
    rd = pd.read_csv(tables / "table_rate_distortion.csv")
    bd = pd.read_csv(tables / "table_bd_rate.csv")
    best = pd.read_csv(tables / "table_vs_best_anchor.csv")
    ours = rd[rd["family"] == "neural codec"]
    points = [json.loads(p.read_text())["rows"][0] for p in rows]
    bits = pd.DataFrame(
        {
            "lambda": [p["lambda"] for p in points],
            "parameter_bits": [p["parameter_bits"] for p in points],
            "latent_bits": [p["latent_bits"] for p in points],
            "header_and_framing_bits": [p["header_and_framing_bits"] for p in points],
            "rate_estimate_error": [p["rate_estimate_error"] for p in points],
            "decode_macs_per_voxel": [p["decode_macs_per_voxel"] for p in points],
            "training_seconds": [p["training_seconds"] for p in points],
            "decode_seconds": [p["decode_seconds"] for p in points],
        }
    ).sort_values("lambda", ascending=False)
    columns = ["setting", "bits_per_voxel", "psnr_8bit_minmax_db", "psnr_native_db", "ssim"]
    versus = best[best["method"].str.startswith("neural codec")]
    bd_ours = bd[bd["method"].str.startswith("neural codec")]
    command = " ".join(
        ["python benchmarks/neural_codec_sweep.py", "--lambdas", *map(str, args.lambdas)]
        + ["--iterations", str(args.iterations), "--out", str(args.out)]
    )
    return "\n".join(
        [
            "# Neural codec on the embedded slice (693_UNCR, 512x512)",
            "",
            f"`{command}` on {device_info(None)['name']}, commit {git_commit()}: "
            f"{args.iterations} training iterations a lambda, one thread a lambda, the "
            "lambdas in parallel on the shared 2-core CPU. Every rate is 8 x a real file's "
            "bytes / voxels; every PSNR is measured on the image decoded from that file "
            "(the pipeline's `volinr rd`). Defaults tuned only on the phantom and SR-training "
            "frames.",
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
            versus.drop(columns=["method"]).to_markdown(index=False, floatfmt=".4g"),
            "",
            "## Bjontegaard delta rate (negative: fewer bits than the anchor)",
            "",
            bd_ours.drop(columns=["method"]).to_markdown(index=False, floatfmt=".4g"),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lambdas", type=float, nargs="+", required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    env_path = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = env_path
    if not (work / "eval.npy").exists():
        prepare = volinr("prepare", "--source", SOURCE, "--frame", "0")
        subprocess.run([*prepare, "--out", str(work / "eval.npy")], check=True)
    codec = section("neural_codec", {"lambdas": args.lambdas, "iterations": args.iterations})
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
    args.out.write_text(summary(tables, args, rows))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
