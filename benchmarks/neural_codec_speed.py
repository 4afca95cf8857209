"""Speed of the neural codec on this machine (dev benchmark, not imported by the package).

- Training: steady-state seconds per iteration of the codec's training step, of its blocked
  variant (``volinr.neural_codec.blocked``) and of a plain autograd loop of the same model
  written the obvious way (``NaiveModel``: masked-convolution context, 1D-convolution
  upsampling; fresh noise tensors and a ``loss.item()`` every step), the same data and the
  same noise, on a 512x512 slice and a 93x64x64 volume; the variants are timed alternately,
  step by step, so that load from other processes hits them alike.
- Decoding: wall seconds of ``decode`` (entropy decoding, wavefront by wavefront, and the
  synthesis) of a file for a 512x512 slice and for a 93x64x64 volume.

    python benchmarks/neural_codec_speed.py --threads 1 --out benchmarks/results/neural_codec_speed

Timings on a shared machine vary between runs: compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from volinr.data.phantom import synthetic_head_phantom
from volinr.io import write_json
from volinr.neural_codec.codec import decode, encode
from volinr.neural_codec.geometry import kernel_layout
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.settings import CodecSettings
from volinr.neural_codec.training import Scheduled, Trainer
from volinr.outputs import atomic_path
from volinr.provenance import device_info, git_commit, versions

log = logging.getLogger("neural_codec_speed")


def test_images() -> dict[str, np.ndarray]:
    """A 512x512 phantom slice and a 93x64x64 phantom volume (synthetic: no data needed)."""
    volume = synthetic_head_phantom((93, 64, 64), seed=0).voxels
    slice_ = synthetic_head_phantom((8, 512, 512), seed=0).voxels[4]
    return {"slice_512x512": slice_, "volume_93x64x64": volume}


class NaiveModel(LatentCodecModel):
    """The same model written the obvious way: the context as a masked convolution of the
    grid, 2x upsampling as a 1D convolution over every row, the residual layers as
    ``F.conv2d``/``F.conv3d`` (the codec gathers shifted copies and multiplies instead:
    ``CausalContext``, ``_upsample_axis``, ``SmallConvolution``)."""

    def _upsample_axis(self, x, axis, length, level):
        taps = self.upsampling_taps
        taps = taps[level] if taps.ndim == 2 else taps
        zero = taps.new_zeros(1)
        kernel = torch.stack([torch.cat([taps, zero]), torch.cat([zero, taps.flip(0)])])
        moved = x.movedim(2 + axis, -1)
        n = moved.shape[-1]
        rows = F.pad(moved.reshape(-1, 1, n), (2, 2), mode="replicate")
        phases = F.conv1d(rows, kernel.unsqueeze(1))
        upsampled = phases.transpose(1, 2).reshape(*moved.shape[:-1], 2 * n)[..., :length]
        return upsampled.movedim(-1, 2 + axis)

    def synthesise(self, latents):
        act = F.gelu if self.settings.activation == "gelu" else F.relu
        upsampled = self.upsample(latents).reshape(len(latents), -1)
        features = upsampled
        pairs = list(zip(self.synthesis_weights, self.synthesis_biases, strict=True))
        for i, (w, b) in enumerate(pairs):
            features = torch.addmm(b[:, None], w, features)
            features = act(features) if i < len(pairs) - 1 else features
        if self.settings.synthesis_stabiliser:
            features = features + self.stabiliser_weight @ upsampled
        z = features.reshape(1, -1, *self.shape)
        conv = F.conv2d if self.ndim == 2 else F.conv3d
        for i, (w, b) in enumerate(zip(self.residual_weights, self.residual_biases, strict=True)):
            inner = F.pad(z if i == 0 else act(z), (1, 1) * self.ndim, mode="replicate")
            z = z + conv(inner, w, b)
        out = torch.addmm(self.output_bias[:, None], self.output_weight, z.reshape(z.shape[1], -1))
        return out.reshape(self.shape).clamp(0.0, 1.0)

    def laplace_parameters(self, latents, level):
        grid = latents[level]
        first = self.arm_weights[0]
        spatial = self.settings.context_size
        kernel_shape, index, padding = kernel_layout(self.context_offsets)
        kernel = first.new_zeros(first.shape[0], math.prod(kernel_shape))
        kernel = kernel.index_copy(1, torch.from_numpy(index), first[:, :spatial])
        kernel = kernel.reshape(first.shape[0], 1, *kernel_shape)
        padded = F.pad(grid[None, None], tuple(int(v) for v in padding[::-1].reshape(-1)))
        conv = F.conv2d if grid.dim() == 2 else F.conv3d
        h = conv(padded, kernel, self.arm_biases[0]).reshape(first.shape[0], -1)
        coarse = self.coarser_context(latents, level)
        count = 0 if coarse is None else coarse.shape[0]
        if count:
            h = h + first[:, spatial : spatial + count] @ coarse.reshape(count, -1)
        for i in range(1, len(self.arm_weights)):
            h = torch.relu(h)
            w, b = self.arm_weights[i], self.arm_biases[i]
            h = torch.addmm(b[:, None], w, h) + (h if i < len(self.arm_weights) - 1 else 0)
        if self.settings.arm_stabiliser:
            context, _ = self.context_rows(latents, level)
            h = h + self.arm_stabiliser_weight[:, : context.shape[0]] @ context
        return h[0], h[1]


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


def check_same_loss(trainers: dict[str, Trainer]) -> None:
    """The variants time the same model: their losses on the same noisy latents agree (a
    benchmark of a stale variant would compare different computations)."""
    losses = {}
    with torch.no_grad():
        for name, trainer in trainers.items():
            generator = torch.Generator().manual_seed(0)
            latents = [
                y + torch.rand(y.shape, generator=generator) - 0.5
                for y in trainer.model.scaled_latents()
            ]
            losses[name] = float(trainer.losses(latents)[0])
    reference = losses["codec"]
    if not all(math.isclose(v, reference, rel_tol=1e-4) for v in losses.values()):
        raise SystemExit(f"the variants' losses differ on the same latents: {losses}")


def make_trainer(image: np.ndarray, settings: CodecSettings, make=LatentCodecModel) -> Trainer:
    """A trainer of the model ``make`` builds (seed 0) on the image scaled to [0, 1], lambda
    1e-3: the set-up every speed benchmark here times (also neural_codec_compile.py and
    neural_codec_step_commits.py)."""
    target = torch.from_numpy(((image - image.min()) / np.ptp(image)).astype(np.float32))
    torch.manual_seed(0)
    return Trainer(make(image.shape, settings), target, 1e-3, settings, torch.Generator())


def training_seconds(image: np.ndarray, settings: CodecSettings, steps: int) -> dict:
    models = {
        "codec": LatentCodecModel,
        "blocked": lambda *a: LatentCodecModel(*a, blocked=True),
        "naive": NaiveModel,
    }
    trainers = {name: make_trainer(image, settings, make) for name, make in models.items()}
    check_same_loss(trainers)
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(steps + 2):
        for name, trainer in trainers.items():
            trainer.generator.manual_seed(step)  # the same noise for all
            start = time.perf_counter()
            if name == "naive":
                plain_step(trainer, settings.learning_rate)
            else:
                trainer.step(Scheduled("noise", 0.0, 0.0, settings.learning_rate))
            if step >= 2:  # the first steps allocate and warm up
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "steps_timed": steps,
        "seconds_per_iteration": median["codec"],
        "blocked_seconds_per_iteration": median["blocked"],
        "plain_autograd_seconds_per_iteration": median["naive"],
        "speedup": median["naive"] / median["codec"],
        "fastest_of_each": {name: min(values) for name, values in times.items()},
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
        f"`{result['command']}`. The machine is shared: 1-minute load average "
        f"{result['load_average_1min_before_after'][0]:.1f} before, "
        f"{result['load_average_1min_before_after'][1]:.1f} after (2 cores), so compare the "
        "variants' ratios, not the seconds.",
        "",
        "| image | s/iteration (codec step) | s/iteration (blocked step) | s/iteration (plain "
        "autograd loop) | speedup | decode s | file bytes | MACs/voxel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["images"].items():
        lines.append(
            f"| {name} | {row['seconds_per_iteration']:.3f} | "
            f"{row['blocked_seconds_per_iteration']:.3f} | "
            f"{row['plain_autograd_seconds_per_iteration']:.3f} | {row['speedup']:.2f}x | "
            f"{row['decode_seconds']:.3f} | {row['file_bytes']} | "
            f"{row['macs_per_voxel']['total']:.0f} |"
        )
    lines += [
        "",
        "Training: median of the timed steps, the variants alternating step by step on the "
        "same noise. Codec step: the default model (`CausalContext` gathers, upsampling as "
        "shifted multiply-adds with their own backward (`PolyphaseUpsample`), residual "
        "convolutions as one product over shifted "
        "copies, plain autograd for the MLPs), reused noise buffers, no host sync. Blocked "
        "step: the same with the MLPs through `neural_codec.blocked` (no stored activations). "
        "Plain autograd loop: the model written "
        "the obvious way (masked-convolution context, 1D-convolution upsampling, oneDNN "
        "convolutions), fresh noise "
        "and `loss.item()` every step; speedup = plain / codec. Decoding: median wall time of "
        "`decode` on a file of the default settings "
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
    settings = CodecSettings.make()
    # decoding time does not depend on the encoder's warm-up or refinement: both skipped
    decode_settings = CodecSettings.make(
        iterations=args.decode_training_iterations,
        warmup_candidates=1,
        network_refinement_passes=0,
    )
    images = {}
    load_before = os.getloadavg()[0]
    for name, image in test_images().items():
        row = training_seconds(image, settings, args.steps)
        row |= decode_seconds(image, decode_settings, args.decode_repeats)
        log.info("%s: %s", name, row)
        images[name] = row
    result = {
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
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
