"""Rate-distortion training of one model at one operating point (lambda).

loss = MSE(synthesis, target) + lambda * bits / voxels, the target normalised to [0, 1] by the
image's min..max and the bits estimated by the entropy model. The quantisation proxy changes
in three phases (C3, Kim et al. 2024; Agustsson & Theis 2020):

1. additive uniform noise, y + u;
2. soft rounding with noise, r_T(s_T(y) + u), the temperature T annealed from
   ``soft_round_start`` to ``soft_round_end``;
3. hard rounding with a straight-through gradient, at a lower learning rate; the best state
   seen at a logging point is kept.

Adam's learning rate follows a cosine from ``learning_rate`` to 0 over phases 1-2 and again
from ``ste_learning_rate_factor`` x that over phase 3. The loop makes no host sync between
logging points (``.item()`` only there), reuses its noise buffers, and takes its thread
count from the caller (``torch.set_num_threads``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import torch

from volinr.neural_codec.model import LatentCodecModel, soft_round, soft_round_conditional_mean
from volinr.neural_codec.settings import CodecSettings

log = logging.getLogger(__name__)


@dataclass
class TrainingRecord:
    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


class Trainer:
    """Owns the optimiser and the noise buffers of one model's training."""

    def __init__(
        self,
        model: LatentCodecModel,
        target: torch.Tensor,
        lam: float,
        settings: CodecSettings,
        generator: torch.Generator,
    ):
        self.model = model
        self.target = target
        self.lam = lam
        self.settings = settings
        self.generator = generator
        self.voxels = target.numel()
        self.optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        self.noise = [torch.empty_like(theta) for theta in model.latents]

    def quantised_latents(self, phase: str, temperature: float) -> list[torch.Tensor]:
        latents = self.model.scaled_latents()
        if phase == "ste":
            return [y + (torch.round(y) - y).detach() for y in latents]
        for buffer in self.noise:
            buffer.uniform_(-0.5, 0.5, generator=self.generator)
        if phase == "noise":
            return [y + u for y, u in zip(latents, self.noise, strict=True)]
        return [
            soft_round_conditional_mean(soft_round(y, temperature) + u, temperature)
            for y, u in zip(latents, self.noise, strict=True)
        ]

    def losses(
        self, latents: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, mse, bits per voxel) of quantised latents."""
        reconstruction = self.model.synthesise(latents)
        mse = torch.mean((reconstruction - self.target) ** 2)
        bits_per_voxel = self.model.latent_bits(latents) / self.voxels
        return mse + self.lam * bits_per_voxel, mse, bits_per_voxel

    def step(self, phase: str, temperature: float, learning_rate: float) -> tuple:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        loss, mse, bits = self.losses(self.quantised_latents(phase, temperature))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss, mse, bits

    def run(self) -> TrainingRecord:
        s = self.settings
        noise_steps, soft_steps, ste_steps = s.phase_iterations()
        smooth_steps = noise_steps + soft_steps
        record = TrainingRecord(iterations=s.iterations)
        best_loss, best_state = math.inf, None
        start = time.perf_counter()
        for iteration in range(s.iterations):
            if iteration < noise_steps:
                phase, temperature = "noise", 0.0
            elif iteration < smooth_steps:
                phase = "soft"
                progress = (iteration - noise_steps) / max(soft_steps - 1, 1)
                temperature = s.soft_round_start * (s.soft_round_end / s.soft_round_start) ** (
                    progress
                )
            else:
                phase, temperature = "ste", 0.0
            if phase == "ste":
                rate = s.learning_rate * s.ste_learning_rate_factor
                learning_rate = rate * _cosine(iteration - smooth_steps, ste_steps)
            else:
                learning_rate = s.learning_rate * _cosine(iteration, smooth_steps)
            loss, mse, bits = self.step(phase, temperature, learning_rate)
            last = iteration == s.iterations - 1
            if (iteration + 1) % s.log_every == 0 or last:
                point = {
                    "iteration": iteration + 1,
                    "phase": phase,
                    "loss": loss.item(),
                    "mse": mse.item(),
                    "bits_per_voxel": bits.item(),
                    "learning_rate": learning_rate,
                    "seconds": time.perf_counter() - start,
                }
                record.curve.append(point)
                log.debug("neural codec training %s", point)
                if phase == "ste":
                    # The step's loss describes the state before its update: evaluate the
                    # state the update left, which is the one that would be kept.
                    point["rounded_loss"] = self.exact_loss()
                    if point["rounded_loss"] < best_loss:
                        best_loss = point["rounded_loss"]
                        best_state = copy.deepcopy(self.model.state_dict())
        if best_state is not None:
            self.model.load_state_dict(best_state)
        record.seconds = time.perf_counter() - start
        return record

    @torch.no_grad()
    def exact_loss(self) -> float:
        """Loss with hard-rounded latents (the float entropy model's estimate of the rate)."""
        latents = [torch.round(y) for y in self.model.scaled_latents()]
        return self.losses(latents)[0].item()


def train(
    model: LatentCodecModel,
    target: torch.Tensor,
    lam: float,
    settings: CodecSettings,
    seed: int,
) -> TrainingRecord:
    generator = torch.Generator().manual_seed(seed)
    return Trainer(model, target, lam, settings, generator).run()
