"""Peak memory and seconds of the neural codec on CT-sized volumes: training, encoding, decoding.

For each shape a synthetic int16 head-like volume (``volume_memory.synthetic_int16_volume``:
air, a bright skull shell, noisy tissue) is written to disk, then each stage runs in its own
process, whose peak RSS (its own getrusage) and wall time are recorded:

- ``train``: the encoder's training as ``encode`` sets it up under ``memory_gb`` (block by
  block where the whole volume does not fit): seconds an iteration (every block once) and
  seconds of one hard-rounded evaluation of the whole volume;
- ``train-whole`` (``--whole``): the same iteration on the whole volume at once, the codec
  before block training (the issue's 113x256x256: 24.8 s and 9.0 GB an iteration);
- ``encode``: ``volinr.neural_codec.encode`` end to end (training ``--iterations``,
  quantisation, coding, the reconstruction and its verifying decode), the file written;
- ``decode``: ``volinr.neural_codec.decode`` of that file alone; its output's SHA-256 must
  equal the encoder's reconstruction's.

``--phases`` also records, for ``encode``, the resident memory's peak in each of its phases
(training, the quantisation's MSE and rate measurements, the coding, the reconstruction, the
verifying decode; sampled every 0.2 s from /proc/self/statm), to say where the peak is.
``--stages`` runs only some stages (``decode`` needs ``encode``'s file).

    python benchmarks/neural_codec_memory.py --shapes 113x256x256 300x512x512 --whole 113x256x256 \
        --iterations 1 --threads 2 --out-dir benchmarks/results

Writes neural_codec_memory.json and neural_codec_memory.md. Training settings other than the
iterations are the defaults (one warm-up candidate: the warm-up's extra candidates repeat the
same steps); the point is memory and time, not the rate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LAMBDA = 1e-3


def _settings(iterations: int, memory_gb: float):
    from volinr.neural_codec.settings import CodecSettings

    return CodecSettings.make(
        iterations=iterations, log_every=iterations, warmup_candidates=1, memory_gb=memory_gb
    )


ENCODER_PHASES = (
    "train",
    "measured_mse",
    "quantise_network",
    "latent_bits_in_blocks",
    "latent_symbols",
    "encode_latents",
    "reconstruct",
    "decode_latents",
)


def phase_peaks(codec) -> dict[str, float]:
    """Wrap the encoder's phases (names in ``codec``'s namespace) and sample the resident set
    every 0.2 s: the returned dict fills with each phase's peak in MiB ("after X": between X
    and the next phase)."""
    import functools
    import threading

    current, peaks = ["start"], {}
    page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20

    def sample() -> None:
        while True:
            with open("/proc/self/statm") as statm:
                resident = int(statm.read().split()[1]) * page_mib
            peaks[current[-1]] = max(peaks.get(current[-1], 0.0), resident)
            time.sleep(0.2)

    def wrapped(name, function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            current.append(name)
            try:
                return function(*args, **kwargs)
            finally:
                current.append(f"after {name}")

        return run

    for name in ENCODER_PHASES:
        setattr(codec, name, wrapped(name, getattr(codec, name)))
    threading.Thread(target=sample, daemon=True).start()
    return peaks


def child(
    stage: str,
    volume_path: str,
    file_path: str,
    iterations: int,
    memory_gb: float,
    phases: bool = False,
):
    """One stage in this process; prints its measurements as one JSON line."""
    import torch

    from volinr.neural_codec import codec
    from volinr.neural_codec.block_training import memory_plan
    from volinr.neural_codec.geometry import latent_count
    from volinr.neural_codec.model import LatentCodecModel
    from volinr.neural_codec.regions import DECODING_BLOCK_EDGE
    from volinr.neural_codec.training import Trainer

    volume = np.load(volume_path)
    settings = _settings(iterations, memory_gb)
    result: dict = {}
    start = time.perf_counter()
    if stage in ("train", "train-whole"):
        low, high = float(volume.min()), float(volume.max())
        target = torch.from_numpy(codec.normalised_float32(volume, low, high))
        edge = None
        if stage == "train":
            edge = memory_plan(
                volume.shape, latent_count(volume.shape, settings.levels), 2, memory_gb
            )
        model = LatentCodecModel(volume.shape, settings, output_bias=float(target.mean()))
        trainer = Trainer(model, target, LAMBDA, settings, torch.Generator().manual_seed(0), edge)
        steps = []
        for iteration in range(iterations):
            began = time.perf_counter()
            trainer.step(trainer.schedule(iteration))
            steps.append(time.perf_counter() - began)
        began = time.perf_counter()
        trainer.exact_loss()
        result.update(
            block_edge=edge,
            blocks=None if edge is None else len(trainer.blocks.plans),
            seconds_per_iteration=float(np.mean(steps)),
            rounded_evaluation_seconds=time.perf_counter() - began,
        )
    elif stage == "encode":
        peaks = phase_peaks(codec) if phases else None
        encoded = codec.encode(volume, None, settings, LAMBDA)
        if peaks is not None:
            time.sleep(0.5)  # one more sample
            result["phase_peaks_mb"] = {name: round(mb) for name, mb in peaks.items()}
        Path(file_path).write_bytes(encoded.data)
        record = encoded.record
        result.update(
            block_edge=record["training_block_edge"],
            bytes=record["bytes"],
            bits_per_voxel=record["bits_per_voxel"],
            seconds={k: round(v, 2) for k, v in record["seconds"].items()},
            reconstruction_sha256=hashlib.sha256(encoded.reconstruction.tobytes()).hexdigest(),
        )
    elif stage == "decode":
        decoded = codec.decode(Path(file_path).read_bytes(), file_path)
        result["output_sha256"] = hashlib.sha256(decoded.tobytes()).hexdigest()
        edge = DECODING_BLOCK_EDGE[volume.ndim]
        result["block_edge"] = edge if max(volume.shape) > edge else None
    result["wall_seconds"] = time.perf_counter() - start
    # this process's own peak resident set (Linux: kB)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(result))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    return platform.machine()


def run_child(args: list[str], threads: int) -> dict:
    command = [sys.executable, __file__, "--child", *args, "--threads", str(threads)]
    began = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result | {"process_seconds": round(time.perf_counter() - began, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="+", default=["113x256x256", "300x512x512"])
    parser.add_argument("--whole", nargs="*", default=["113x256x256"])
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--memory-gb", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--stem", default="neural_codec_memory", help="the results' file name")
    parser.add_argument("--stages", nargs="+", default=["encode", "decode", "train"])
    parser.add_argument("--phases", action="store_true", help="encode's peak by phase")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "VOLUME", "FILE"))
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        child(*args.child, args.iterations, args.memory_gb, args.phases)
        return

    from volume_memory import synthetic_int16_volume

    from volinr.provenance import git_commit

    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.shapes:
            shape = tuple(int(v) for v in text.split("x"))
            volume_path, file_path = f"{tmp}/{text}.npy", f"{tmp}/{text}.vnc"
            np.save(volume_path, synthetic_int16_volume(shape))
            common = ["--iterations", str(args.iterations), "--memory-gb", str(args.memory_gb)]
            common += ["--phases"] if args.phases else []
            stages = list(args.stages) + (["train-whole"] if text in args.whole else [])
            results = {}
            for stage in stages:
                results[stage] = run_child([stage, volume_path, file_path, *common], args.threads)
                print(text, stage, results[stage], flush=True)
            for stage, result in results.items():
                rows.append({"shape": text, "voxels": int(np.prod(shape)), "stage": stage} | result)
            if "decode" in results and "encode" in results:
                same = (
                    results["decode"]["output_sha256"] == results["encode"]["reconstruction_sha256"]
                )
                rows.append({"shape": text, "stage": "decode equals reconstruction", "equal": same})
    meta = {
        "command": "python " + " ".join(sys.argv),
        "commit": git_commit(),
        "machine": _cpu_name(),
        "threads": args.threads,
        "memory_gb": args.memory_gb,
        "iterations": args.iterations,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.stem}.json").write_text(json.dumps(meta | {"rows": rows}, indent=1))
    lines = [
        "# Neural codec memory and time on CT-sized volumes",
        "",
        f"`{meta['command']}`, commit {meta['commit']}, {meta['machine']}, {args.threads} threads, "
        f"memory_gb {args.memory_gb}, {args.iterations} training iteration(s) in `encode`; "
        f"1-minute load average {meta['load_average_1min']['before']:.1f} before, "
        f"{meta['load_average_1min']['after']:.1f} after (2 cores: the seconds are those of a "
        "shared machine; the peak memory does not depend on it).",
        "",
        "| shape | stage | block edge | s / iteration | rounded evaluation s | process s "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "peak_rss_mb" not in row:
            continue
        per_iteration = row.get("seconds_per_iteration")
        evaluation = row.get("rounded_evaluation_seconds")
        lines.append(
            f"| {row['shape']} | {row['stage']} | {row.get('block_edge') or 'whole'} | "
            f"{'' if per_iteration is None else f'{per_iteration:.1f}'} | "
            f"{'' if evaluation is None else f'{evaluation:.1f}'} | "
            f"{row['process_seconds']} | {row['peak_rss_mb']} |"
        )
    lines.append("")
    for row in rows:
        if row["stage"] == "encode":
            bits = row["bits_per_voxel"]
            lines.append(f"- {row['shape']} encode: {bits:.4f} bpv, seconds {row['seconds']}")
        if row.get("phase_peaks_mb"):
            phases = ", ".join(f"{name} {mb}" for name, mb in row["phase_peaks_mb"].items())
            lines.append(f"- {row['shape']} encode, peak RSS MiB by phase: {phases}")
        if row["stage"] == "decode equals reconstruction":
            same = row["equal"]
            lines.append(f"- {row['shape']}: the decoder's output is the encoder's: {same}")
    (args.out_dir / f"{args.stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
