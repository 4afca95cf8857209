"""2x polyphase upsampling along one axis as shifted multiply-adds, with its own backward.

Output samples 2k and 2k + 1 are the even and odd phases of an 8-tap symmetric filter over
x[k-2 .. k+2] (edges replicated): even = (t0, t1, t2, t3, 0), odd = (0, t3, t2, t1, t0) over
the five shifted copies of the padded input. Written as four scaled adds of shifted slices a
phase, forward and backward, instead of a (.., n, 5) window matrix times a (5, 2) one: the
window product's operands are degenerate for a BLAS (an inner dimension of 5 or 2) and its
backward scatters the windows back (``unfold_backward``). Forward and backward together
this is about 2x faster along the last axis and 3-4x along the others on a CPU, one thread
(``benchmarks/results/neural_codec_step_polyphase.md`` times the training step). The
forward multiplies and adds in two roundings (no fused multiply-add), so every voxel's
value is the same whatever the extent or the strides of the block it is computed in:
block-by-block synthesis stays bit-exact with the whole image's.
"""

from __future__ import annotations

import torch

# (window offset j, tap index) a phase reads: even phase t_j at j = 0..3, odd phase t_(4-j)
# at j = 1..4
PHASE_TAPS = (((0, 0), (1, 1), (2, 2), (3, 3)), ((1, 3), (2, 2), (3, 1), (4, 0)))


def replicate_pad(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x with its first and last samples along ``dim`` repeated twice on each side."""
    n = x.shape[dim]
    return torch.cat([x.narrow(dim, 0, 1)] * 2 + [x] + [x.narrow(dim, n - 1, 1)] * 2, dim)


class PolyphaseUpsample(torch.autograd.Function):
    """``PolyphaseUpsample.apply(x, taps, dim, length)``: x upsampled 2x along ``dim`` with
    the 4 free taps, cropped to ``length`` (2n or 2n - 1) samples."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, taps: torch.Tensor, dim: int, length: int):
        n = x.shape[dim]
        padded = replicate_pad(x, dim)
        weights = taps.detach().to(x.dtype)  # 0-dim factors: no host sync on a GPU
        out = x.new_empty([*x.shape[:dim], n, 2, *x.shape[dim + 1 :]])
        for phase, reads in enumerate(PHASE_TAPS):
            target = out.select(dim + 1, phase)
            for i, (offset, tap) in enumerate(reads):
                term = padded.narrow(dim, offset, n) * weights[tap]
                if i == 0:
                    target.copy_(term)
                else:
                    target.add_(term)
        ctx.save_for_backward(padded, weights)
        ctx.dim, ctx.n = dim, n
        shape = [*x.shape[:dim], 2 * n, *x.shape[dim + 1 :]]
        return out.reshape(shape).narrow(dim, 0, length)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        padded, weights = ctx.saved_tensors
        dim, n = ctx.dim, ctx.n
        if grad.shape[dim] < 2 * n:  # the cropped last odd sample has no gradient
            full = grad.new_zeros([*grad.shape[:dim], 2 * n, *grad.shape[dim + 1 :]])
            full.narrow(dim, 0, grad.shape[dim]).copy_(grad)
            grad = full
        phases = grad.reshape([*grad.shape[:dim], n, 2, *grad.shape[dim + 1 :]])
        grad_padded = padded.new_zeros(padded.shape)
        per_tap: list[list[torch.Tensor]] = [[] for _ in range(4)]
        for phase, reads in enumerate(PHASE_TAPS):
            g = phases.select(dim + 1, phase)
            if dim == grad.dim() - 1:
                g = g.contiguous()  # read 8 times below: strided reads do not vectorise
            for offset, tap in reads:
                grad_padded.narrow(dim, offset, n).addcmul_(g, weights[tap])
                per_tap[tap].append(torch.sum(padded.narrow(dim, offset, n) * g))
        grad_taps = torch.stack([torch.stack(terms).sum() for terms in per_tap])
        grad_x = grad_padded.narrow(dim, 2, n).clone()
        grad_x.narrow(dim, 0, 1).add_(grad_padded.narrow(dim, 0, 2).sum(dim, keepdim=True))
        grad_x.narrow(dim, n - 1, 1).add_(grad_padded.narrow(dim, n + 2, 2).sum(dim, keepdim=True))
        return grad_x, grad_taps, None, None
