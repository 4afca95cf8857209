"""Choosing each network tensor's quantisation step by rate-distortion cost.

Tensor by tensor, in file order, every step 2^-e of ``candidate_exponents`` is tried with the
tensors before it already quantised and the ones after it still float; the step kept is the
one with the least

    MSE + lambda * (latent bits + parameter bits) / voxels,

where a synthesis or upsampling tensor changes only the MSE and its own bits, and an
entropy-model tensor only the latent bits and its own bits, so each candidate re-runs only
the part of the model it affects. A synthesis tensor's candidates start from its stage's
input (``LatentCodecModel.synthesis_stages``), cached: the tensors before it are quantised and
no longer change it, and the stages run the very operations ``synthesise`` runs, so every cost
is the one the whole synthesis gives, to the bit. Steps are tried coarse to fine, and the
search stops at the first step whose bits alone, added to the cost of the tensor at its float
values (what a finer step approaches), reach the best cost found: no finer step can then win,
as its bits only grow. The cost is not monotone in the step, so a run of worse steps is no
reason to stop: a rule that stopped after three (once every sign was kept) quantised an
output layer's [0.58, 0.33] to [1, 0] (its steps 1/2 to 1/8 were worse still) and cost a
default-run point 4.8 dB. A finer step that gives the very same values is skipped (a bias of
0.52 is 0.5 from step 2^-1 to 2^-4).

Then, with every tensor quantised, ``refinement_passes`` greedy passes move single integers
(Cool-chic's discrete refinement of its quantised networks, read from its design): in file
order, each integer q of each tensor is tried at q - 1 and q + 1 and, in a direction that
lowers the cost, further while it keeps lowering it; a move is kept only where the whole cost
(the same cost as above, its other term measured with every other tensor as coded) drops, so a
pass never raises it. A pass costs about three evaluations a coded parameter, each as cheap as
what it changes allows: a 1x1 synthesis layer's candidate updates one column and the next layer
by a rank-one term (``synthesis_moves``), an entropy-model candidate runs on the distinct
(context, latent) columns only, each counted as often as it occurs; both equal the full
evaluation up to float rounding. It measures on the whole image only up to
``regions.REFINEMENT_SAMPLE_VOXELS`` (the embedded slice, headsq) and on a lattice of boxes of
that many voxels in all beyond (a real CT volume: on the step search's 4 M-voxel sample of a
113x256x256 one, the first pass had done 4 of its 19 tensors after 10 minutes). Moves found on
the boxes are kept, tensor by tensor, only where the step search's own measure (the whole
image, or its sample of a volume) says they lower the cost: alone, a sample of a tenth of a
phantom volume raised its whole cost (neural_codec_tuning.md, round 22).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from volinr.neural_codec.laplace import laplace_bits
from volinr.neural_codec.latent_coding import MAX_ARM_EXPONENT, MAX_ARM_WEIGHT
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.parameter_coding import (
    MAX_EXPONENT,
    MAX_WIDTH_BITS,
    QuantisedParameter,
    parameter_bits,
    quantise,
    with_best_scale,
)
from volinr.neural_codec.regions import (
    BlockPlan,
    block_bits_by_level,
    block_output,
    crop_latents,
    synthesis_stages_of_block,
)
from volinr.neural_codec.synthesis_moves import SingleMoveDistortion, layer_of

log = logging.getLogger(__name__)


def candidate_exponents(name: str) -> range:
    return range(0, (MAX_ARM_EXPONENT if name.startswith("arm.") else MAX_EXPONENT) + 1)


def _allowed(name: str, parameter: QuantisedParameter) -> bool:
    if not name.startswith("arm."):
        return True
    return parameter.half_width <= MAX_ARM_WEIGHT << parameter.exponent


@torch.no_grad()
def quantise_network(
    model: LatentCodecModel,
    latents: list[torch.Tensor],
    target: torch.Tensor,
    lam: float,
    plans: list[BlockPlan] | None = None,
    refinement_passes: int = 0,
    refinement_plans: list[BlockPlan] | None = None,
) -> list[QuantisedParameter]:
    """Quantise the model's coded tensors in place; return them with their steps.

    ``plans``: measure the costs on these blocks only (a sample of a volume too large to
    synthesise whole once per candidate step): their MSE, and their latents' bits scaled to
    the image's voxels. ``refinement_passes``: greedy passes over single integers after,
    measured on ``refinement_plans`` (None: the whole image; regions.refinement_sample)."""
    stages = model.synthesis_stages()
    stage_of = {name: i for i, (names, _) in enumerate(stages) for name in names}
    order = [stage_of[name] for name in model.coded_parameters() if name in stage_of]
    if order != sorted(order):
        raise RuntimeError("the coded tensors are not in synthesis-stage order")
    cost_per_bit = lam / target.numel()
    sample = _Sample(model, latents, target, plans, stage_of)
    chosen: list[QuantisedParameter] = []
    for name, tensor in model.coded_parameters().items():
        other_term = sample.other_term(name, lam)
        best = search_step(name, tensor.detach().clone(), other_term, cost_per_bit)
        tensor.copy_(best.values())
        chosen.append(best)
        log.debug("quantised %s with step 2^-%d", name, best.exponent)
    del sample  # its caches (stage inputs, entropy-model rows) are rebuilt fresh a pass
    for done in range(refinement_passes):
        # fresh samples: their cached stage inputs hold the tensors as they were when built
        trial = _Sample(model, latents, target, refinement_plans, stage_of)
        kept = (
            None if refinement_plans is None else _Sample(model, latents, target, plans, stage_of)
        )
        started, moved, undone = time.perf_counter(), 0, 0
        for i, (name, tensor) in enumerate(model.coded_parameters().items()):
            other_term = trial.other_term(name, lam, single_moves=True)
            refined, changed = refine_integers(chosen[i], other_term, cost_per_bit)
            if changed and kept is not None:
                # moves found on the refinement's small sample are kept only where the step
                # search's measure agrees: on a 10% sample they raised the phantom's cost
                other_term = kept.other_term(name, lam)
                after, before = (
                    coded_cost(p, other_term, cost_per_bit) for p in (refined, chosen[i])
                )
                if not after < before:
                    refined, changed, undone = chosen[i], 0, undone + 1
            chosen[i] = refined
            tensor.copy_(refined.values())
            moved += changed
        log.info(
            "network refinement pass %d on %d voxel(s) moved %d integer(s) (%d tensor(s) "
            "undone) in %.0f s", done + 1, trial.sampled, moved, undone,
            time.perf_counter() - started,
        )  # fmt: skip
        if not moved:
            break
    return chosen


def coded_cost(
    parameter: QuantisedParameter,
    other_term: Callable[[torch.Tensor], float],
    cost_per_bit: float,
) -> float:
    """The tensor's share of the coded cost: the other term at its values + its bits' cost."""
    return other_term(parameter.values()) + cost_per_bit * parameter_bits(parameter)


class _Sample:
    """Where the costs are measured: the whole image (``plans`` None) or blocks of it, whose
    MSE is voxel-weighted and whose latents' bits are scaled to the image's voxels."""

    def __init__(self, model, latents, target, plans, stage_of):
        self.model, self.latents, self.plans, self.stage_of = model, latents, plans, stage_of
        self.voxels = target.numel()
        if plans is None:
            self.sampled = self.voxels
            self.parts = [_Part(model.synthesis_stages(), latents, target, lambda output: output)]
            # the entropy model's input rows and the latents do not change while its weights
            # do: built once, each distinct (rows, latent) column kept once with its count
            # (about an eighth of a slice's columns at lambda 0.001: most latents are zeros
            # among zeros), so a candidate runs the entropy model on those alone
            self.rows = [_distinct_columns(model, latents, level) for level in range(len(latents))]
            return
        self.sampled = sum(plan.voxels for plan in plans)
        self.parts = [
            _Part(
                synthesis_stages_of_block(model, plan),
                crop_latents(latents, plan),
                target[plan.block.slices],
                lambda output, plan=plan: block_output(output, plan),
            )
            for plan in plans
        ]

    def distortion(self, name: str) -> float:
        errors = [part.mean_squared_error(self.stage_of[name]) for part in self.parts]
        if self.plans is None:
            return errors[0]
        weighted = zip(errors, self.plans, strict=True)
        return sum(e * plan.voxels for e, plan in weighted) / self.sampled

    def latent_bits(self) -> float:
        if self.plans is None:
            bits = [
                counts @ laplace_bits(values, *self.model.arm(context, first))
                for context, first, values, counts in self.rows
            ]
            return torch.stack(bits).sum().item()
        bits = sum(
            torch.stack(block_bits_by_level(self.model, part.latents, plan)).sum().item()
            for part, plan in zip(self.parts, self.plans, strict=True)
        )
        return bits * self.voxels / self.sampled

    def other_term(
        self, name: str, lam: float, single_moves: bool = False
    ) -> Callable[[torch.Tensor], float]:
        """The cost term ``name``'s values change; ``single_moves``: for the refinement's
        candidates, which move one integer (``synthesis_moves``; settle() after a kept move)."""
        tensor = self.model.coded_parameters()[name]

        def other_term(values: torch.Tensor) -> float:
            tensor.copy_(values)
            if name.startswith("arm."):  # the entropy model moves the rate, not the MSE
                return lam * self.latent_bits() / self.voxels
            return self.distortion(name)

        layer = layer_of(self.model, name)
        if single_moves and self.plans is None and layer is not None:
            stage = self.stage_of[name]
            return SingleMoveDistortion(self.model, layer, tensor, self.parts[0], stage, other_term)
        return other_term


def _distinct_columns(model: LatentCodecModel, latents: list[torch.Tensor], level: int):
    """Grid ``level``'s distinct entropy-model input columns (the context rows over the latent
    coded with them): (rows, the first layer's weight, latents, how often each occurs); the
    weight is the view ``context_rows`` returns, so it follows the model's tensor."""
    context, first = model.context_rows(latents, level)
    columns = torch.cat([context, latents[level].reshape(1, -1)])
    distinct, counts = torch.unique(columns, dim=1, return_counts=True)
    return distinct[:-1], first, distinct[-1], counts.to(distinct.dtype)


def refine_integers(
    parameter: QuantisedParameter,
    other_term: Callable[[torch.Tensor], float],
    cost_per_bit: float,
) -> tuple[QuantisedParameter, int]:
    """One greedy pass over the tensor's integers (the module's docstring): the refined
    tensor and how many of its integers moved. The cost never rises."""

    def cost_of(candidate: QuantisedParameter) -> float:
        return coded_cost(candidate, other_term, cost_per_bit)

    best, best_cost, moved = parameter, cost_of(parameter), 0
    for index in range(parameter.integers.size):
        start = best
        for sign in (-1, 1):
            shift = sign
            while True:
                integers = start.integers.copy()
                integers[index] += shift
                candidate = _candidate(start, integers)
                if candidate is None:
                    break
                cost = cost_of(candidate)
                if not cost < best_cost:
                    break
                best, best_cost, shift = candidate, cost, shift + sign
            if best is not start:
                break  # this direction lowered the cost: the other cannot start from here
        if best is not start:
            moved += 1
            settle = getattr(other_term, "settle", None)  # the next candidates move from here
            if settle is not None:
                settle(best.values())
    return best, moved


def _candidate(parameter: QuantisedParameter, integers) -> QuantisedParameter | None:
    if not int(np.abs(integers).max(initial=0)) < 1 << MAX_WIDTH_BITS:
        return None
    candidate = with_best_scale(
        QuantisedParameter(parameter.name, parameter.shape, parameter.exponent, integers)
    )
    return candidate if _allowed(parameter.name, candidate) else None


def search_step(
    name: str,
    original: torch.Tensor,
    other_term: Callable[[torch.Tensor], float],
    cost_per_bit: float,
) -> QuantisedParameter:
    """The step of ``candidate_exponents`` with the least other_term(values) + cost_per_bit x
    the tensor's bits, coarse to fine, stopping where no finer step can win (the module's
    docstring); ``other_term`` of the original values is the bound."""
    floor = other_term(original)
    best_cost, best, previous = float("inf"), None, None
    for exponent in candidate_exponents(name):
        parameter = quantise(name, original, exponent)
        if parameter is None or not _allowed(name, parameter):
            continue
        values = parameter.values()
        if previous is not None and torch.equal(values, previous):
            continue  # the same values on a finer grid: only more bits
        previous = values
        bits_cost = cost_per_bit * parameter_bits(parameter)
        if floor + bits_cost >= best_cost:
            break
        cost = other_term(values) + bits_cost
        if cost < best_cost:
            best_cost, best = cost, parameter
    if best is None:
        raise ValueError(f"no quantisation step can represent {name}")
    return best


class _Part:
    """The image, or one block of it: its synthesis stages, the input of the first stage not
    yet run (cached: the tensors before it are quantised and no longer change it)."""

    def __init__(self, stages, latents, target, crop):
        self.stages, self.latents, self.target, self.crop = stages, latents, target, crop
        self.stage, self.input = 0, latents

    def input_of(self, start: int):
        """The input of stage ``start`` (the stages before it no longer change)."""
        while self.stage < start:
            self.input = self.stages[self.stage][1](self.input)
            self.stage += 1
        return self.input

    def mean_squared_error(self, start: int) -> float:
        return self.mse_from(start, self.input_of(start))

    def mse_from(self, start: int, state) -> float:
        """The MSE with ``state`` as the input of stage ``start``."""
        for _, stage in self.stages[start:]:
            state = stage(state)
        return torch.mean((self.crop(state) - self.target) ** 2).item()


@torch.no_grad()
def measured_mse(
    model: LatentCodecModel,
    latents: list[torch.Tensor],
    target: torch.Tensor,
    plans: list[BlockPlan] | None = None,
) -> float:
    """The synthesis's MSE with the model's current networks: on the whole image, or on the
    blocks of ``plans`` (voxel-weighted): what quantising the networks costs, before and
    after, measured the way the step search measures it."""
    if plans is None:
        return torch.mean((model.synthesise(latents) - target) ** 2).item()
    total = 0.0
    for plan in plans:
        part = _Part(
            synthesis_stages_of_block(model, plan),
            crop_latents(latents, plan),
            target[plan.block.slices],
            lambda output, plan=plan: block_output(output, plan),
        )
        total += part.mean_squared_error(0) * plan.voxels
    return total / sum(plan.voxels for plan in plans)
