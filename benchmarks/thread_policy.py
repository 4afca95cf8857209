"""Thread policy under load (dev benchmark, not imported by the package).

Times the jobs that train with torch on the CPU, each as its own process the way the
workflow starts it, at 1 and at 2 torch threads, on a quiet machine and beside one busy
process (``yes > /dev/null``, one core's worth of competing work), in one run:

- the neural codec's training on the embedded 512x512 slice (``--codec-iterations``
  iterations, no warm-up, the default architecture);
- a SIREN fit (``volinr fit``) on the slice's 128x128 Lanczos LR image (``--siren-image
  hr``: the 512x512 slice itself, the baseline's fit), 3 sine layers.

    python benchmarks/thread_policy.py --out benchmarks/results/thread_policy

OpenMP wait policies (``--wait-policies``): ``default`` (OMP_WAIT_POLICY empty: the
runtime's own, spinning at barriers; the stages keep an empty value), ``passive`` (what the
stages set where the user set nothing; the codec worker is set the same way).

Loads (``--loads``): quiet; beside ``yes``; beside a codec job (the neural codec's training,
one thread, as the workflow runs one beside a fit on 2 cores); beside a codec job and ``yes``.

Why a job collapses: torch's intra-op threads meet at a barrier after every parallel
region; with more runnable threads than cores, one of them is often descheduled, and the
others wait for it a scheduler time slice (milliseconds) at every small operation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("thread_policy")

CODEC_WORKER = """
import sys, time, numpy as np
from volinr.cli import passive_thread_waits
passive_thread_waits()
import torch
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
    target = image if args.siren_image == "hr" else lr
    if job == "neural_codec":
        return [
            sys.executable, "-c", CODEC_WORKER, str(threads), str(image),
            str(args.codec_iterations),
        ]  # fmt: skip
    return [
        sys.executable, "-m", "volinr", "fit", "--target", str(target), "--sine-layers", "3",
        "--iterations", str(args.siren_iterations), "--threads", str(threads),
        "--device", "cpu", "--weights", str(work / f"siren{threads}.pt"),
        "--record", str(work / f"siren{threads}.json"), "--curve", str(work / "c.csv"),
    ]  # fmt: skip


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


WAIT_POLICIES = {"default": "", "passive": "PASSIVE"}
LOADS = {"quiet": [], "beside yes": ["yes"], "beside a codec job": ["codec"],
         "beside a codec job and yes": ["codec", "yes"]}  # fmt: skip


def start_load(kinds: list[str], image: Path, env: dict[str, str]) -> list[subprocess.Popen]:
    """The competing processes: ``yes``, or a one-thread codec training (long enough to
    outlast the timed job; killed after it)."""
    started = []
    for kind in kinds:
        command = ["yes"] if kind == "yes" else [sys.executable, "-c", CODEC_WORKER, "1",
                                                  str(image), "100000"]  # fmt: skip
        started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env))
    if "codec" in kinds:
        time.sleep(5)  # past its imports: training when the timed job starts
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec-iterations", type=int, default=60)
    parser.add_argument("--siren-iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", nargs="+", default=["neural_codec", "siren_fit"],
                        choices=["neural_codec", "siren_fit"])  # fmt: skip
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--siren-image", choices=["lr", "hr"], default="lr")
    parser.add_argument("--loads", nargs="+", choices=list(LOADS), default=["quiet", "beside yes"])
    parser.add_argument("--wait-policies", nargs="+", choices=list(WAIT_POLICIES),
                        default=["passive"])  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="output stem (.json, .md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        image, lr = prepare(work)
        for job, threads, policy in itertools.product(args.jobs, args.threads, args.wait_policies):
            command = job_command(job, threads, image, lr, work, args)
            job_env = {**env, "OMP_WAIT_POLICY": WAIT_POLICIES[policy]}
            for load in args.loads:
                runs = []
                for _ in range(args.repeats):
                    busy = start_load(LOADS[load], image, env)
                    try:
                        runs.append(timed(command, job_env))
                    finally:
                        for process in busy:
                            process.kill()
                            process.wait()
                seconds = statistics.median(runs)
                log.info("%s, %d threads, %s waits, %s: %.1f s", job, threads, policy, load,
                         seconds)  # fmt: skip
                rows.append({"job": job, "threads": threads, "wait_policy": policy,
                             "load": load, "seconds": seconds, "runs": runs})  # fmt: skip
    for row in rows:
        quiet = [r for r in rows if r["job"] == row["job"] and r["load"] == "quiet"]
        same = [r["seconds"] for r in quiet if r["threads"] == row["threads"]
                and r["wait_policy"] == row["wait_policy"]]  # fmt: skip
        row["vs_quiet_same_threads"] = row["seconds"] / same[0] if same else None
        fastest = min((r["seconds"] for r in quiet), default=None)
        row["vs_fastest_quiet"] = row["seconds"] / fastest if fastest else None
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": os.getloadavg(),
        "command": " ".join(["python", *sys.argv]),
        "codec_iterations": args.codec_iterations,
        "siren_iterations": args.siren_iterations,
        "siren_image": args.siren_image,
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    image_name = "the 512x512 slice" if args.siren_image == "hr" else "the 128x128 LR image"
    lines = [
        "# Thread policy under load",
        "",
        f"Machine: {result['machine']}; 1-minute load average before: "
        f"{result['load_average_before'][0]:.2f}. Command: `{result['command']}`. Each job its "
        "own process; a load runs for the whole job ('a codec job': the neural codec's "
        "training on one thread, started 5 s before). Seconds: the median of "
        f"{args.repeats} run(s), each listed. Neural codec: {args.codec_iterations} training "
        f"iterations on the 512x512 slice; SIREN fit: {args.siren_iterations} iterations, 3 "
        f"sine layers, on {image_name}.",
        "",
        "| job | threads | OpenMP waits | load | seconds | runs | vs quiet, same threads and "
        "waits | vs fastest quiet |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def ratio(value):
        return "n/a" if value is None else f"{value:.2f}x"

    lines += [
        f"| {r['job']} | {r['threads']} | {r['wait_policy']} | {r['load']} | {r['seconds']:.1f} | "
        f"{', '.join(f'{x:.1f}' for x in r['runs'])} | "
        f"{ratio(r['vs_quiet_same_threads'])} | {ratio(r['vs_fastest_quiet'])} |"
        for r in rows
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
