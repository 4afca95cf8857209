"""A roofline for the neural codec's training step on this CPU (dev benchmark).

The step's floating-point work and its memory traffic against what this machine measurably
does, one thread:

- FLOPs: 2 x the decoder's multiply-adds a voxel (``macs_per_voxel``: upsampling, synthesis,
  entropy model) x voxels, x 3 for the forward pass and the backward pass's two products
  (gradients of the inputs and of the weights);
- bytes: what the step allocates (torch.profiler's memory accounting, every operator's own
  allocations) counted twice, each tensor written once and read at least once: a lower bound
  of its traffic;
- the machine: float32 matrix product FLOP/s at the step's typical shape, (16 x 16) @
  (16 x voxels), and at a large square shape (the compute ceiling), and the memory bandwidth
  of a large tensor copy (read + write);
- roofline time = max(FLOPs / peak FLOP/s, bytes / bandwidth); the ratio = roofline time /
  measured step time (1 would be the ceiling).

    python benchmarks/neural_codec_roofline.py --threads 1 \
        --out benchmarks/results/neural_codec_roofline

Writes ``.json`` and ``.md``. Timings on a shared machine vary: the ratio is measured in one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from volinr.data.phantom import synthetic_head_phantom
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.settings import CodecSettings
from volinr.neural_codec.training import Scheduled, Trainer
from volinr.provenance import git_commit


def _best_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def matmul_gflops(rows: int, inner: int, columns: int, repeats: int = 5) -> float:
    a, b = torch.randn(rows, inner), torch.randn(inner, columns)
    return 2 * rows * inner * columns / _best_seconds(lambda: a @ b, repeats) / 1e9


def copy_gb_per_second(megabytes: int = 512, repeats: int = 5) -> float:
    source = torch.empty(megabytes * 2**20 // 4).uniform_()
    target = torch.empty_like(source)
    return 2 * source.numel() * 4 / _best_seconds(lambda: target.copy_(source), repeats) / 1e9


def step_profile(shape: tuple[int, ...], steps: int):
    settings = CodecSettings.make()
    if len(shape) == 2:
        image = synthetic_head_phantom((4, *shape)).voxels[2]
    else:
        image = synthetic_head_phantom(shape).voxels
    target = torch.from_numpy(image).float()
    target = (target - target.min()) / (target.max() - target.min())
    model = LatentCodecModel(shape, settings, output_bias=float(target.mean()))
    trainer = Trainer(model, target, 1e-3, settings, torch.Generator().manual_seed(0))
    phase = Scheduled("soft", 0.3, 0.0, 0.01)
    for _ in range(2):
        trainer.step(phase)
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        trainer.step(phase)
        times.append(time.perf_counter() - began)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        trainer.step(phase)
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages())
    voxels = target.numel()
    flops = 2 * model.macs_per_voxel()["total"] * voxels * 3
    return statistics.median(times), flops, 2 * allocated, model.macs_per_voxel()["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/neural_codec_roofline")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    step_shape_gflops = matmul_gflops(16, 16, 262144)
    peak_gflops = max(matmul_gflops(2048, 2048, 2048, 3), step_shape_gflops)
    bandwidth = copy_gb_per_second()
    rows = []
    for shape in [(512, 512), (93, 64, 64)]:
        seconds, flops, traffic, macs = step_profile(shape, args.steps)
        compute_seconds = flops / (peak_gflops * 1e9)
        memory_seconds = traffic / (bandwidth * 1e9)
        roofline = max(compute_seconds, memory_seconds)
        rows.append(
            {
                "image": "x".join(map(str, shape)),
                "seconds_per_iteration": seconds,
                "gflop": flops / 1e9,
                "traffic_gb": traffic / 1e9,
                "macs_per_voxel": macs,
                "achieved_gflops": flops / seconds / 1e9,
                "achieved_gb_per_second": traffic / seconds / 1e9,
                "compute_bound_seconds": compute_seconds,
                "memory_bound_seconds": memory_seconds,
                "bound": "memory" if memory_seconds > compute_seconds else "compute",
                "roofline_ratio": roofline / seconds,
            }
        )
    meta = {
        "command": "python benchmarks/neural_codec_roofline.py "
        f"--threads {args.threads} --steps {args.steps}",
        "commit": git_commit(),
        "threads": args.threads,
        "peak_matmul_gflops": peak_gflops,
        "step_shape_matmul_gflops": step_shape_gflops,
        "copy_gb_per_second": bandwidth,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(meta | {"rows": rows}, indent=1))
    lines = [
        "# Neural codec step: roofline",
        "",
        f"`{meta['command']}`, commit {meta['commit']}. Machine: float32 matmul "
        f"{peak_gflops:.1f} GFLOP/s at 2048^3 ({step_shape_gflops:.1f} at the step's "
        f"(16x16)@(16x262144)), copy bandwidth {bandwidth:.1f} GB/s (read + write), "
        f"{args.threads} thread(s).",
        "",
        "| image | s/iteration | GFLOP | traffic GB (lower bound) | GFLOP/s | GB/s | bound "
        "| roofline s | roofline ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        roofline = max(r["compute_bound_seconds"], r["memory_bound_seconds"])
        lines.append(
            f"| {r['image']} | {r['seconds_per_iteration']:.3f} | {r['gflop']:.2f} | "
            f"{r['traffic_gb']:.2f} | {r['achieved_gflops']:.1f} | "
            f"{r['achieved_gb_per_second']:.1f} | {r['bound']} | {roofline:.3f} | "
            f"{r['roofline_ratio']:.2f} |"
        )
    lines += [
        "",
        "FLOPs: 2 x MACs/voxel x voxels x 3 (forward, and the backward's two products). Traffic: "
        "2 x the bytes the step's operators allocate (torch.profiler), each written once and "
        "read at least once, a lower bound. Roofline time: the larger of FLOPs / peak and "
        "traffic / bandwidth; ratio = roofline time / measured time.",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
