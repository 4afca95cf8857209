"""Every latent's causal neighbours as rows, the entropy model's input, with a written-out
gradient."""

from __future__ import annotations

import torch


class CausalContext(torch.autograd.Function):
    """(context_size, number of latents): row k holds every latent's k-th causal neighbour
    (0 outside the grid). Written out because a masked convolution with one input channel
    is slow to differentiate on a CPU; here each pass is one strided copy or add per row."""

    @staticmethod
    def forward(ctx, grid, slices, interior, padded_shape):
        padded = grid.new_zeros(padded_shape)
        padded[interior] = grid
        out = grid.new_empty(len(slices), *grid.shape)
        for row, where in enumerate(slices):
            out[row] = padded[where]
        ctx.geometry = (slices, interior, padded_shape, grid.shape)
        return out.reshape(len(slices), grid.numel())

    @staticmethod
    def backward(ctx, grad_out):
        slices, interior, padded_shape, shape = ctx.geometry
        grad_padded = grad_out.new_zeros(padded_shape)
        rows = grad_out.reshape(len(slices), *shape)
        for row, where in enumerate(slices):
            grad_padded[where] += rows[row]
        return grad_padded[interior], None, None, None
