"""Speed of the neural codec on this machine (dev benchmark, not imported by the package).

- Training: steady-state seconds per iteration of the codec's training step (the per-voxel
  MLPs run block by block, ``volinr.neural_codec.blocked``; noise buffers reused; no host
  sync) against a plain autograd loop of the same model (``LatentCodecModel(blocked=False)``,
  fresh noise tensors and a ``loss.item()`` every step), the same data and the same noise, on
  a 512x512 slice and a 93x64x64 volume; the two are timed alternately, step by step, so
  that load from other processes hits both alike.
- Decoding: wall seconds of ``decode`` (entropy decoding, wavefront by wavefront, and the
  synthesis) of a file for a 512x512 slice and for a 93x64x64 volume.

    python benchmarks/neural_codec_speed.py --threads 1 --out benchmarks/results/neural_codec_speed

Timings on a shared machine vary between runs: compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from volinr.io import atomic_path, write_json
from volinr.neural_codec.codec import decode, encode
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.settings import CodecSettings
from volinr.neural_codec.training import Trainer
from volinr.provenance import device_info, git_commit, versions
from volinr.volumes import synthetic_head_phantom

log = logging.getLogger("neural_codec_speed")


def test_images() -> dict[str, np.ndarray]:
    """A 512x512 phantom slice and a 93x64x64 phantom volume (synthetic: no data needed)."""
    volume = synthetic_head_phantom((93, 64, 64), seed=0).voxels
    slice_ = synthetic_head_phantom((8, 512, 512), seed=0).voxels[4]
    return {"slice_512x512": slice_, "volume_93x64x64": volume}


def plain_step(trainer: Trainer, learning_rate: float) -> float:
    """The loop a straightforward implementation writes: autograd through the model, fresh
    noise tensors every step, the loss read back (a host sync) every step."""
    for group in trainer.optimizer.param_groups:
        group["lr"] = learning_rate
    latents = [
        y + torch.rand(y.shape, generator=trainer.generator) - 0.5
        for y in trainer.model.scaled_latents()
    ]
    loss = trainer.losses(latents)[0]
    trainer.optimizer.zero_grad()
    loss.backward()
    trainer.optimizer.step()
    return loss.item()


def training_seconds(image: np.ndarray, settings: CodecSettings, steps: int) -> dict:
    target = torch.from_numpy(((image - image.min()) / np.ptp(image)).astype(np.float32))
    trainers = {}
    for blocked in (True, False):
        torch.manual_seed(0)
        model = LatentCodecModel(image.shape, settings, blocked=blocked)
        trainers[blocked] = Trainer(model, target, 1e-3, settings, torch.Generator())
    times: dict[bool, list[float]] = {True: [], False: []}
    for step in range(steps + 2):
        for blocked, trainer in trainers.items():
            trainer.generator.manual_seed(step)  # the same noise for both
            start = time.perf_counter()
            if blocked:
                trainer.step("noise", 0.0, settings.learning_rate)
            else:
                plain_step(trainer, settings.learning_rate)
            if step >= 2:  # the first steps allocate and warm up
                times[blocked].append(time.perf_counter() - start)
    blocked, plain = statistics.median(times[True]), statistics.median(times[False])
    return {
        "steps_timed": steps,
        "seconds_per_iteration": blocked,
        "plain_autograd_seconds_per_iteration": plain,
        "speedup": plain / blocked,
    }


def decode_seconds(image: np.ndarray, settings: CodecSettings, repeats: int) -> dict:
    encoded = encode(image, None, settings, lam=1e-4, seed=0, verify=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decoded = decode(encoded.data, "benchmark")
        times.append(time.perf_counter() - start)
    assert np.array_equal(decoded, encoded.reconstruction)
    return {
        "file_bytes": len(encoded.data),
        "training_iterations": settings.iterations,
        "decode_seconds": statistics.median(times),
        "macs_per_voxel": encoded.record["macs_per_voxel"],
    }


def markdown(result: dict) -> str:
    lines = [
        "# Neural codec speed",
        "",
        f"Machine: {result['device']['name']}, {result['threads']} thread(s), torch "
        f"{result['device']['torch']}; commit {result['commit']}. Command: "
        f"`{result['command']}`.",
        "",
        "| image | s/iteration (blocked step) | s/iteration (plain autograd) | speedup | "
        "decode s | file bytes | MACs/voxel |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["images"].items():
        lines.append(
            f"| {name} | {row['seconds_per_iteration']:.3f} | "
            f"{row['plain_autograd_seconds_per_iteration']:.3f} | {row['speedup']:.2f}x | "
            f"{row['decode_seconds']:.3f} | {row['file_bytes']} | "
            f"{row['macs_per_voxel']['total']:.0f} |"
        )
    lines += [
        "",
        "Training: median of the timed steps, the two variants alternating step by step on the "
        "same noise. Decoding: median wall time of `decode` on a file of the default settings "
        f"after {result['decode_training_iterations']} training iterations (decoding time "
        "does not depend on how long the encoder trained, beyond the latents' values).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--decode-repeats", type=int, default=3)
    parser.add_argument("--decode-training-iterations", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True, help="output stem (.json, .md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    settings = CodecSettings()
    decode_settings = CodecSettings(iterations=args.decode_training_iterations)
    images = {}
    for name, image in test_images().items():
        row = training_seconds(image, settings, args.steps)
        row |= decode_seconds(image, decode_settings, args.decode_repeats)
        log.info("%s: %s", name, row)
        images[name] = row
    result = {
        "command": "python benchmarks/neural_codec_speed.py "
        f"--threads {args.threads} --steps {args.steps} --out {args.out}",
        "device": device_info(torch.device("cpu")),
        "threads": args.threads,
        "versions": versions(),
        "commit": git_commit(),
        "settings": settings.as_dict(),
        "decode_training_iterations": args.decode_training_iterations,
        "images": images,
    }
    write_json(args.out.with_suffix(".json"), result)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    log.info(json.dumps(images, indent=1))


if __name__ == "__main__":
    main()
