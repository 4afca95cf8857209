"""The codec on one block of the image at a time: what every grid must hold for a block, and
the block's synthesis and rate, exact.

Every network of the codec has a finite reach: the 2x upsampling reads 2 coarser samples on
either side, the residual 3x3 (3x3x3) stage one voxel a layer, the entropy model its causal
window and the co-located latents of the coarser grids it reads. So a block of the image
with a margin gives the block's own output exactly, and the latents a block owns (latent p
of grid i belongs to the block holding voxel p 2^i) with their context window give those
latents' bits exactly. Sums over a tiling of the image are the whole image's distortion and
rate (float rounding aside): training, evaluation and decoding of a volume then need memory
for one block, not the volume.

Each grid's crop (``BlockPlan.crops``) covers what the block's synthesis reads
(``synthesis``), its owned latents with their context window (``context``), and, for the
finer grids, the coarser latents their windows read.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from volinr.neural_codec.causal_context import CausalContext
from volinr.neural_codec.geometry import latent_count
from volinr.neural_codec.laplace import laplace_bits
from volinr.neural_codec.model import LatentCodecModel

UPSAMPLING_REACH = 2  # coarser samples read on each side by a 2x upsampling output


@dataclass(frozen=True)
class Box:
    """A box of samples of one grid: [start, stop) along every axis."""

    start: tuple[int, ...]
    stop: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    def within(self, outer: Box) -> tuple[slice, ...]:
        """This box's slices inside an array holding ``outer`` (which must contain it)."""
        corners = zip(self.start, self.stop, outer.start, outer.stop, strict=True)
        if any(a < o or b > p for a, b, o, p in corners):
            raise ValueError(f"{self} is not inside {outer}")
        return tuple(
            slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, outer.start, strict=True)
        )

    def grown(self, before, after, shape: tuple[int, ...]) -> Box:
        """The box grown by ``before``/``after`` samples an axis, clipped to a ``shape`` grid."""
        return Box(
            tuple(max(0, a - int(m)) for a, m in zip(self.start, before, strict=True)),
            tuple(min(n, b + int(m)) for b, m, n in zip(self.stop, after, shape, strict=True)),
        )

    def union(self, other: Box) -> Box:
        return Box(tuple(map(min, self.start, other.start)), tuple(map(max, self.stop, other.stop)))


def tile(shape: tuple[int, ...], edge: int) -> list[Box]:
    """Blocks of at most ``edge`` samples per axis covering ``shape``, in C order."""
    ranges = [[(a, min(a + edge, n)) for a in range(0, n, edge)] for n in shape]
    return [
        Box(tuple(r[0] for r in combo), tuple(r[1] for r in combo))
        for combo in itertools.product(*ranges)
    ]


def whole(shape: tuple[int, ...]) -> Box:
    return Box((0,) * len(shape), tuple(shape))


@dataclass(frozen=True)
class BlockPlan:
    block: Box  # the voxels whose output and loss this block gives
    synthesis: tuple[Box, ...]  # per grid: what the synthesis of the block (with margin) reads
    owned: tuple[Box, ...]  # per grid: the latents whose bits the block counts
    context: tuple[Box, ...]  # per grid: the owned latents with their context window
    crops: tuple[Box, ...]  # per grid: the union of all that a step reads

    @property
    def voxels(self) -> int:
        return self.block.voxels


