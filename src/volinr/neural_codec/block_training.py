"""Training and evaluating the codec block by block, for images too large to train whole.

An iteration visits every block of a tiling of the image once, in a random order, with one
optimiser step a block: the block's loss, MSE over its voxels + lambda x the bits of the
latents it owns / its voxels, is exact (``regions``), so a pass is stochastic gradient descent
on the whole image's loss, and memory holds one block's activations, not the image's.

The latents' Adam updates only the box a block's step read (``BoxAdam``), so a step costs the
block, not the grids; its moments elsewhere wait, unchanged, for the next step that reads
them. Bias correction counts the iterations (each block is stepped once an iteration). No
copy of the moments is kept: a restart, or the warm-up's kept candidate, goes on with fresh
ones (whole-image training keeps them), which is what lets a 512x512x463 CT train in 4 GB.

``memory_plan`` sizes the blocks from ``memory_gb``: what the training holds for the whole
run (the grids with their Adam moments and the best state's copy, the target, the image) is
set aside first, and the blocks take the rest at ``STEP_BYTES_PER_VOXEL``, a step's peak per
voxel of its region, measured on the default architecture
(benchmarks/results/neural_codec_memory.md checks the total).
"""

from __future__ import annotations

import math

import torch

from volinr.neural_codec.laplace import MAX_LATENT
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.regions import (
    BlockPlan,
    block_bits_by_level,
    crop_latents,
    plan_block,
    synthesise_block,
    tile,
)

# Peak bytes of one training step a voxel of the region it synthesises (the block and its
# margin: autograd's saved tensors, the crops, the context rows), measured with the default
# architecture (a 64^3 block: 2,400 bytes a block voxel; a whole 64x128x128 volume: 1,370)
# and rounded up; by dimensionality.
STEP_BYTES_PER_VOXEL = {2: 1900, 3: 1800}
# Samples a region adds to a block's edge: the synthesis's margin on both sides (the residual
# stage's, the upsampling's) and the context window's, rounded up.
REGION_MARGIN = 8
# Bytes per latent kept all run: value, Adam's two moments, and one kept copy of the value
# (the state at the start until there is a best state, then the best: ``Trainer.run`` holds
# one at a time; the warm-up: the running candidate's three and the kept one's value).
BYTES_PER_LATENT = 4 * 4
# What the process holds besides (torch, numpy and the interpreter), measured and rounded up.
RUNTIME_BYTES = 500_000_000
# Blocks smaller than this many samples an axis spend most of their step on margins.
MIN_BLOCK_EDGE = 24


def memory_plan(
    shape: tuple[int, ...], latents: int, image_bytes_per_voxel: int, memory_gb: float
) -> int | None:
    """The training block's edge in samples, or None where a whole-image step fits.

    Raises a ValueError naming the memory needed where not even ``MIN_BLOCK_EDGE`` blocks fit.
    """
    voxels = math.prod(shape)
    budget = memory_gb * 1e9
    held = RUNTIME_BYTES + BYTES_PER_LATENT * latents + (4 + image_bytes_per_voxel) * voxels
    per_voxel = STEP_BYTES_PER_VOXEL[len(shape)]
    if held + per_voxel * voxels <= budget:
        return None
    region_voxels = max(budget - held, 0) / per_voxel
    edge = int(math.floor(region_voxels ** (1 / len(shape)))) - REGION_MARGIN
    if edge < MIN_BLOCK_EDGE:
        region = (MIN_BLOCK_EDGE + REGION_MARGIN) ** len(shape)
        needed = (held + per_voxel * region) / 1e9
        raise ValueError(
            f"the neural codec needs at least {needed:.1f} GB to train an image of shape "
            f"{tuple(shape)} (memory_gb is {memory_gb:g})"
        )
    return edge


