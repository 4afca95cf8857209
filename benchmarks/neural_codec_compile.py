"""Does ``torch.compile`` speed up the neural codec's training step on this CPU? (dev
benchmark, not imported by the package).

The same model and data as ``neural_codec_speed.py`` (the 512x512 phantom slice, the default
settings, one thread): the eager step against the step with ``Trainer.losses`` compiled by
``torch.compile`` (TorchInductor, which generates C++ and needs a C compiler), the backward
pass through AOTAutograd. Reports the first compiled step's seconds (compilation included),
the steady seconds an iteration of each, and the first step's losses of each (they must agree:
the same computation).

    python benchmarks/neural_codec_compile.py --threads 1 \
        --out benchmarks/results/neural_codec_compile
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from neural_codec_speed import make_trainer, test_images  # a sibling dev script

from volinr.io import write_json
from volinr.neural_codec.settings import CodecSettings
from volinr.neural_codec.training import Scheduled
from volinr.outputs import atomic_path
from volinr.provenance import device_info, git_commit, versions

log = logging.getLogger("neural_codec_compile")


def time_variant(compiled: bool, image: np.ndarray, phase: str, steps: int) -> dict:
    settings = CodecSettings.make()
    trainer = make_trainer(image, settings)
    if compiled:
        trainer.losses = torch.compile(trainer.losses)
    at = Scheduled(phase, 0.3, 0.1, settings.learning_rate)
    trainer.generator.manual_seed(0)
    start = time.perf_counter()
    first_losses = [float(v.detach()) for v in trainer.step(at)]
    first_seconds = time.perf_counter() - start
    for _ in range(2):  # warm up (and any recompilation)
        trainer.step(at)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(at)
    return {
        "first_step_seconds": first_seconds,
        "seconds_per_iteration": (time.perf_counter() - start) / steps,
        "first_step_losses": first_losses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--phase", default="soft", choices=["noise", "soft", "ste"])
    parser.add_argument("--out", type=Path, required=True, help="output stem (.json, .md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    image = test_images()["slice_512x512"]
    load_before = os.getloadavg()[0]
    rows = {}
    for name in ("eager", "compiled"):
        rows[name] = time_variant(name == "compiled", image, args.phase, args.steps)
        log.info("%s: %s", name, rows[name])
    agree = all(
        math.isclose(a, b, rel_tol=1e-4)
        for a, b in zip(
            rows["eager"]["first_step_losses"], rows["compiled"]["first_step_losses"], strict=True
        )
    )
    command = (
        f"python benchmarks/neural_codec_compile.py --threads {args.threads} "
        f"--steps {args.steps} --phase {args.phase} --out {args.out}"
    )
    result = {
        "command": command,
        "commit": git_commit(),
        "machine": device_info(torch.device("cpu")),
        "versions": versions(),
        "threads": args.threads,
        "phase": args.phase,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "losses_agree": agree,
        "variants": rows,
        "speedup_compiled_over_eager": rows["eager"]["seconds_per_iteration"]
        / rows["compiled"]["seconds_per_iteration"],
    }
    write_json(args.out.with_suffix(".json"), result)
    eager, compiled = rows["eager"], rows["compiled"]
    lines = [
        "# Neural codec step: eager against torch.compile",
        "",
        f"`{command}`, commit {result['commit']}, torch {torch.__version__}, "
        f"{args.threads} thread(s); "
        f"1-minute load average {load_before:.1f} before, {result['load_average_after']:.1f} after "
        "(2 cores). The 512x512 phantom slice, the default settings, the "
        f"'{args.phase}' phase; steady seconds: the mean of {args.steps} steps after 3.",
        "",
        "| variant | first step s (compilation included) | s/iteration | first step's loss |",
        "|---|---|---|---|",
        f"| eager | {eager['first_step_seconds']:.2f} | {eager['seconds_per_iteration']:.3f} | "
        f"{eager['first_step_losses'][0]:.6g} |",
        f"| torch.compile | {compiled['first_step_seconds']:.1f} | "
        f"{compiled['seconds_per_iteration']:.3f} | {compiled['first_step_losses'][0]:.6g} |",
        "",
        f"Losses agree (relative 1e-4): {agree}. Compiled / eager speed: "
        f"{result['speedup_compiled_over_eager']:.2f}x.",
        "",
    ]
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        Path(tmp).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
