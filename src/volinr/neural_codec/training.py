"""Rate-distortion training of one model at one operating point (lambda).

loss = MSE(synthesis, target) + lambda * bits / voxels, the target normalised to [0, 1] by the
image's min..max and the bits estimated by the entropy model. The quantisation proxy changes
in three phases (C3, Kim et al. 2024; Agustsson & Theis 2020):

1. additive uniform noise, y + u;
2. soft rounding with noise, the temperature T annealed from ``soft_round_start`` to
   ``soft_round_end``: r_T(s_T(y) + u) with uniform noise (r_T the soft round's conditional
   mean), or s_T(s_T(y) + n) with gaussian noise n (C3's and Cool-chic's), its standard
   deviation annealed from ``gaussian_noise_start`` to ``gaussian_noise_end``;
3. hard rounding, the latents moved by a straight-through gradient (``final_rounding`` ste)
   or not at all (hard: only the networks train), at a lower learning rate: only where
   ``noise_fraction + soft_round_fraction < 1``; by default the soft phase ends the schedule
   (a final phase raised the hard-rounded loss it was meant to lower: tuning round 23).

The learning rate (of the networks' optimiser, Adam or SOAP, and the latents' Adam) follows a
cosine from ``learning_rate`` to 0 over phases 1-2 and again from ``ste_learning_rate_factor``
x that over phase 3.

Robustness (an overfitted codec that trains badly gives a file that is silently worse):

- warm-up: ``warmup_candidates`` models, each initialised with its own seed, train for the
  first ``warmup_iterations`` steps (before the last phase at most); the one whose hard-rounded loss
  (with the run's lambda) is lowest then goes on (Cool-chic's recipe); the others' steps are
  extra encoder time; with ``warmup_distortion_only`` the warm-up steps ignore the rate;
- the best state: from the soft-rounding phase on, each logging point evaluates the loss
  with hard-rounded latents (what the file will hold) and keeps the best state; the kept
  state is the one coded;
- restarts: a logging point whose step loss is not finite, or whose rounded loss exceeds
  ``restart_factor`` x the best so far, reloads the best state (and its optimiser state) and
  halves the learning rate from there on;
- flags: the record says whether the last rounded loss rose above the best (the kept state
  is the best, but the schedule did not converge there) and how many restarts happened.

The loop makes no host sync between logging points (``.item()`` only there) and reuses its
noise buffers; it runs on the model's device (CPU or CUDA) and takes its thread count from
the caller.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from volinr.neural_codec.block_training import BlockSteps
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.optimisers import Optimisers, network_optimiser
from volinr.neural_codec.rounding import soft_round, soft_round_conditional_mean
from volinr.neural_codec.settings import CodecSettings
from volinr.progress import Progress

log = logging.getLogger(__name__)

# The rounded loss may end this much above the best seen before the point is flagged.
LOSS_ROSE_TOLERANCE = 0.01


@dataclass
class TrainingRecord:
    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0
    warmup: list[dict] = field(default_factory=list)
    restarts: int = 0
    best_rounded_loss: float = math.nan
    final_rounded_loss: float = math.nan
    loss_rose_at_end: bool = False

    def as_dict(self) -> dict:
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "warmup": self.warmup,
            "restarts": self.restarts,
            "best_rounded_loss": finite(self.best_rounded_loss),
            "final_rounded_loss": finite(self.final_rounded_loss),
            "loss_rose_at_end": self.loss_rose_at_end,
        }


class Scheduled(NamedTuple):
    """One iteration's quantisation proxy and learning rate."""

    phase: str  # noise, soft, then ste or hard
    temperature: float  # of the soft rounding
    noise_std: float  # of the soft phase's gaussian noise
    learning_rate: float


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
        block_edge: int | None = None,
    ):
        """``block_edge``: train block by block (``block_training``), blocks of that edge."""
        self.model = model
        self.target = target
        self.lam = lam
        self.settings = settings
        self.generator = generator
        self.voxels = target.numel()
        latents = {id(theta) for theta in model.latents}
        networks = [p for p in model.parameters() if id(p) not in latents]
        # the latents' learning rate relative to the networks' (the group's "factor")
        optimisers = [network_optimiser(networks, settings)]
        self.blocks = None
        if block_edge is None:
            factor = settings.latent_learning_rate_factor
            latent_group = {"params": list(model.latents), "factor": factor}
            optimisers.insert(0, torch.optim.Adam([latent_group], lr=settings.learning_rate))
            self.noise = [torch.empty_like(theta) for theta in model.latents]
        else:
            self.blocks = BlockSteps(model, target, block_edge)
        self.optimizer = Optimisers(optimisers)

    def quantised_latents(self, at: Scheduled) -> list[torch.Tensor]:
        return self.proxy(self.model.scaled_latents(), at, self.noise)

    def proxy(self, latents, at: Scheduled, noise=None) -> list[torch.Tensor]:
        """The phase's stand-in for rounding ``latents`` (fresh noise buffers by default)."""
        if at.phase == "hard":
            # detached: the latents get no gradient, so neither optimiser moves them (Adam's
            # momentum would, on a zero gradient)
            return [torch.round(y).detach() for y in latents]
        if at.phase == "ste":
            return [y + (torch.round(y) - y).detach() for y in latents]
        noise = noise if noise is not None else [torch.empty_like(y) for y in latents]
        t = at.temperature
        if at.phase == "soft" and self.settings.soft_round_noise == "gaussian":
            for buffer in noise:
                buffer.normal_(0.0, at.noise_std, generator=self.generator)
            return [
                soft_round(soft_round(y, t) + n, t) for y, n in zip(latents, noise, strict=True)
            ]
        for buffer in noise:
            buffer.uniform_(-0.5, 0.5, generator=self.generator)
        if at.phase == "noise":
            return [y + u for y, u in zip(latents, noise, strict=True)]
        return [
            soft_round_conditional_mean(soft_round(y, t) + u, t)
            for y, u in zip(latents, noise, strict=True)
        ]

    def losses(
        self, latents: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, mse, bits per voxel) of quantised latents."""
        reconstruction = self.model.synthesise(latents)
        mse = torch.mean((reconstruction - self.target) ** 2)
        bits_per_voxel = self.model.latent_bits(latents) / self.voxels
        return mse + self.lam * bits_per_voxel, mse, bits_per_voxel

    def step(self, at: Scheduled) -> tuple:
        for group in self.optimizer.param_groups:
            group["lr"] = at.learning_rate * group["factor"]
        if self.blocks is not None:
            return self.blocks.iteration(
                lambda latents: self.proxy(latents, at),
                self.lam,
                self.optimizer,
                at.learning_rate,
                self.settings.latent_learning_rate_factor,
                self.generator,
            )
        loss, mse, bits = self.losses(self.quantised_latents(at))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss, mse, bits

    def schedule(self, iteration: int) -> Scheduled:
        """The phase, soft-rounding temperature, noise and learning rate (before restarts) at
        ``iteration``."""
        s = self.settings
        noise_steps, soft_steps, final_steps = s.phase_iterations()
        smooth_steps = noise_steps + soft_steps
        if iteration < noise_steps:
            return Scheduled("noise", 0.0, 0.0, s.learning_rate * _cosine(iteration, smooth_steps))
        if iteration < smooth_steps:
            progress = (iteration - noise_steps) / max(soft_steps - 1, 1)
            temperature = s.soft_round_start * (s.soft_round_end / s.soft_round_start) ** progress
            noise_std = s.gaussian_noise_start + progress * (
                s.gaussian_noise_end - s.gaussian_noise_start
            )
            rate = s.learning_rate * _cosine(iteration, smooth_steps)
            return Scheduled("soft", temperature, noise_std, rate)
        rate = s.learning_rate * s.ste_learning_rate_factor
        rate *= _cosine(iteration - smooth_steps, final_steps)
        return Scheduled(s.final_rounding, 0.0, 0.0, rate)

    def state(self) -> tuple[dict, dict]:
        """The model's and the optimiser's state (block by block, the latents' moments are
        not kept: ``BoxAdam``)."""
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict())

    def load(self, state: tuple[dict, dict]) -> None:
        self.model.load_state_dict(state[0])
        # a copy: an optimiser adopts the tensors it is given and steps them in place, which
        # would change the kept state that a second restart goes back to
        self.optimizer.load_state_dict(copy.deepcopy(state[1]))
        if self.blocks is not None:
            self.blocks.latent_optimizer.release()

    def run(self, start=0, stop=None, record=None, label="neural codec") -> TrainingRecord:
        """Train iterations [start, stop) of the schedule (to the end by default), sampling the
        curve into ``record``; keep the best rounded state of the stretch. ``label``: the
        progress bar's and the progress log lines' name (``volinr.progress``)."""
        s = self.settings
        record = record or TrainingRecord()
        record.iterations = s.iterations
        stop = s.iterations if stop is None else stop
        best_loss, best_state, rate_factor = math.inf, None, 1.0
        initial = self.state()
        began = time.perf_counter()
        with Progress(label, stop, start) as progress:
            for iteration in range(start, stop):
                at = self.schedule(iteration)
                at = at._replace(learning_rate=at.learning_rate * rate_factor)
                loss, mse, bits = self.step(at)
                progress.advance()
                last = iteration == s.iterations - 1
                if (iteration + 1) % s.log_every != 0 and not last:
                    continue
                point = {
                    "iteration": iteration + 1,
                    "phase": at.phase,
                    "loss": loss.item(),
                    "mse": mse.item(),
                    "bits_per_voxel": bits.item(),
                    "learning_rate": at.learning_rate,
                    "seconds": record.seconds + time.perf_counter() - began,
                }
                record.curve.append(point)
                diverged = not math.isfinite(point["loss"])
                if at.phase != "noise" and not diverged:
                    # The step's loss describes the state before its update: evaluate the state
                    # the update left, which is the one that would be kept.
                    rounded = self.exact_loss()
                    point["rounded_loss"] = rounded
                    record.final_rounded_loss = rounded
                    diverged = (
                        best_state is not None and not rounded <= s.restart_factor * best_loss
                    )
                    if not diverged and rounded < best_loss:
                        # one copy at a time (a volume's copy is GBs): the old ones go first
                        initial = best_state = None
                        best_loss, best_state = rounded, self.state()
                progress.report(phase=at.phase, loss=point["loss"], bpv=point["bits_per_voxel"])
                if diverged:
                    self.load(best_state or initial)
                    rate_factor *= 0.5
                    record.restarts += 1
                    log.info(
                        "neural codec: loss %.4g at iteration %d (best rounded %.4g): back to the "
                        "best state, learning rate x%g",
                        point.get("rounded_loss", point["loss"]), iteration + 1, best_loss,
                        rate_factor,
                    )  # fmt: skip
        if best_state is not None:
            self.load(best_state)
        record.best_rounded_loss = best_loss
        record.loss_rose_at_end = bool(
            record.final_rounded_loss > best_loss * (1 + LOSS_ROSE_TOLERANCE)
        )
        record.seconds += time.perf_counter() - began
        return record

    @torch.no_grad()
    def exact_loss(self) -> float:
        """Loss with hard-rounded latents (the float entropy model's estimate of the rate)."""
        if self.blocks is not None:
            return self.blocks.exact_loss(self.lam)
        latents = [torch.round(y) for y in self.model.scaled_latents()]
        return self.losses(latents)[0].item()


def warm_up(make_trainer, count: int, iterations: int):
    """Train candidates 0 .. count - 1 the schedule's first ``iterations`` steps, one after
    the other, keeping only the best so far alive (memory for two, not ``count``); the kept
    trainer (lowest hard-rounded loss, the first on ties), its index and every record."""
    best, best_score, chosen, records = None, math.inf, 0, []
    for index in range(count):
        trainer = make_trainer(index)
        lam = trainer.lam
        if trainer.settings.warmup_distortion_only:
            trainer.lam = 0.0  # the warm-up fits the image first, as Cool-chic's does
        record = trainer.run(0, iterations, label=f"neural codec warm-up {index + 1}/{count}")
        trainer.lam = lam
        record.final_rounded_loss = trainer.exact_loss()
        if trainer.blocks is not None:
            trainer.blocks.latent_optimizer.release()  # memory for one candidate's moments
        records.append(record)
        score = record.final_rounded_loss if math.isfinite(record.final_rounded_loss) else math.inf
        if best is None or score < best_score:
            best, best_score, chosen = trainer, score, index
        del trainer
    return best, chosen, records


def train(
    make_model,
    target: torch.Tensor,
    lam: float,
    settings: CodecSettings,
    seed: int,
    block_edge: int | None = None,
) -> tuple[LatentCodecModel, TrainingRecord]:
    """Train at ``lam`` and return the kept model and its record.

    ``make_model(seed)`` builds a freshly initialised model on the target's device; the
    warm-up builds ``warmup_candidates`` (c) of them (seeds s c, s c + 1, ..., s c + c - 1 for
    the run's seed s) and trains each for the first min(warmup_iterations, iterations
    before the last phase) steps. ``block_edge``: train block by block (``Trainer``).
    """
    device = target.device
    count = settings.warmup_candidates
    noise_steps, soft_steps, _ = settings.phase_iterations()
    warmup_steps = min(settings.warmup_iterations, noise_steps + soft_steps) if count > 1 else 0

    def make_trainer(index: int) -> Trainer:
        # seed s's candidates are s x count + index: no two seeds share a candidate
        candidate_seed = seed * count + index if warmup_steps else seed
        generator = torch.Generator(device=device).manual_seed(candidate_seed)
        model = make_model(candidate_seed)
        trainer = Trainer(model, target, lam, settings, generator, block_edge)
        trainer.seed = candidate_seed
        return trainer

    if not warmup_steps:
        trainer = make_trainer(0)
        return trainer.model, trainer.run()
    trainer, chosen, records = warm_up(make_trainer, count, warmup_steps)
    record = records[chosen]
    record.warmup = [
        {
            "candidate": i,
            "seed": seed * count + i,
            "rounded_loss": r.final_rounded_loss if math.isfinite(r.final_rounded_loss) else None,
            "seconds": r.seconds,
        }
        for i, r in enumerate(records)
    ]
    # every candidate's steps are the encoder's time
    record.seconds = sum(r.seconds for r in records)
    log.info("neural codec warm-up: candidate %d of %d kept", chosen, count)
    trainer.run(warmup_steps, None, record)
    return trainer.model, record
