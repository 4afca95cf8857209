"""Thread policy under load (dev benchmark, not imported by the package).

Times the jobs that train with torch on the CPU, each as its own process the way the
workflow starts it, at 1 and at 2 torch threads, on a quiet machine and beside one busy
process (``yes > /dev/null``, one core's worth of competing work), in one run:

- the neural codec's training on the embedded 512x512 slice (``--codec-iterations``
  iterations, no warm-up, the default architecture);
- a SIREN fit (``volinr fit``) on the slice's 128x128 Lanczos LR image, 3 sine layers.

    python benchmarks/thread_policy.py --out benchmarks/results/thread_policy

Why a job collapses: torch's intra-op threads meet at a barrier after every parallel
region; with more runnable threads than cores, one of them is often descheduled, and the
others wait for it a scheduler time slice (milliseconds) at every small operation.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("thread_policy")

CODEC_WORKER = """
import sys, time, numpy as np, torch
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.settings import CodecSettings
from volinr.neural_codec.training import train
torch.set_num_threads(int(sys.argv[1]))
image = np.load(sys.argv[2]).astype(np.float32)
target = torch.from_numpy((image - image.min()) / (image.max() - image.min()))
settings = CodecSettings.make(iterations=int(sys.argv[3]), warmup_candidates=1)
def make(seed):
    torch.manual_seed(seed)
    return LatentCodecModel(target.shape, settings)
start = time.perf_counter()
train(make, target, 1e-3, settings, 0)
print(time.perf_counter() - start)
"""


def prepare(work: Path) -> tuple[Path, Path]:
    """The embedded slice and its x4 Lanczos LR image, made by the pipeline's own stages."""
    image, lr = work / "eval.npy", work / "lr.npy"
    volinr = [sys.executable, "-m", "volinr"]
    subprocess.run(
        [*volinr, "prepare", "--source", "pydicom-data:693_UNCR.dcm", "--out", str(image)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*volinr, "downsample", "--input", str(image), "--factor", "4", "--out", str(lr)],
        check=True,
        capture_output=True,
    )
    return image, lr


def job_command(job: str, threads: int, image: Path, lr: Path, work: Path, args) -> list[str]:
    if job == "neural_codec":
        return [
            sys.executable, "-c", CODEC_WORKER, str(threads), str(image),
            str(args.codec_iterations),
        ]  # fmt: skip
    return [
        sys.executable, "-m", "volinr", "fit", "--target", str(lr), "--sine-layers", "3",
        "--iterations", str(args.siren_iterations), "--threads", str(threads),
        "--device", "cpu", "--weights", str(work / f"siren{threads}.pt"),
        "--record", str(work / f"siren{threads}.json"), "--curve", str(work / "c.csv"),
    ]  # fmt: skip


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec-iterations", type=int, default=60)
    parser.add_argument("--siren-iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="output stem (.json, .md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        image, lr = prepare(work)
        for job in ("neural_codec", "siren_fit"):
            for threads in (1, 2):
                command = job_command(job, threads, image, lr, work, args)
                seconds = {}
                for load in ("quiet", "beside yes"):
                    runs = []
                    for _ in range(args.repeats):
                        busy = None
                        if load != "quiet":
                            busy = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
                        try:
                            runs.append(timed(command, env))
                        finally:
                            if busy is not None:
                                busy.kill()
                                busy.wait()
                    seconds[load] = min(runs)
                    log.info("%s, %d threads, %s: %.1f s", job, threads, load, seconds[load])
                rows.append(
                    {
                        "job": job,
                        "threads": threads,
                        "quiet_seconds": seconds["quiet"],
                        "beside_yes_seconds": seconds["beside yes"],
                        "slowdown": seconds["beside yes"] / seconds["quiet"],
                    }
                )
    for row in rows:
        fastest_quiet = min(r["quiet_seconds"] for r in rows if r["job"] == row["job"])
        row["beside_yes_vs_fastest_quiet"] = row["beside_yes_seconds"] / fastest_quiet
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": os.getloadavg(),
        "command": " ".join(["python", *sys.argv]),
        "codec_iterations": args.codec_iterations,
        "siren_iterations": args.siren_iterations,
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Thread policy under load",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`. Each job its own "
        "process; 'beside yes': one `yes > /dev/null` running for the whole job. Seconds: "
        f"the fastest of {args.repeats} run(s). Neural codec: {args.codec_iterations} training "
        f"iterations on the 512x512 slice; SIREN fit: {args.siren_iterations} iterations, 3 "
        "sine layers, on the 128x128 LR image.",
        "",
        "| job | threads | quiet s | beside yes s | slowdown | beside yes / fastest quiet |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['job']} | {r['threads']} | {r['quiet_seconds']:.1f} | "
        f"{r['beside_yes_seconds']:.1f} | {r['slowdown']:.2f}x | "
        f"{r['beside_yes_vs_fastest_quiet']:.2f}x |"
        for r in rows
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
