"""The neural codec's training step at two commits, timed alternately on this machine (dev
benchmark, not imported by the package).

Each round runs the step timing once per checkout, in its own process with that checkout's
``src`` first on the path (one thread; the 512x512 phantom slice and the 93x64x64 phantom
volume of ``neural_codec_speed.py``, default settings; the 'noise' and 'soft' phases; the
median of 8 steps after 2); rounds alternate the checkouts so that a change of the machine's
speed during the run hits both. Reports every round and the median ratio.

    git worktree add /tmp/before COMMIT
    python benchmarks/neural_codec_step_commits.py --before /tmp/before --after . --rounds 3 \\
        --out benchmarks/results/neural_codec_step_polyphase
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from volinr.io import write_json
from volinr.outputs import atomic_path
from volinr.provenance import git_commit

HERE = Path(__file__).resolve().parent

TIMING = """
import json, statistics, sys, time, torch
sys.path.insert(0, {benchmarks!r})
torch.set_num_threads(1)
from neural_codec_speed import make_trainer, test_images
from volinr.neural_codec.settings import CodecSettings
from volinr.neural_codec.training import Scheduled
out = {{}}
for name, image in test_images().items():
    settings = CodecSettings.make()
    trainer = make_trainer(image, settings)
    for phase in ("noise", "soft"):
        at = Scheduled(phase, 0.3, 0.1, settings.learning_rate)
        trainer.generator.manual_seed(0)
        for _ in range(2):
            trainer.step(at)
        times = []
        for _ in range(8):
            start = time.perf_counter()
            trainer.step(at)
            times.append(time.perf_counter() - start)
        out[name + " " + phase] = statistics.median(times)
print(json.dumps(out))
"""


def time_checkout(checkout: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve() / "src"), OMP_NUM_THREADS="1")
    script = TIMING.format(benchmarks=str(HERE))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout (worktree)")
    parser.add_argument("--after", type=Path, required=True, help="a checkout (worktree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="output stem (.json, .md)")
    args = parser.parse_args()
    commits = {"before": git_commit(args.before), "after": git_commit(args.after)}
    rounds = []
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        rounds.append({side: time_checkout(getattr(args, side)) for side in ("before", "after")})
    keys = list(rounds[0]["before"])
    median = {
        side: {k: statistics.median(r[side][k] for r in rounds) for k in keys}
        for side in ("before", "after")
    }
    speedup = {k: median["before"][k] / median["after"][k] for k in keys}
    command = (
        f"python benchmarks/neural_codec_step_commits.py --before {args.before} "
        f"--after {args.after} --rounds {args.rounds} --out {args.out}"
    )
    result = {
        "command": command,
        "commits": commits,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "rounds": rounds,
        "median_seconds_per_iteration": median,
        "speedup": speedup,
    }
    write_json(args.out.with_suffix(".json"), result)
    lines = [
        "# Neural codec training step at two commits",
        "",
        f"`{command}`: before {commits['before']}, after {commits['after']}; one thread, "
        f"{args.rounds} alternating rounds, each the median of 8 steps; 1-minute load average "
        f"{load_before:.1f} before, {result['load_average_after']:.1f} after (2 cores).",
        "",
        "| image and phase | before s/iteration | after s/iteration | speedup |",
        "|---|---|---|---|",
    ]
    for k in keys:
        lines.append(
            f"| {k} | {median['before'][k]:.3f} | {median['after'][k]:.3f} | {speedup[k]:.2f}x |"
        )
    lines += ["", "Rounds (s/iteration, before / after):", ""]
    for i, r in enumerate(rounds, 1):
        cells = ", ".join(f"{k} {r['before'][k]:.3f} / {r['after'][k]:.3f}" for k in keys)
        lines.append(f"- round {i}: {cells}")
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