def plan_block(model: LatentCodecModel, block: Box) -> BlockPlan:
    shapes = model.grid_shapes
    ndim = len(model.shape)
    margin = (model.settings.residual_layers,) * ndim
    synthesis = [block.grown(margin, margin, shapes[0])]
    for level in range(1, len(shapes)):
        finer = synthesis[-1]
        synthesis.append(
            Box(
                tuple(max(0, a // 2 - UPSAMPLING_REACH) for a in finer.start),
                tuple(
                    min(n, (b - 1) // 2 + UPSAMPLING_REACH + 1)
                    for b, n in zip(finer.stop, shapes[level], strict=True)
                ),
            )
        )
    owned = [
        Box(
            tuple(-(-a // 2**level) for a in block.start),
            tuple(min(n, -(-b // 2**level)) for b, n in zip(block.stop, shape, strict=True)),
        )
        for level, shape in enumerate(shapes)
    ]
    context = [
        box.grown(model.context_padding_before, model.context_padding_after, shape)
        for box, shape in zip(owned, shapes, strict=True)
    ]
    crops = [a.union(b) for a, b in zip(synthesis, context, strict=True)]
    for level in range(len(shapes)):
        for j in range(1, model.coarser_count(level) + 1):
            crops[level + j] = crops[level + j].union(coarser_box(context[level], j))
    return BlockPlan(block, tuple(synthesis), tuple(owned), tuple(context), tuple(crops))


def coarser_box(box: Box, levels: int = 1) -> Box:
    """The samples at floor(p / 2^levels), in the grid ``levels`` coarser, for the p of ``box``."""
    step = 2**levels
    return Box(tuple(a // step for a in box.start), tuple((b - 1) // step + 1 for b in box.stop))


def crop_latents(latents: list[torch.Tensor], plan: BlockPlan) -> list[torch.Tensor]:
    return [grid[box.slices] for grid, box in zip(latents, plan.crops, strict=True)]


def _upsample_region(model: LatentCodecModel, crops: list[torch.Tensor], plan: BlockPlan):
    """``model.upsample`` of the region ``plan.synthesis[0]``: each grid's crop is upsampled
    and cut down to the finer grid's region (replicated edges only at the grid's own edges,
    where the crop reaches them)."""
    sources = [
        crop[box.within(outer)]
        for crop, box, outer in zip(crops, plan.synthesis, plan.crops, strict=True)
    ]
    stack, held = sources[-1][None, None], plan.synthesis[-1]
    for level in range(len(sources) - 2, -1, -1):
        wanted = plan.synthesis[level]
        for axis in range(len(wanted.start)):
            up = model._upsample_axis(stack, axis, 2 * stack.shape[2 + axis], level)
            offset = wanted.start[axis] - 2 * held.start[axis]
            stack = up.narrow(2 + axis, offset, wanted.shape[axis])
        stack = torch.cat([sources[level][None, None], stack], dim=1)
        held = wanted
    return stack


def synthesis_stages_of_block(model: LatentCodecModel, plan: BlockPlan):
    """``model.synthesis_stages`` for the block's region; its output is the region's
    (block and margin): ``block_output`` cuts the block out of it."""
    return model.synthesis_stages(
        plan.synthesis[0].shape, lambda crops: _upsample_region(model, crops, plan)
    )


def block_output(region_output: torch.Tensor, plan: BlockPlan) -> torch.Tensor:
    return region_output[plan.block.within(plan.synthesis[0])]


def synthesise_block(
    model: LatentCodecModel, crops: list[torch.Tensor], plan: BlockPlan
) -> torch.Tensor:
    """The normalised image on ``plan.block`` from the latent values of ``plan.crops``."""
    state = crops
    for _, stage in synthesis_stages_of_block(model, plan):
        state = stage(state)
    return block_output(state, plan)


def block_bits_by_level(
    model: LatentCodecModel, crops: list[torch.Tensor], plan: BlockPlan
) -> list[torch.Tensor]:
    """Estimated bits of the latents the block owns, per grid (finest first)."""
    levels = []
    for level, (crop, outer) in enumerate(zip(crops, plan.crops, strict=True)):
        window = plan.context[level]
        values = crop[window.within(outer)]
        rows = CausalContext.apply(values, *model.context_geometry_of(values.shape))
        rows_coarse = []
        for j in range(1, model.coarser_count(level) + 1):
            source = coarser_box(window, j)
            coarse = crops[level + j][source.within(plan.crops[level + j])]
            for axis, (a, n) in enumerate(zip(window.start, window.shape, strict=True)):
                offset = a - 2**j * source.start[axis]
                coarse = coarse.repeat_interleave(2**j, dim=axis).narrow(axis, offset, n)
            rows_coarse.append(coarse)
        coarse = torch.stack(rows_coarse) if rows_coarse else None
        mu, log_scale = model.arm(*model.with_coarser(rows, coarse))
        bits = laplace_bits(values.reshape(-1), mu, log_scale).reshape(values.shape)
        levels.append(bits[plan.owned[level].within(window)].sum())
    return levels


# Decoding cuts blocks of at most this many samples an axis: a pure function of the image's
# shape, so the encoder's reconstruction and the decoder's cut the same blocks and agree to
# the bit. (Other cuts give the same values but for the last bit of a rare voxel, where a
# matrix product's kernel rounds differently for another number of columns:
# tests/test_neural_codec_blocks.py.) An image within one block is synthesised whole; 128^3
# voxels need about 0.5 GB of activations.
DECODING_BLOCK_EDGE = {2: 2048, 3: 128}
# Voxels the network quantisation samples on an image decoded block by block.
QUANTISATION_SAMPLE_VOXELS = 1 << 22


def decoding_plans(model: LatentCodecModel) -> list[BlockPlan] | None:
    """The blocks decoding cuts, or None where the image is synthesised whole."""
    edge = DECODING_BLOCK_EDGE[len(model.shape)]
    if max(model.shape) <= edge:
        return None
    return [plan_block(model, block) for block in tile(model.shape, edge)]


# Voxels the networks' refinement measures on (network_quantisation.py): it evaluates the cost
# about three times a coded parameter a pass (on a 113x256x256 volume's 4 M-voxel
# quantisation sample, 4 of 19 tensors in 10 minutes); 2^19 keeps the slice and headsq whole.
REFINEMENT_SAMPLE_VOXELS = 1 << 19
# Boxes an axis in the refinement's sample of a larger image: 2 x 2 x 2 in 3D, 3 x 3 in 2D.
REFINEMENT_BOXES_PER_AXIS = {2: 3, 3: 2}


def refinement_sample(model: LatentCodecModel) -> list[BlockPlan] | None:
    """None (the whole image) where it has at most REFINEMENT_SAMPLE_VOXELS voxels; else boxes
    centred on a regular lattice (at (2i + 1) / 2k of each axis, k a side), about that many
    voxels in all: a deterministic sample spread over the image, as the tissue lies anywhere.
    An axis no longer than a box's edge (the 20 slices of a slab) gets one box spanning it,
    and the other axes' edges grow to keep the budget."""
    shape = model.shape
    if math.prod(shape) <= REFINEMENT_SAMPLE_VOXELS:
        return None
    per_axis = REFINEMENT_BOXES_PER_AXIS[len(shape)]
    edges = _box_edges(shape, per_axis)
    starts = [
        sorted({min(max(0, round((2 * i + 1) * n / (2 * per_axis)) - edge // 2), max(0, n - edge))
                for i in range(per_axis)})
        for n, edge in zip(shape, edges, strict=True)
    ]  # fmt: skip
    boxes = [
        Box(corner, tuple(min(a + e, n) for a, e, n in zip(corner, edges, shape, strict=True)))
        for corner in itertools.product(*starts)
    ]
    return [plan_block(model, box) for box in boxes]


def _box_edges(shape: tuple[int, ...], per_axis: int) -> list[int]:
    """Each axis's box edge: the integer root of the voxels a box may hold, or the whole axis
    where it is no longer than that (one box along it), the others' root taken again."""
    whole: set[int] = set()
    while True:
        free = [axis for axis in range(len(shape)) if axis not in whole]
        held = math.prod(shape[axis] for axis in whole)
        per_box = REFINEMENT_SAMPLE_VOXELS // per_axis ** len(free) // held
        edge = round(per_box ** (1 / len(free)))  # the integer root: 4096 ** (1 / 3) < 16
        edge = max(1, edge - (edge ** len(free) > per_box))
        thin = {axis for axis in free if shape[axis] <= edge}
        # an image over the budget keeps at least one axis longer than its edge
        if not thin or len(thin) == len(free):
            return [shape[axis] if axis in whole else edge for axis in range(len(shape))]
        whole |= thin


def quantisation_sample(plans: list[BlockPlan]) -> list[BlockPlan]:
    """Evenly spaced blocks, about QUANTISATION_SAMPLE_VOXELS voxels in all (at least one)."""
    average = sum(plan.voxels for plan in plans) / len(plans)
    count = max(1, min(len(plans), round(QUANTISATION_SAMPLE_VOXELS / average)))
    step = len(plans) / count
    return [plans[int(i * step + step / 2)] for i in range(count)]


@torch.no_grad()
def latent_bits_in_blocks(
    model: LatentCodecModel, latents: list[torch.Tensor], plans: list[BlockPlan]
) -> list[float]:
    """``model.latent_bits_by_level`` summed block by block (memory for one block)."""
    totals = [0.0] * len(latents)
    for plan in plans:
        for level, bits in enumerate(block_bits_by_level(model, crop_latents(latents, plan), plan)):
            totals[level] += bits.item()
    return totals


# Bytes a voxel of one synthesis block holds while it is decoded (the upsampled grids, the 1x1
# layers' activations, the residual stage's shifted copies), the default architecture, rounded
# up; blocks are at most DECODING_BLOCK_EDGE an axis (regions.py).
SYNTHESIS_BYTES_PER_BLOCK_VOXEL = 400


def decoding_bytes(shape: tuple[int, ...], levels: int, output_dtype: str) -> dict[str, int]:
    """What decoding a file of this shape holds at its peak, from its header alone: the
    output, the integer grids, the finest grid's decoding order and padded copy, one block's
    synthesis."""
    voxels = math.prod(shape)
    finest = voxels  # the finest grid has a latent a voxel
    block = min(voxels, DECODING_BLOCK_EDGE[len(shape)] ** len(shape))
    return {
        "output": voxels * np.dtype(output_dtype).itemsize,
        "latent grids": 4 * latent_count(shape, levels),
        "decoding order and padded grid": 3 * 8 * finest,
        "one block's synthesis": SYNTHESIS_BYTES_PER_BLOCK_VOXEL * block,
    }
