"""Speed benchmark of SIREN fitting: the project's loop against a straightforward reference loop.

For each configuration (sine layers x target) it measures, in one run on one device:
- the project's ``fit_siren`` loop in one or more variants (``default``: the device's default
  step, on a CPU the blocked hand-written gradient of ``volinr.training.siren_blocked``;
  ``compiled``: autograd under ``torch.compile``; ``bfloat16``: autograd under bfloat16
  autocast; ``tf32``: TF32 matmuls on CUDA): steady-state seconds per iteration;
- a reference loop (DataLoader over the coordinates, eager mode, ``loss.item()`` every step)
  fed the *same* index batches, so that every loop fits the same data in the same order and
  the final PSNRs can be compared. Its time is reported twice: the compute alone (transfer,
  forward, backward, optimizer step, sync) and the whole loop with the DataLoader's fetch;
  speedups are quoted against the compute alone, the smaller of the two;
- the achieved FLOP/s (matmul FLOPs of forward + backward) against the device's measured
  matmul FLOP/s for the same shapes: one (batch x width) @ (width x width) call as the issue's
  roofline, and the best of those shapes cut into row blocks as a stricter one (a blocked
  product keeps its operands in cache and runs faster on a CPU); and peak memory.
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
from volinr.io import write_json
from volinr.models.siren import Siren
from volinr.outputs import atomic_path
from volinr.siren_grid import coordinate_grid, scale_to_unit
from volinr.training.siren import FitSettings, fit_siren, index_batches

log = logging.getLogger(__name__)

# The paper's configurations: LR slice full batch, HR slice and LR volume at batch 65,536.
TARGETS = {
    "lr_slice_128x128": ((128, 128), 65536),
    "hr_slice_512x512": ((512, 512), 65536),
    "lr_volume_115x128x128": ((115, 128, 128), 65536),
}


VARIANTS = {
    "default": {},
    "compiled": {"step": "autograd", "compile": True},
    "bfloat16": {"step": "autograd", "precision": "bfloat16"},
    "tf32": {"step": "autograd", "precision": "tf32"},
}


@dataclass
class BenchRow:
    target: str
    sine_layers: int
    variant: str
    step: str
    precision: str
    compiled: bool
    voxels: int
    batch: int
    iterations: int
    seconds_per_iteration: float
    seconds_per_50k: float
    reference_seconds_per_iteration: float
    reference_loop_seconds_per_iteration: float
    speedup_vs_reference: float
    speedup_vs_reference_loop: float
    matmul_gflop_per_iteration: float
    gflops: float
    device_matmul_gflops: float
    device_blocked_matmul_gflops: float
    roofline_ratio: float
    roofline_ratio_blocked: float
    peak_memory_mb: float
    memory_kind: str
    final_psnr_db: float
    reference_final_psnr_db: float
    psnr_difference_db: float


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


def device_matmul_flops(
    batch: int, width: int, device: torch.device, block_rows: int | None = None, repeats: int = 10
) -> float:
    """Measured FLOP/s of the dominant products of a SIREN step, (batch x width) @ (width x
    width) forward-shaped and the two backward-shaped products, float32, into preallocated
    outputs; with ``block_rows`` the batch is cut into row blocks of that size. The best of
    three timings, so that a busy moment lowers the ceiling less than it lowers our loop."""
    rows = batch if block_rows is None else min(block_rows, batch)
    a = torch.randn(batch, width, device=device)
    w = torch.randn(width, width, device=device)
    g = torch.randn(batch, width, device=device)
    out, grad_w = torch.empty(batch, width, device=device), torch.zeros(width, width, device=device)

    def products() -> None:
        for start in range(0, batch, rows):
            stop = start + rows
            torch.mm(a[start:stop], w, out=out[start:stop])
            torch.mm(g[start:stop], w.T, out=out[start:stop])
            grad_w.addmm_(a[start:stop].T, g[start:stop])

    products()  # warm-up
    best = math.inf
    for _ in range(3):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            products()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 3 * 2.0 * batch * width * width / best


def device_matmul_ceilings(batch: int, width: int, device: torch.device) -> tuple[float, float]:
    """(one call of the full shape, best over row blocks of 1,024 to 16,384 rows)."""
    whole = device_matmul_flops(batch, width, device)
    blocks = (1024, 2048, 4096, 8192, 16384)
    blocked = [device_matmul_flops(batch, width, device, rows) for rows in blocks]
    return whole, max([whole, *blocked])


def reference_fit(target: np.ndarray, settings: FitSettings, device: torch.device):
    """The straightforward loop: DataLoader, eager, a host sync (.item()) every step.

    Returns the steady-state seconds per iteration of its compute alone, of the whole loop
    (the DataLoader's fetch included), and its final full-image PSNR."""
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
    compute, whole = [], []
    fetch_start = time.perf_counter()
    for x, y in loader:
        start = time.perf_counter()
        x, y = x.to(device), y.to(device)
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the per-step host synchronisation of a typical loop
        end = time.perf_counter()
        compute.append(end - start)
        whole.append(end - fetch_start)
        fetch_start = end
    with torch.no_grad():
        mse = float(F.mse_loss(model(coords.to(device)), values.to(device)))

    def steady(times: list[float]) -> float:
        return float(np.mean(times[1:])) if len(times) > 1 else times[0]

    return steady(compute), steady(whole), 10 * math.log10(4.0 / mse)


def bench_one(name: str, shape, batch: int, layers: int, iterations: int, variants: list[str],
              device: torch.device, ceilings: dict) -> list[BenchRow]:  # fmt: skip
    """One configuration: the reference loop once, then each variant of ours."""
    target = synthetic_target(shape)
    base = FitSettings.make(
        sine_layers=layers, iterations=iterations, batch_size=batch, eval_every=iterations,
        checkpoint_every=0,
    )  # fmt: skip
    reference_seconds, reference_loop_seconds, reference_psnr = reference_fit(target, base, device)
    used_batch = min(batch, target.size)
    flops = matmul_flops_per_iteration(used_batch, base.width, layers)
    if used_batch not in ceilings:
        ceilings[used_batch] = device_matmul_ceilings(used_batch, base.width, device)
    whole_flops, blocked_flops = ceilings[used_batch]
    rows = []
    for variant in variants:
        settings = FitSettings(**{**vars(base), **VARIANTS[variant]})
        fast = fit_siren(target, settings, device, progress=False, label=f"{name} {variant}")
        seconds = fast.seconds_per_iteration
        rows.append(
            BenchRow(
                target=name,
                sine_layers=layers,
                variant=variant,
                step=fast.step,
                precision=settings.precision,
                compiled=bool(settings.compile and fast.compile_seconds > 0),
                voxels=int(target.size),
                batch=used_batch,
                iterations=iterations,
                seconds_per_iteration=seconds,
                seconds_per_50k=seconds * 50000,
                reference_seconds_per_iteration=reference_seconds,
                reference_loop_seconds_per_iteration=reference_loop_seconds,
                speedup_vs_reference=reference_seconds / seconds,
                speedup_vs_reference_loop=reference_loop_seconds / seconds,
                matmul_gflop_per_iteration=flops / 1e9,
                gflops=flops / seconds / 1e9,
                device_matmul_gflops=whole_flops / 1e9,
                device_blocked_matmul_gflops=blocked_flops / 1e9,
                roofline_ratio=flops / seconds / whole_flops,
                roofline_ratio_blocked=flops / seconds / blocked_flops,
                peak_memory_mb=fast.peak_memory_bytes / 2**20,
                memory_kind=fast.memory_kind,
                final_psnr_db=fast.final_psnr_db,
                reference_final_psnr_db=reference_psnr,
                psnr_difference_db=fast.final_psnr_db - reference_psnr,
            )
        )
    return rows


def run_benchmark(targets: dict, layers: list[int], iterations: int, variants: list[str],
                  device: torch.device) -> pd.DataFrame:  # fmt: skip
    if device.type != "cuda":
        variants = [v for v in variants if v != "tf32"]  # TF32 exists on CUDA only
    rows, ceilings = [], {}
    for name, (shape, batch) in targets.items():
        for n in layers:
            log.info("benchmark: %s, %d sine layers, %d iterations", name, n, iterations)
            found = bench_one(name, shape, batch, n, iterations, variants, device, ceilings)
            rows += [asdict(row) for row in found]
    return pd.DataFrame(rows)


SMOKE_TARGETS = {"smoke_24x24": ((24, 24), 256)}


def benchmark_meta(device: torch.device, iterations: int, command: str) -> dict:
    from volinr import provenance

    return {"device": describe(device), "torch": str(torch.__version__),
            "iterations": iterations, "command": command,
            "versions": provenance.versions(), "git_commit": provenance.git_commit()}  # fmt: skip


def _load_text(meta: dict) -> str:
    load = meta.get("load_average_1min") or {}
    return " / ".join(f"{load[k]:.2f}" if k in load else "?" for k in ("before", "after"))


def write_results(table: pd.DataFrame, meta: dict, out_dir: Path, stem: str) -> None:
    columns = ["target", "sine_layers", "variant", "step", "batch", "seconds_per_iteration",
               "seconds_per_50k", "reference_seconds_per_iteration",
               "reference_loop_seconds_per_iteration", "speedup_vs_reference", "gflops",
               "device_matmul_gflops", "roofline_ratio", "roofline_ratio_blocked",
               "peak_memory_mb", "psnr_difference_db"]  # fmt: skip
    text = [
        f"Device: {meta['device']}; torch {meta['torch']}; {meta['iterations']} iterations a "
        f"configuration; git commit {meta['git_commit']}; command: `{meta['command']}`; "
        f"1-minute load average before / after: {_load_text(meta)}.",
        "",
        "Variants: `default` is `fit_siren` as the pipeline runs it on this device (on a CPU "
        "the blocked hand-written gradient, `volinr.training.siren_blocked`); `compiled` is "
        "autograd under torch.compile; `bfloat16` autograd under bfloat16 autocast; `tf32` TF32 "
        "matmuls (CUDA). Reference: DataLoader, eager, `.item()` every step, same index "
        "batches; `reference_seconds_per_iteration` is its compute alone, "
        "`reference_loop_seconds_per_iteration` includes the DataLoader's fetch. Speedup: "
        "reference compute over ours (the smaller, conservative ratio). Roofline ratio: our "
        "matmul FLOP/s (forward + backward) over the device's measured float32 FLOP/s for "
        "one (batch x width) @ (width x width) call (`device_matmul_gflops`); the blocked "
        "ratio divides by the best of the same products cut into row blocks, a stricter "
        "ceiling. PSNR difference: ours minus the reference loop's final full-image PSNR "
        "(same seed, data and order). Memory: on a GPU torch.cuda.max_memory_allocated; on a "
        "CPU the peak-RSS increase of our loop within this one long process, so memory the "
        "allocator already holds from an earlier configuration does not count again (it can "
        "read 0).",
        "",
    ]
    write_benchmark(table, meta, columns, text, out_dir, stem)


def write_benchmark(table: pd.DataFrame, meta: dict, columns: list[str], preamble: list[str],
                    out_dir: Path, stem: str) -> None:  # fmt: skip
    """``stem``.json (meta and every row) and ``stem``.md (``preamble``, then ``columns``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{stem}.json", {**meta, "rows": table.to_dict(orient="records")})
    text = [*preamble, table[columns].to_markdown(index=False, floatfmt=".4g")]
    with atomic_path(out_dir / f"{stem}.md") as tmp:
        tmp.write_text("\n".join(text) + "\n")
