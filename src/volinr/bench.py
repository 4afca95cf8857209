"""Speed benchmark of SIREN fitting: the project's loop against a straightforward reference loop.

For each configuration (sine layers x target) it measures, in one run on one device:
- the project's ``fit_siren`` loop (device-resident data, no per-step host sync, index sampling
  on the device, optional ``torch.compile``): steady-state seconds per iteration;
- a reference loop (DataLoader over the coordinates, eager mode, ``loss.item()`` every step)
  fed the *same* index batches, so that both fit the same data in the same order and their
  final PSNRs can be compared;
- the achieved FLOP/s (matmul FLOPs of forward + backward) against the device's measured
  matmul FLOP/s for the same shapes, and peak memory.
Results are JSON and Markdown; timings are never asserted in tests.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from volinr.devices import describe, synchronize
from volinr.fit import FitSettings, coordinate_grid, fit_siren, index_batches, scale_to_unit
from volinr.io import atomic_path, write_json
from volinr.models.siren import Siren

log = logging.getLogger(__name__)

# The paper's configurations: LR slice full batch, HR slice and LR volume at batch 65,536.
TARGETS = {
    "lr_slice_128x128": ((128, 128), 65536),
    "hr_slice_512x512": ((512, 512), 65536),
    "lr_volume_115x128x128": ((115, 128, 128), 65536),
}


@dataclass
class BenchRow:
    target: str
    sine_layers: int
    voxels: int
    batch: int
    iterations: int
    fast_seconds_per_iteration: float
    fast_seconds_per_50k: float
    reference_seconds_per_iteration: float
    speedup_vs_reference: float
    matmul_gflop_per_iteration: float
    fast_gflops: float
    device_matmul_gflops: float
    roofline_ratio: float
    fast_peak_memory_mb: float
    memory_kind: str
    fast_final_psnr_db: float
    reference_final_psnr_db: float
    psnr_difference_db: float
    compiled: bool


def synthetic_target(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture test image; speed does not depend on content."""
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(a**2 for a in axes))
    image = 1000.0 * (radius < 0.7) - 1000.0 + 40.0 * rng.standard_normal(shape)
    return image.astype(np.float32)


def matmul_flops_per_iteration(batch: int, width: int, sine_layers: int) -> float:
    """Forward matmul FLOPs (2 m n k per product) times 3 for forward + backward."""
    forward = 2 * batch * (3 * width + (sine_layers - 1) * width * width + width)
    return 3.0 * forward


def device_matmul_flops(batch: int, width: int, device: torch.device, repeats: int = 20) -> float:
    """Measured FLOP/s of the dominant product of a SIREN step: (batch x width) @ (width x
    width), forward-shaped and the two backward-shaped products, same dtype (float32)."""
    a = torch.randn(batch, width, device=device)
    w = torch.randn(width, width, device=device)
    g = torch.randn(batch, width, device=device)
    for _ in range(2):
        a @ w, g @ w.T, a.T @ g  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ w, g @ w.T, a.T @ g
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    return 3 * 2.0 * batch * width * width / seconds


def reference_fit(target: np.ndarray, settings: FitSettings, device: torch.device):
    """The straightforward loop: DataLoader, eager, a host sync (.item()) every step."""
    torch.manual_seed(settings.seed)
    model = Siren(3, settings.width, settings.sine_layers, 1, settings.omega0).to(device)
    lo, hi = float(target.min()), float(target.max())
    coords = coordinate_grid(target.shape, "cpu")
    values = torch.from_numpy(scale_to_unit(target, lo, hi).reshape(-1, 1))
    count = coords.shape[0]
    batch = min(settings.batch_size, count)
    # The very batches fit_siren draws for this seed, so both loops see the same data order.
    drawn = itertools.islice(
        index_batches(count, batch, settings.seed, device), settings.iterations
    )
    sampler = [list(range(count)) if b is None else b.cpu().tolist() for b in drawn]
    loader = DataLoader(TensorDataset(coords, values), batch_sampler=sampler)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    times = []
    for x, y in loader:
        start = time.perf_counter()
        x, y = x.to(device), y.to(device)
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the per-step host synchronisation of a typical loop
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        mse = float(F.mse_loss(model(coords.to(device)), values.to(device)))
    steady = float(np.mean(times[1:])) if len(times) > 1 else times[0]
    return steady, 10 * math.log10(4.0 / mse)


