"""The per-voxel MLPs of training, forward and backward written out, block of columns by block.

The synthesis's 1x1 layers and the entropy model are small MLPs applied to every voxel or
latent: (16, 262,144) activations for a 512x512 slice, 16 MB each, and autograd keeps every
layer's. Here each block of ``BLOCK_COLUMNS`` columns runs through the whole MLP while its
activations stay in cache, only the input and the output are kept, and the backward pass
recomputes a block's activations before differentiating it (the SIREN step's recipe,
``volinr.training.siren_blocked``). The entropy model's version ends in the Laplace rate itself and
returns only the total bits, so its (2, N) output is never stored either. Both equal
autograd up to float rounding (tests check the gradients).

Measured on the development CPU (benchmarks/results/neural_codec_speed.md): at these widths
the recomputation costs more than the memory traffic it saves, so the codec trains with
plain autograd by default (``LatentCodecModel(blocked=False)``); this path is for volumes
whose activations would not fit in memory (a 512x512x463 CT: 7.8 GB a 16-channel layer).

Layer i computes z_i = W_i u_i + b_i (+ u_i where ``residual[i]``), u_0 = x and
u_{i+1} = act(z_i); the output is the last z.
"""

from __future__ import annotations

import math

import torch

from volinr.neural_codec.laplace import (
    LOG_SCALE_MAX,
    LOG_SCALE_MIN,
    MAX_LATENT,
    MAX_SYMBOL_BITS,
    laplace_bits,
)

BLOCK_COLUMNS = 16384
_LN2 = math.log(2.0)


def _act(z: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.relu(z) if activation == "relu" else torch.nn.functional.gelu(z)


def _act_grad(z: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return (z > 0).to(z.dtype)
    cdf = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))
    return cdf + z * torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))


def _forward(x, weights, biases, residual, activation):
    """(inputs u_i of every layer, pre-activations z_i) of one block."""
    inputs, pre = [x], []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z = torch.addmm(b[:, None], w, inputs[-1])
        if residual[i]:
            z += inputs[-1]
        pre.append(z)
        if i < last:
            inputs.append(_act(z, activation))
    return inputs, pre


def _backward(grad_out, inputs, pre, weights, residual, activation, weight_grads, bias_grads):
    """Accumulate the block's weight gradients; return the gradient of its input."""
    grad_z = grad_out
    for i in range(len(weights) - 1, -1, -1):
        weight_grads[i].addmm_(grad_z, inputs[i].T)
        bias_grads[i] += grad_z.sum(dim=1)
        grad_u = weights[i].T @ grad_z
        if residual[i]:
            grad_u += grad_z
        if i == 0:
            return grad_u
        grad_z = grad_u * _act_grad(pre[i - 1], activation)
    raise AssertionError("an MLP without layers")


def _blocks(columns: int):
    for start in range(0, columns, BLOCK_COLUMNS):
        yield slice(start, min(start + BLOCK_COLUMNS, columns))


class BlockedMLP(torch.autograd.Function):
    """y (out, N) = MLP(x (in, N)), block by block."""

    @staticmethod
    def forward(ctx, x, residual, activation, *params):
        weights, biases = params[0::2], params[1::2]
        out = x.new_empty(weights[-1].shape[0], x.shape[1])
        for cols in _blocks(x.shape[1]):
            out[:, cols] = _forward(x[:, cols], weights, biases, residual, activation)[1][-1]
        ctx.save_for_backward(x, *params)
        ctx.residual, ctx.activation = residual, activation
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, *params = ctx.saved_tensors
        weights, biases = params[0::2], params[1::2]
        weight_grads = [torch.zeros_like(w) for w in weights]
        bias_grads = [torch.zeros_like(b) for b in biases]
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        for cols in _blocks(x.shape[1]):
            inputs, pre = _forward(x[:, cols], weights, biases, ctx.residual, ctx.activation)
            grad_block = _backward(
                grad_out[:, cols].contiguous(), inputs, pre, weights, ctx.residual,
                ctx.activation, weight_grads, bias_grads,
            )  # fmt: skip
            if grad_x is not None:
                grad_x[:, cols] = grad_block
        grads = [g for pair in zip(weight_grads, bias_grads, strict=True) for g in pair]
        return grad_x, None, None, *grads


