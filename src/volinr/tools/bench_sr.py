"""Speed benchmark of SRDenseNet training and inference: memory format and precision variants.

For the pipeline's SRDenseNet (``DEFAULT_MODEL``, as config/config.yaml sets ``sr.model``) and
for each variant (fp32 contiguous, fp32 channels-last, autocast to bfloat16 on a CPU or float16
/ bfloat16 AMP on CUDA, the last two channels-last) it measures on one device:
- training steps per second: the pipeline's Adam + L1 step (``make_train_step``) on batches
  drawn beforehand, one warm-up step left out;
- inference seconds per slice: ``super_resolve`` of one LR slice (x4), the median of three
  runs after a warm-up;
- the PSNR of each variant's inference output against the fp32 contiguous output on the same
  input and weights (peak: the fp32 output's max - min; inf where identical), and the largest
  absolute difference;
- peak memory: ``torch.cuda.max_memory_allocated`` over the variant on a GPU; on a CPU the
  process's peak RSS so far (``resource.getrusage``), which can only grow from one variant to
  the next.
Timings are never asserted in tests.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from volinr.devices import synchronize
from volinr.models.srdensenet import SRDenseNet
from volinr.resample import lanczos_resize
from volinr.super_resolution import (
    SRExecution,
    default_execution,
    describe_model,
    load_sr_checkpoint,
    super_resolve,
    to_model_input,
)
from volinr.tools.bench import write_benchmark
from volinr.training.sr import PatchPairs, make_train_step

log = logging.getLogger(__name__)

# The pipeline's SRDenseNet (config/config.yaml, sr.model); a test keeps the two equal.
DEFAULT_MODEL = {
    "blocks": 4,
    "layers_per_block": 4,
    "growth": 16,
    "bottleneck": 64,
    "global_residual": True,
}
SCALE = 4
LEARNING_RATE = 3e-4  # config/config.yaml's sr.training.learning_rate
INFERENCE_REPEATS = 3


def variants(device: torch.device) -> dict[str, SRExecution]:
    found = {
        "fp32_contiguous": SRExecution(channels_last=False, precision="float32"),
        "fp32_channels_last": SRExecution(channels_last=True, precision="float32"),
    }
    if device.type == "cuda":
        found["amp_fp16_channels_last"] = SRExecution(channels_last=True, precision="float16")
        if torch.cuda.is_bf16_supported():
            found["amp_bf16_channels_last"] = SRExecution(True, "bfloat16")
    else:
        found["bf16_autocast_channels_last"] = SRExecution(channels_last=True, precision="bfloat16")
    return found


def phantom_slice(size: int, seed: int = 0) -> np.ndarray:
    """A CT-like test slice in HU: air, a body ellipse, organs, bones, fine texture; speed
    does not depend on content, the precision differences a little."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    image = np.full((size, size), -1000.0)
    image[(x / 0.85) ** 2 + (y / 0.65) ** 2 < 1] = 40.0
    for _ in range(12):
        cx, cy, a, b = rng.uniform(-0.5, 0.5, 2).tolist() + rng.uniform(0.04, 0.2, 2).tolist()
        image[((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < 1] = rng.choice([-800, -100, 60, 700])
    image += 20.0 * rng.standard_normal((size, size))
    return image.astype(np.float32)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024
    return rss_bytes / 2**20, "cpu_process_peak_rss_getrusage"


def _inference_model(config: dict, device: torch.device, checkpoint: str | Path | None):
    if checkpoint:
        model, _ = load_sr_checkpoint(checkpoint, device)
        return model
    torch.manual_seed(0)
    model = SRDenseNet(scale=SCALE, **config)
    # Untrained with a global residual, the output is exactly bicubic; a non-zero last layer
    # makes the network's own arithmetic show in the output, as trained weights do.
    torch.nn.init.kaiming_normal_(model.reconstruction.weight, nonlinearity="linear")
    return model.to(device).eval()


def _train_speed(
    config: dict, execution: SRExecution, batches: list, device: torch.device
) -> tuple[float, float]:
    """Seconds per training step (the first, warm-up step left out) and the last loss."""
    torch.manual_seed(0)
    model = SRDenseNet(scale=SCALE, **config).to(device, memory_format=execution.memory_format)
    step = make_train_step(model, LEARNING_RATE, execution, device)
    tensors = [tuple(to_model_input(a, device, execution) for a in pair) for pair in batches]
    step(*tensors[0])
    synchronize(device)
    start = time.perf_counter()
    for lr_batch, hr_batch in tensors[1:]:
        loss = step(lr_batch, hr_batch)
    synchronize(device)
    seconds = (time.perf_counter() - start) / (len(tensors) - 1)
    return seconds, float(loss)


def _inference_speed(
    model: SRDenseNet, lr: np.ndarray, execution: SRExecution, device: torch.device
) -> tuple[float, np.ndarray]:
    """Median seconds of ``super_resolve`` on ``lr`` after a warm-up, and its output."""

    def run() -> np.ndarray:
        return super_resolve(
            model, lr, device,
            channels_last=execution.channels_last, precision=execution.precision,
        )  # fmt: skip

    out = run()
    times = []
    for _ in range(INFERENCE_REPEATS):
        start = time.perf_counter()
        run()  # returns a NumPy array: the device work is done
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def _difference(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(PSNR of ``output`` against ``reference`` in dB, peak = the reference's max - min;
    largest absolute difference), in the image's units."""
    diff = output.astype(np.float64) - reference.astype(np.float64)
    mse = float(np.mean(diff**2))
    peak = float(np.ptp(reference))
    psnr = math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
    return psnr, float(np.abs(diff).max())


def run_sr_benchmark(
    device: torch.device | str,
    steps: int,
    patch: int,
    batch: int,
    slice_size: int,
    *,
    model_config: dict | None = None,
    checkpoint: str | Path | None = None,
) -> pd.DataFrame:
    """One row per variant, measured on ``device``.

    ``steps`` timed training steps on batches of ``batch`` LR patches of ``patch`` pixels
    (HR patches 4x larger); inference of one ``slice_size`` x ``slice_size`` slice from its
    Lanczos x4-downsampled LR version. ``checkpoint``: inference weights (default: a seeded
    random network of ``model_config``, by default ``DEFAULT_MODEL``, with a non-zero last
    layer). Training always starts from the seeded initial weights.
    """
    device = torch.device(device)
    if slice_size % SCALE or slice_size < SCALE:
        raise ValueError(f"slice_size must be a multiple of {SCALE}, got {slice_size}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    config = dict(model_config or DEFAULT_MODEL)
    inference_model = _inference_model(config, device, checkpoint)
    config = {k: v for k, v in inference_model.config.items() if k != "scale"}
    hr_slice = phantom_slice(slice_size)
    lr_slice = lanczos_resize(hr_slice, (slice_size // SCALE,) * 2)
    train_size = max(slice_size, 2 * SCALE * patch)
    pairs = PatchPairs.from_hr_images([phantom_slice(train_size, s) for s in (1, 2)], SCALE)
    rng = np.random.default_rng(0)
    batches = [pairs.sample(rng, batch, patch) for _ in range(steps + 1)]
    default = default_execution(device)
    rows, reference = [], None
    for name, execution in variants(device).items():
        log.info("SR benchmark: %s on %s", name, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        train_seconds, last_loss = _train_speed(config, execution, batches, device)
        infer_seconds, output = _inference_speed(inference_model, lr_slice, execution, device)
        if reference is None:
            reference = (train_seconds, infer_seconds, output)
        psnr, max_abs = _difference(output, reference[2])
        memory_mb, memory_kind = _peak_memory(device)
        rows.append(
            {
                "variant": name,
                "precision": execution.precision,
                "channels_last": execution.channels_last,
                "device_default": execution == default,
                "model": describe_model(inference_model.config),
                "parameters": inference_model.parameter_count,
                "train_batch": batch,
                "lr_patch": patch,
                "train_steps": steps,
                "train_seconds_per_step": train_seconds,
                "train_steps_per_second": 1.0 / train_seconds,
                "train_speedup": reference[0] / train_seconds,
                "train_last_l1": last_loss,
                "slice": f"{lr_slice.shape[0]}x{lr_slice.shape[1]} -> {slice_size}x{slice_size}",
                "infer_seconds_per_slice": infer_seconds,
                "infer_speedup": reference[1] / infer_seconds,
                "psnr_vs_fp32_contiguous_db": psnr,
                "max_abs_diff_vs_fp32_contiguous": max_abs,
                "peak_memory_mb": memory_mb,
                "memory_kind": memory_kind,
            }
        )
    return pd.DataFrame(rows)


def sr_benchmark_meta(
    device: torch.device, steps: int, patch: int, batch: int, slice_size: int, command: str,
    checkpoint: str | Path | None = None,
) -> dict:  # fmt: skip
    from volinr.tools.bench import benchmark_meta

    return benchmark_meta(device, steps, command) | {
        "steps": steps, "patch": patch, "batch": batch, "slice_size": slice_size,
        "inference_weights": str(checkpoint) if checkpoint else "seeded random",
    }  # fmt: skip


def write_sr_results(table: pd.DataFrame, meta: dict, out_dir: Path, stem: str) -> None:
    """``stem``.json (meta + rows) and ``stem``.md; a NaN anywhere is refused."""
    numbers = table.select_dtypes("number")
    if numbers.isna().any().any():
        bad = list(numbers.columns[numbers.isna().any()])
        raise FloatingPointError(f"SR benchmark: columns {bad} hold NaN; not writing {stem}")
    columns = ["variant", "device_default", "train_steps_per_second", "train_speedup",
               "infer_seconds_per_slice", "infer_speedup", "psnr_vs_fp32_contiguous_db",
               "max_abs_diff_vs_fp32_contiguous", "peak_memory_mb", "memory_kind"]  # fmt: skip
    first = table.iloc[0]
    text = [
        f"Device: {meta.get('device')}; torch {meta.get('torch')}; git commit "
        f"{meta.get('git_commit')}; command: `{meta.get('command')}`.",
        "",
        f"{first['model']} ({first['parameters']:,} parameters). Training: Adam + L1 steps on "
        f"batches of {first['train_batch']} LR patches of {first['lr_patch']} pixels (x4 HR), "
        f"{first['train_steps']} timed steps after one warm-up step, batches drawn beforehand. "
        f"Inference: `super_resolve` of one {first['slice']} slice, median of "
        f"{INFERENCE_REPEATS} runs after a warm-up; weights: {meta.get('inference_weights')}. "
        "Speedups against fp32 contiguous. PSNR: each variant's SR output against the fp32 "
        "contiguous output on the same input and weights (peak: its max - min; inf: "
        "identical); max abs diff in HU. Memory: on a GPU torch.cuda.max_memory_allocated "
        "over the variant; on a CPU the process's peak RSS so far (resource.getrusage), "
        "which only grows from row to row. `device_default`: the variant the pipeline uses "
        "on this device type.",
        "",
    ]
    write_benchmark(table, meta, columns, text, out_dir, stem)