def bench_one(name: str, shape, batch: int, layers: int, iterations: int, compile: bool,
              device: torch.device) -> BenchRow:  # fmt: skip
    target = synthetic_target(shape)
    settings = FitSettings(sine_layers=layers, iterations=iterations, batch_size=batch,
                           eval_every=iterations, compile=compile)  # fmt: skip
    fast = fit_siren(target, settings, device, progress=False, label=name)
    reference_seconds, reference_psnr = reference_fit(target, settings, device)
    used_batch = min(batch, target.size)
    flops = matmul_flops_per_iteration(used_batch, settings.width, layers)
    device_flops = device_matmul_flops(used_batch, settings.width, device)
    fast_flops = flops / fast.seconds_per_iteration
    return BenchRow(
        target=name,
        sine_layers=layers,
        voxels=int(target.size),
        batch=used_batch,
        iterations=iterations,
        fast_seconds_per_iteration=fast.seconds_per_iteration,
        fast_seconds_per_50k=fast.seconds_per_iteration * 50000,
        reference_seconds_per_iteration=reference_seconds,
        speedup_vs_reference=reference_seconds / fast.seconds_per_iteration,
        matmul_gflop_per_iteration=flops / 1e9,
        fast_gflops=fast_flops / 1e9,
        device_matmul_gflops=device_flops / 1e9,
        roofline_ratio=fast_flops / device_flops,
        fast_peak_memory_mb=fast.peak_memory_bytes / 2**20,
        memory_kind=fast.memory_kind,
        fast_final_psnr_db=fast.final_psnr_db,
        reference_final_psnr_db=reference_psnr,
        psnr_difference_db=fast.final_psnr_db - reference_psnr,
        compiled=bool(compile and fast.compile_seconds > 0),
    )


def run_benchmark(targets: dict, layers: list[int], iterations: int, compile: bool,
                  device: torch.device) -> pd.DataFrame:  # fmt: skip
    rows = []
    for name, (shape, batch) in targets.items():
        for n in layers:
            log.info("benchmark: %s, %d sine layers, %d iterations", name, n, iterations)
            rows.append(asdict(bench_one(name, shape, batch, n, iterations, compile, device)))
    return pd.DataFrame(rows)


SMOKE_TARGETS = {"smoke_24x24": ((24, 24), 256)}


def benchmark_meta(device: torch.device, iterations: int, command: str) -> dict:
    from volinr import provenance

    return {"device": describe(device), "torch": str(torch.__version__),
            "iterations": iterations, "command": command,
            "versions": provenance.versions(), "git_commit": provenance.git_commit()}  # fmt: skip


def write_results(table: pd.DataFrame, meta: dict, out_dir: Path, stem: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{stem}.json", {**meta, "rows": table.to_dict(orient="records")})
    columns = ["target", "sine_layers", "batch", "fast_seconds_per_iteration",
               "fast_seconds_per_50k", "reference_seconds_per_iteration",
               "speedup_vs_reference", "fast_gflops", "device_matmul_gflops", "roofline_ratio",
               "fast_peak_memory_mb", "psnr_difference_db", "compiled"]  # fmt: skip
    text = [
        f"Device: {meta['device']}; torch {meta['torch']}; {meta['iterations']} iterations a "
        f"configuration; command: `{meta['command']}`.",
        "",
        "Speedup: the reference loop's seconds per iteration (DataLoader, eager, `.item()` "
        "every step, same index batches) over ours. Roofline ratio: our matmul FLOP/s "
        "(forward + backward) over the device's measured float32 matmul FLOP/s for the same "
        "(batch x width) @ (width x width) shapes. PSNR difference: ours minus the reference "
        "loop's final full-image PSNR (same seed, data and order). Memory: on a GPU "
        "torch.cuda.max_memory_allocated; on a CPU the peak-RSS increase of our loop within "
        "this one long process, so memory the allocator already holds from an earlier "
        "configuration does not count again (it can read 0).",
        "",
        table[columns].to_markdown(index=False, floatfmt=".4g"),
    ]
    with atomic_path(out_dir / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(text) + "\n")
