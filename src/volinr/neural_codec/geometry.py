"""Shapes of the latent grids, the entropy model's causal context, and the decoding wavefront.

All of it is a pure function of the image shape and the architecture, so the encoder and the
decoder derive the same grids, neighbours and decoding order without storing any of it.

Causal means earlier in raster order (first axis slowest). The context of a latent is its
``context_size`` nearest causal neighbours (squared distance, ties broken lexicographically),
read as 0 outside the grid. Latents that do not depend on each other are decoded together: a
latent at position p is decoded at step t(p) = sum_i a_i p_i, where the integer weights a are
the smallest that put every context neighbour at an earlier step (a = (3, 1) for the causal
half of a 5x5 window: a 512x512 grid decodes in 2,045 steps of up to 171 latents, not 262,144
steps of one).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

CONTEXT_RADIUS = 3  # neighbours are searched in a (2r+1)^d window


def level_shapes(shape: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Grid i has ceil(N / 2^i) samples per axis; no grid after the first 1-sample one."""
    shapes = []
    for level in range(levels):
        grid = tuple(math.ceil(n / 2**level) for n in shape)
        shapes.append(grid)
        if all(n == 1 for n in grid):
            break
    return shapes


def causal_offsets(ndim: int, context_size: int) -> np.ndarray:
    """(context_size, ndim) integer offsets of the nearest causal neighbours, nearest first."""
    window = range(-CONTEXT_RADIUS, CONTEXT_RADIUS + 1)
    causal = [o for o in itertools.product(window, repeat=ndim) if _is_causal(o)]
    causal.sort(key=lambda o: (sum(v * v for v in o), o))
    if context_size > len(causal):
        raise ValueError(f"at most {len(causal)} causal neighbours in {ndim}D, not {context_size}")
    return np.array(causal[:context_size], dtype=np.int64).reshape(context_size, ndim)


def _is_causal(offset: tuple[int, ...]) -> bool:
    for value in offset:
        if value:
            return value < 0
    return False


def wavefront_weights(offsets: np.ndarray) -> np.ndarray:
    """Smallest positive integer a (last axis 1) with a . o <= -1 for every offset o."""
    ndim = offsets.shape[1]
    weights = np.ones(ndim, dtype=np.int64)
    for axis in range(ndim - 1, -1, -1):
        for o in offsets:
            leading = np.flatnonzero(o)
            if leading.size and leading[0] == axis:
                rest = int(np.dot(weights[axis + 1 :], o[axis + 1 :]))
                weights[axis] = max(weights[axis], -(-(1 + rest) // int(-o[axis])))
    return weights


@dataclass(frozen=True)
class LevelSchedule:
    """The decoding order of one grid and where each latent's context lies.

    ``order`` lists the grid's flat (C-order) indices step by step; step s covers
    ``order[starts[s]:starts[s + 1]]``. ``padded_shape``/``pad_before`` describe the grid padded
    with zeros so that every neighbour index is valid; ``neighbour_steps`` are the neighbours'
    flat offsets in that padded grid.
    """

    shape: tuple[int, ...]
    offsets: np.ndarray

    @cached_property
    def pad_before(self) -> np.ndarray:
        return np.maximum(-self.offsets.min(axis=0, initial=0), 0)

    @cached_property
    def pad_after(self) -> np.ndarray:
        return np.maximum(self.offsets.max(axis=0, initial=0), 0)

    @cached_property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in np.array(self.shape) + self.pad_before + self.pad_after)

    @cached_property
    def interior(self) -> tuple[slice, ...]:
        """The grid's own samples inside the padded grid."""
        return tuple(
            slice(int(b), int(b) + n) for b, n in zip(self.pad_before, self.shape, strict=True)
        )

    @cached_property
    def neighbour_steps(self) -> np.ndarray:
        strides = np.array(
            [int(np.prod(self.padded_shape[i + 1 :])) for i in range(len(self.shape))]
        )
        return self.offsets @ strides

    @cached_property
    def _ordering(self) -> tuple[np.ndarray, np.ndarray]:
        weights = wavefront_weights(self.offsets)
        # step = a . p of every sample, built by broadcasting (no ndim x N index array)
        step = np.zeros(self.shape, dtype=np.int64)
        for axis, (weight, n) in enumerate(zip(weights.tolist(), self.shape, strict=True)):
            along = [1] * len(self.shape)
            along[axis] = n
            step += (weight * np.arange(n, dtype=np.int64)).reshape(along)
        step = step.reshape(-1)
        order = np.argsort(step, kind="stable")
        counts = np.bincount(step, minlength=int(step.max()) + 1)
        starts = np.concatenate([[0], np.cumsum(counts)])
        return order, starts[np.concatenate([[True], counts > 0])]

    @property
    def order(self) -> np.ndarray:
        return self._ordering[0]

    @property
    def starts(self) -> np.ndarray:
        return self._ordering[1]

    def padded_index(self, flat: np.ndarray) -> np.ndarray:
        """Flat indices into the padded grid of the grid's flat indices ``flat``."""
        position = np.unravel_index(flat, self.shape)
        return np.ravel_multi_index(
            tuple(p + b for p, b in zip(position, self.pad_before, strict=True)),
            self.padded_shape,
        )

    def coarser_index(
        self, flat: np.ndarray, coarser_shape: tuple[int, ...], levels: int = 1
    ) -> np.ndarray:
        """Flat index, in the grid ``levels`` coarser, of the latent co-located with each of
        ``flat`` (at floor(p / 2^levels))."""
        position = np.unravel_index(flat, self.shape)
        return np.ravel_multi_index(tuple(p >> levels for p in position), coarser_shape)


def kernel_layout(offsets: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """The context as a convolution: kernel shape, the flat kernel index of each offset, and
    the zero padding (before, after) per axis that makes a 'valid' convolution keep the shape."""
    pad_before = np.maximum(-offsets.min(axis=0, initial=0), 0)
    pad_after = np.maximum(offsets.max(axis=0, initial=0), 0)
    kernel = tuple(int(v) for v in pad_before + pad_after + 1)
    # A convolution (cross-correlation) with the kernel anchored at pad_before reads x[p + o].
    index = np.ravel_multi_index(tuple((offsets + pad_before).T), kernel)
    return kernel, index, np.stack([pad_before, pad_after], axis=1)


def latent_count(shape: tuple[int, ...], levels: int) -> int:
    """Latents of all grids of an image of ``shape``."""
    return int(sum(math.prod(g) for g in level_shapes(tuple(shape), levels)))