class BoxAdam:
    """Adam (Kingma & Ba) for the latent grids, updating only the box each step read.

    ``iterations`` counts the iterations since the moments were (re)made, for the bias
    correction; ``release`` frees the moments (the next step starts fresh ones, as a new
    Adam would): a restart from the best state, and the warm-up's kept candidate, go on with
    fresh moments, so that no copy of them is ever held."""

    def __init__(self, grids, betas=(0.9, 0.999), eps=1e-8):
        self.grids = grids
        self.betas, self.eps = betas, eps
        self.moments = None
        self.iterations = 0

    def release(self) -> None:
        self.moments, self.iterations = None, 0

    @torch.no_grad()
    def step(self, crops, plan: BlockPlan, learning_rate: float) -> None:
        if self.moments is None:
            self.moments = [(torch.zeros_like(g), torch.zeros_like(g)) for g in self.grids]
        beta1, beta2 = self.betas
        count = max(self.iterations, 1)
        correction1, correction2 = 1 - beta1**count, 1 - beta2**count
        for grid, crop, box, (first, second) in zip(
            self.grids, crops, plan.crops, self.moments, strict=True
        ):
            if crop.grad is None:
                continue
            m, v = first[box.slices], second[box.slices]
            m.mul_(beta1).add_(crop.grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(crop.grad, crop.grad, value=1 - beta2)
            denominator = (v.sqrt() / math.sqrt(correction2)).add_(self.eps)
            grid[box.slices].addcdiv_(m, denominator, value=-learning_rate / correction1)


class BlockSteps:
    """One iteration of block-by-block training, and the block-by-block hard-rounded loss."""

    def __init__(self, model: LatentCodecModel, target: torch.Tensor, edge: int):
        self.model = model
        self.target = target
        self.plans = [plan_block(model, block) for block in tile(model.shape, edge)]
        self.latent_optimizer = BoxAdam(list(model.latents))

    def scaled_crops(self, plan: BlockPlan) -> list[torch.Tensor]:
        """Leaf crops of the grids (their gradient is the step's) and their scaled values."""
        crops = [c.detach().requires_grad_() for c in crop_latents(list(self.model.latents), plan)]
        scaled = [
            (c * gain).clamp(-MAX_LATENT, MAX_LATENT)
            for c, gain in zip(crops, self.model.gains, strict=True)
        ]
        return crops, scaled

    def losses(self, latents, plan: BlockPlan, lam: float):
        """(loss, mse, bits per voxel) of the block from quantised latent crops."""
        output = synthesise_block(self.model, latents, plan)
        mse = torch.mean((output - self.target[plan.block.slices]) ** 2)
        bits = torch.stack(block_bits_by_level(self.model, latents, plan)).sum()
        bits_per_voxel = bits / plan.voxels
        return mse + lam * bits_per_voxel, mse, bits_per_voxel

    def iteration(self, quantise, lam, optimizer, learning_rate, latent_factor, generator):
        """Every block once, in a random order; the voxel-weighted means of its losses."""
        order = torch.randperm(len(self.plans), generator=generator, device=generator.device)
        totals = torch.zeros(3, device=self.target.device)
        self.latent_optimizer.iterations += 1
        for index in order.tolist():
            plan = self.plans[index]
            crops, scaled = self.scaled_crops(plan)
            values = self.losses(quantise(scaled), plan, lam)
            optimizer.zero_grad(set_to_none=True)
            values[0].backward()
            optimizer.step()
            self.latent_optimizer.step(crops, plan, learning_rate * latent_factor)
            totals += torch.stack([v.detach() for v in values]) * plan.voxels
        return tuple(totals / self.target.numel())

    @torch.no_grad()
    def exact_loss(self, lam: float) -> float:
        """The whole image's loss with hard-rounded latents, summed block by block."""
        total = 0.0
        for plan in self.plans:
            _, scaled = self.scaled_crops(plan)
            loss = self.losses([torch.round(y) for y in scaled], plan, lam)[0]
            total += loss.item() * plan.voxels
        return total / self.target.numel()