def laplace_bits_with_gradients(y, mu, log_scale):
    """(-log2 P, d/dmu, d/dlog_scale, d/dy) of ``laplace.laplace_bits``, in one pass.

    Outside the central bin, bits = 1 + (|z| - 1/2) c / ln2 - log2(1 - e^-c) with z = y - mu
    and c = 1/b; inside, bits = -log2(1 - (e^((|z| - 1/2) c) + e^((-|z| - 1/2) c)) / 2).
    mu beyond +-MAX_LATENT and log_scale outside the table's range have no gradient (they are
    clamped), nor do bits above ``MAX_SYMBOL_BITS`` (capped).
    """
    inside_range = (log_scale > LOG_SCALE_MIN) & (log_scale < LOG_SCALE_MAX)
    c = torch.exp(-log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
    mean_inside = mu.abs() < MAX_LATENT
    z = y - mu.clamp(-MAX_LATENT, MAX_LATENT)
    distance = z.abs()
    sign = torch.sign(z)
    outer = distance >= 0.5
    # outer branch
    excess = (distance - 0.5).clamp_min(0.0)
    outer_bits = 1.0 + excess * c / _LN2 - torch.log2(-torch.expm1(-c))
    outer_dc = excess / _LN2 - 1.0 / (_LN2 * torch.expm1(c))
    outer_dz = c / _LN2
    # inner branch
    near = distance.clamp_max(0.5)
    a = torch.exp((near - 0.5) * c)
    e = torch.exp((-near - 0.5) * c)
    mass = 1.0 - 0.5 * (a + e)
    floored = mass < 2.0**-30
    mass = mass.clamp_min(2.0**-30)
    inner_bits = -torch.log2(mass)
    scale = torch.where(floored, 0.0, 1.0 / (mass * _LN2))
    inner_dz = scale * 0.5 * c * (a - e)  # d bits / d|z|
    inner_dc = scale * 0.5 * ((near - 0.5) * a + (-near - 0.5) * e)
    bits = torch.where(outer, outer_bits, inner_bits)
    capped = bits > MAX_SYMBOL_BITS
    bits = bits.clamp_max(MAX_SYMBOL_BITS)
    d_distance = torch.where(capped, 0.0, torch.where(outer, outer_dz, inner_dz))
    d_c = torch.where(capped, 0.0, torch.where(outer, outer_dc, inner_dc))
    d_mu = torch.where(mean_inside, -sign * d_distance, 0.0)
    d_log_scale = torch.where(inside_range, -c * d_c, 0.0)
    return bits, d_mu, d_log_scale, sign * d_distance


class BlockedLaplaceRate(torch.autograd.Function):
    """Total bits of latents y (N,) under the entropy model MLP(context (in, N)) -> (mu,
    log b), block by block; the MLP's output never leaves the block."""

    @staticmethod
    def forward(ctx, x, y, residual, *params):
        weights, biases = params[0::2], params[1::2]
        total = x.new_zeros(())
        for cols in _blocks(x.shape[1]):
            out = _forward(x[:, cols], weights, biases, residual, "relu")[1][-1]
            total += laplace_bits(y[cols], out[0], out[1]).sum()
        ctx.save_for_backward(x, y, *params)
        ctx.residual = residual
        return total

    @staticmethod
    def backward(ctx, grad_total):
        x, y, *params = ctx.saved_tensors
        weights, biases = params[0::2], params[1::2]
        weight_grads = [torch.zeros_like(w) for w in weights]
        bias_grads = [torch.zeros_like(b) for b in biases]
        grad_x = torch.empty_like(x)
        grad_y = torch.empty_like(y)
        for cols in _blocks(x.shape[1]):
            inputs, pre = _forward(x[:, cols], weights, biases, ctx.residual, "relu")
            out = pre[-1]
            _, d_mu, d_log_scale, d_y = laplace_bits_with_gradients(y[cols], out[0], out[1])
            grad_out = torch.stack([d_mu, d_log_scale]) * grad_total
            grad_y[cols] = d_y * grad_total
            grad_x[:, cols] = _backward(
                grad_out, inputs, pre, weights, ctx.residual, "relu", weight_grads, bias_grads
            )
        grads = [g for pair in zip(weight_grads, bias_grads, strict=True) for g in pair]
        return grad_x, grad_y, None, *grads


class SmallConvolution(torch.autograd.Function):
    """A 3x3 (3x3x3) 'valid' convolution of a few channels, (C, *padded) -> (C_out, *shape),
    as one (C_out, 3^d C) x (3^d C, N) product over shifted copies of the input: on a CPU
    oneDNN's backward pass for 2-channel convolutions took 4x the forward's time here."""

    @staticmethod
    def forward(ctx, padded, weight, bias):
        shape = tuple(n - 2 for n in padded.shape[1:])
        taps = _taps(len(shape), shape)
        columns = padded.new_empty(len(taps), padded.shape[0], *shape)
        for row, where in enumerate(taps):
            columns[row] = padded[(slice(None), *where)]
        columns = columns.reshape(-1, math.prod(shape))
        flat = _flat_weight(weight)
        out = torch.addmm(bias[:, None], flat, columns)
        ctx.save_for_backward(columns, weight)
        ctx.padded_shape, ctx.shape = padded.shape, shape
        return out.reshape(weight.shape[0], *shape)

    @staticmethod
    def backward(ctx, grad_out):
        columns, weight = ctx.saved_tensors
        grad = grad_out.reshape(weight.shape[0], -1)
        grad_flat = grad @ columns.T
        channels, taps_count = weight.shape[1], 3 ** (weight.dim() - 2)
        grad_weight = (
            grad_flat.reshape(weight.shape[0], taps_count, channels)
            .permute(0, 2, 1)
            .reshape(weight.shape)
        )
        grad_columns = (_flat_weight(weight).T @ grad).reshape(taps_count, channels, *ctx.shape)
        grad_padded = grad_out.new_zeros(ctx.padded_shape)
        for row, where in enumerate(_taps(len(ctx.shape), ctx.shape)):
            grad_padded[(slice(None), *where)] += grad_columns[row]
        return grad_padded, grad_weight, grad.sum(dim=1)


def _taps(ndim: int, shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """For each kernel offset (C order), the slices of the padded input it reads."""
    offsets = torch.cartesian_prod(*[torch.arange(3)] * ndim).reshape(-1, ndim).tolist()
    return [
        tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True)) for offset in offsets
    ]


def _flat_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, ...) -> (C_out, taps x C_in), tap-major like the column rows."""
    c_out, c_in = weight.shape[:2]
    return weight.reshape(c_out, c_in, -1).permute(0, 2, 1).reshape(c_out, -1)
