"""Peak memory and wall time of the volume stages at the paper's size, on this machine.

A synthetic int16 head-like volume of 463 x 512 x 512 (the paper's 512x512x463) goes through
`volinr downsample` (Lanczos x4 per axis, in slabs) and `volinr decode` (a SIREN evaluated
chunk by chunk directly at full resolution, the "no SR" path); each stage runs as its own
process, whose peak RSS (getrusage of the child) and wall time are recorded.

    python benchmarks/volume_memory.py --out-dir benchmarks/results --threads 2

Writes volume_memory.json and volume_memory.md. The SIREN decoded is a freshly initialised
2-layer, width-128 network (decode cost does not depend on its weights).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_int16_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Air, an elliptic head with a bright shell and noisy tissue; built slice by slice so
    that making it needs no more than the int16 volume itself."""
    rng = np.random.default_rng(seed)
    slices, rows, cols = shape
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : cols * 1j]
    volume = np.empty(shape, np.int16)
    for k in range(slices):
        z = 2 * k / max(1, slices - 1) - 1
        radius = np.sqrt((x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.1) ** 2)
        plane = np.where(radius < 0.92, 40.0, -1000.0)
        plane = np.where((radius >= 0.85) & (radius < 0.92), 1200.0, plane)
        plane += rng.normal(0, 12, plane.shape) * (radius < 0.92)
        volume[k] = np.clip(plane, -1024, 3071).astype(np.int16)
    return volume


def run_stage(name: str, command: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:
        raise RuntimeError(f"{name}: cannot attribute the peak RSS (an earlier child was larger)")
    return {"stage": name, "wall_seconds": round(seconds, 2), "peak_rss_mb": round(peak_kb / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[463, 512, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    from volinr import provenance
    from volinr.io import save_array
    from volinr.models.siren import Siren
    from volinr.siren_grid import grid_extent

    shape = tuple(args.shape)
    python = [sys.executable, "-m", "volinr"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        volume = synthetic_int16_volume(shape)
        # int16 on disk, as a CT series is stored; the stages convert slab by slab.
        save_array(tmp / "volume.npy", volume, {"spacing_mm": [1.0, 0.5, 0.5], "units": "HU"})
        del volume
        torch.manual_seed(0)
        siren = Siren(3, 128, 2, 1, 30.0)
        weights = tmp / "siren.pt"
        from volinr.checkpoints import save_checkpoint
        from volinr.siren_grid import WEIGHTS_FORMAT

        lr_shape = [round(n / 4) for n in shape]
        save_checkpoint(
            weights,
            WEIGHTS_FORMAT,
            siren,
            value_range=[-1024.0, 3071.0],
            grid_shape=lr_shape,
            grid_extent=grid_extent(shape, [1.0, 0.5, 0.5]),
        )
        threads = ["--threads", str(args.threads)]
        rows = [
            run_stage(
                "downsample (Lanczos x4 per axis)",
                python
                + ["downsample", "--input", str(tmp / "volume.npy"), "--factor", "4"]
                + ["--out", str(tmp / "lr.npy")],
            ),
            run_stage(
                "decode at full resolution (chunks of 262,144 voxels)",
                python
                + ["decode", "--weights", str(weights), "--shape", *map(str, shape)]
                + ["--out", str(tmp / "decoded.npy"), "--device", "cpu", *threads],
            ),
        ]
    voxels = int(np.prod(shape))
    meta = {
        "shape": list(shape),
        "voxels": voxels,
        "int16_volume_mb": round(2 * voxels / 2**20),
        "float32_volume_mb": round(4 * voxels / 2**20),
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
        "command": f"python benchmarks/volume_memory.py --threads {args.threads}",
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "volume_memory.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"Volume {shape[0]}x{shape[1]}x{shape[2]} ({voxels:,} voxels; int16 "
        f"{meta['int16_volume_mb']} MB, float32 {meta['float32_volume_mb']} MB), "
        f"{args.threads} threads, `{meta['command']}`, commit {meta['git_commit']}.",
        "",
        "| stage | wall s | peak RSS MB |",
        "|---|---|---|",
        *[f"| {r['stage']} | {r['wall_seconds']} | {r['peak_rss_mb']} |" for r in rows],
    ]
    (out_dir / "volume_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
