"""Seconds of the network quantisation and refinement, this code against an earlier commit's
(dev benchmark, not imported by the package).

Trains one model of a tuning image (an SR-training frame, never the evaluated slice) with the
default settings for ``--iterations`` iterations, then quantises and refines its networks
(``network_refinement_passes`` of the defaults) with ``network_quantisation`` of ``--before``
and of the working tree, alternately, ``--repeats`` times each, in one process on one thread.
Reports each side's seconds, the coded cost it reached (normalised MSE + lambda x the latents'
and parameters' estimated bits per voxel) and whether both chose the same integers.

    python benchmarks/network_refinement_speed.py --before 5dc720c \\
        --out benchmarks/results/network_refinement_speed
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from neural_codec_tuning import TUNING_IMAGES  # noqa: E402

from volinr.neural_codec import codec  # noqa: E402
from volinr.neural_codec import network_quantisation as current  # noqa: E402
from volinr.neural_codec.parameter_coding import parameter_bits  # noqa: E402
from volinr.neural_codec.settings import CodecSettings  # noqa: E402
from volinr.provenance import git_commit  # noqa: E402

MODULE = "src/volinr/neural_codec/network_quantisation.py"


def module_at(revision: str, folder: Path):
    """``network_quantisation`` as of ``revision`` (it imports the rest of today's package)."""
    path = folder / "network_quantisation_before.py"
    source = subprocess.run(["git", "show", f"{revision}:{MODULE}"], check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("network_quantisation_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trained_model(image_name: str, lam: float, iterations: int, seed: int):
    """The model ``encode`` trains, caught where it would be quantised."""
    image = np.asarray(TUNING_IMAGES[image_name](), dtype=np.float32)
    settings = CodecSettings.make(iterations=iterations, network_refinement_passes=0)
    caught = {}

    def catch(model, latents, target, *args, **kwargs):
        caught.update(model=copy.deepcopy(model), latents=latents, target=target)
        return current.quantise_network(model, latents, target, *args, **kwargs)

    original, codec.quantise_network = codec.quantise_network, catch
    try:
        codec.encode(image, None, settings, lam=lam, seed=seed)
    finally:
        codec.quantise_network = original
    return caught


def code_once(module, caught: dict, lam: float, passes: int) -> dict:
    model, latents, target = copy.deepcopy(caught["model"]), caught["latents"], caught["target"]
    start = time.perf_counter()
    chosen = module.quantise_network(model, latents, target, lam, None, passes, None)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        mse = torch.mean((model.synthesise(latents) - target) ** 2).item()
        latent_bits = sum(b.item() for b in model.latent_bits_by_level(latents))
    bits = latent_bits + sum(parameter_bits(p) for p in chosen)
    integers = np.concatenate([p.integers.ravel() for p in chosen])
    return {"seconds": seconds, "rd_cost": mse + lam * bits / target.numel(), "integers": integers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--image", default="explicit_vr", choices=sorted(TUNING_IMAGES))
    parser.add_argument("--lam", type=float, default=0.001)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--beside-yes", action="store_true", help="time it beside one busy process (yes)"
    )
    args = parser.parse_args()
    busy = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if args.beside_yes else None
    try:
        result = measure(args)
    finally:
        if busy is not None:
            busy.kill()
    write(args, result)


def measure(args) -> dict:
    torch.set_num_threads(1)
    passes = CodecSettings.make().network_refinement_passes
    with tempfile.TemporaryDirectory() as folder:
        before = module_at(args.before, Path(folder))
        caught = trained_model(args.image, args.lam, args.iterations, seed=0)
        runs = {"before": [], "after": []}
        for _ in range(args.repeats):
            for side, module in (("before", before), ("after", current)):
                runs[side].append(code_once(module, caught, args.lam, passes))
    same = all(
        np.array_equal(a["integers"], b["integers"])
        for a, b in zip(runs["before"], runs["after"], strict=True)
    )
    sides = {
        side: {"seconds": [r["seconds"] for r in rows], "rd_cost": rows[0]["rd_cost"]}
        for side, rows in runs.items()
    }
    ratio = statistics.median(sides["before"]["seconds"]) / statistics.median(
        sides["after"]["seconds"]
    )
    change = sides["after"]["rd_cost"] / sides["before"]["rd_cost"] - 1
    result = {
        "before_commit": args.before, "after_commit": git_commit(), "image": args.image,
        "lambda": args.lam,
        "iterations": args.iterations, "passes": passes, "threads": 1,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s) of "
                   f"{len(os.sched_getaffinity(0))} core(s)",
        "runs": sides, "speedup": ratio, "rd_cost_change": change, "same_integers": same,
    }  # fmt: skip
    result["load"] = "beside one busy process (yes > /dev/null)" if args.beside_yes else "quiet"
    return result


def write(args, result: dict) -> None:
    sides, ratio, change, same = (
        result[k] for k in ("runs", "speedup", "rd_cost_change", "same_integers")
    )
    passes = result["passes"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Network quantisation and refinement: seconds, before and after",
        "",
        f"`python benchmarks/network_refinement_speed.py --before {args.before} --iterations "
        f"{args.iterations} --repeats {args.repeats}"
        f"{' --beside-yes' if args.beside_yes else ''}`: one model of `{args.image}` (a tuning "
        f"image) trained {args.iterations} iterations at lambda {args.lam}, its networks "
        f"quantised and refined ({passes} passes) by `network_quantisation` of commit "
        f"{args.before} and of commit {result['after_commit'][:7]}, alternately, in one process on "
        f"one thread ({result['machine']}), {result['load']}.",
        "",
        "| code | seconds (each repeat) | RD cost |",
        "|---|---|---|",
        *(
            f"| {side} ({args.before if side == 'before' else result['after_commit'][:7]}) | "
            + ", ".join(f"{s:.1f}" for s in sides[side]["seconds"])
            + f" | {sides[side]['rd_cost']:.6e} |"
            for side in ("before", "after")
        ),
        "",
        f"Median seconds before / after: **{ratio:.2f}x**; RD cost {100 * change:+.3f}%; the "
        f"same integers chosen: {'yes' if same else 'no (near-ties settled another way)'}.",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
