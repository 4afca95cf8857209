"""The overfitted latent-grid model: grids, upsampling, synthesis and the entropy model (float).

One model class serves slices (2D) and volumes (3D): every operation is written for N spatial
axes, and the grids, the context and the kernels follow the image's dimensionality.

- Latent grids: grid i has ceil(N / 2^i) samples per axis; its values y = theta * gain^i are
  quantised to integers for coding (theta is what the optimiser moves).
- Upsampling: each grid is brought to full resolution by repeated 2x upsampling along every
  axis with a symmetric 8-tap polyphase filter (4 free taps, initialised to bicubic; one for
  all stages, or one a stage with ``upsampling_per_level``), coarse to fine: at each
  resolution the finer grid joins the stack as a new channel.
- Synthesis: 1x1 layers (matrices over the channel axis) down to ``residual_channels`` (plus,
  with ``synthesis_stabiliser``, a linear map of the grids to those channels), then
  residual 3x3 (3x3x3) convolutions, then a 1x1 layer to one channel, clamped to [0, 1]
  (intensities are coded as (v - min) / (max - min)).
- Entropy model: a small MLP reads each latent's causal neighbours (and the co-located latents
  of the next ``context_coarser_levels`` coarser grids) and gives the mean and log scale of a
  Laplace; its first layer is a masked convolution, so training evaluates it on whole grids
  at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from volinr.neural_codec.blocked import BlockedLaplaceRate, BlockedMLP, SmallConvolution
from volinr.neural_codec.causal_context import CausalContext
from volinr.neural_codec.geometry import causal_offsets, level_shapes
from volinr.neural_codec.laplace import MAX_LATENT, laplace_bits
from volinr.neural_codec.polyphase import PolyphaseUpsample
from volinr.neural_codec.settings import CodecSettings


def bicubic_taps(a: float = -0.75) -> list[float]:
    """Keys' cubic at distances 1.75, 0.75, 0.25, 1.25: 2x upsampling's even-phase taps."""

    def weight(d: float) -> float:
        if d <= 1:
            return (a + 2) * d**3 - (a + 3) * d**2 + 1
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a

    return [weight(d) for d in (1.75, 0.75, 0.25, 1.25)]


def _activation(name: str):
    return F.gelu if name == "gelu" else F.relu


def _layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, act, last: bool) -> torch.Tensor:
    """One 1x1 synthesis layer over (channels, voxels); the activation after all but the last."""
    x = torch.addmm(b[:, None], w, x)
    return x if last else act(x)


class LatentCodecModel(nn.Module):
    """Grids, upsampling filter, synthesis and entropy model of one image (2D) or volume (3D)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        settings: CodecSettings,
        output_bias: float = 0.5,
        blocked: bool = False,
    ):
        """``blocked``: run the per-voxel MLPs through ``blocked`` (written-out passes that
        keep no activations, for volumes too large for autograd's memory; slower on a slice:
        neural_codec_speed.md). Encoder and decoder must agree on it for a bitwise-equal
        reconstruction; both use the default."""
        super().__init__()
        self.blocked = blocked
        if len(shape) not in (2, 3):
            raise ValueError(f"the neural codec codes 2D or 3D arrays, not {len(shape)}D")
        self.shape = tuple(int(n) for n in shape)
        self.ndim = len(shape)
        self.settings = settings
        self.grid_shapes = level_shapes(self.shape, settings.levels)
        self.gains = [settings.latent_gain**i for i in range(len(self.grid_shapes))]
        self.latents = nn.ParameterList(
            [nn.Parameter(torch.zeros(grid)) for grid in self.grid_shapes]
        )
        taps = torch.tensor(bicubic_taps())
        if settings.upsampling_per_level:  # row l brings the stack to grid l's resolution
            taps = taps.repeat(max(len(self.grid_shapes) - 1, 1), 1)
        if settings.learned_upsampling:
            self.upsampling_taps = nn.Parameter(taps)
        else:
            self.register_buffer("upsampling_taps", taps)

        widths = [len(self.grid_shapes), *settings.synthesis_widths, settings.residual_channels]
        self.synthesis_weights = nn.ParameterList()
        self.synthesis_biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
            bound = 1 / math.sqrt(fan_in)
            self.synthesis_weights.append(
                nn.Parameter(torch.empty(fan_out, fan_in).uniform_(-bound, bound))
            )
            self.synthesis_biases.append(nn.Parameter(torch.zeros(fan_out)))
        channels = settings.residual_channels
        if settings.synthesis_stabiliser:
            # zero: the stage starts as the MLP alone
            self.stabiliser_weight = nn.Parameter(torch.zeros(channels, len(self.grid_shapes)))
        kernel = (3,) * self.ndim
        # Zero residual filters: the stage starts as the identity.
        self.residual_weights = nn.ParameterList(
            [
                nn.Parameter(torch.zeros(channels, channels, *kernel))
                for _ in range(settings.residual_layers)
            ]
        )
        self.residual_biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(channels)) for _ in range(settings.residual_layers)]
        )
        self.output_weight = nn.Parameter(torch.full((1, channels), 1.0 / channels))
        self.output_bias = nn.Parameter(torch.tensor([output_bias]))

        offsets = causal_offsets(self.ndim, settings.context_size)
        self.context_offsets = offsets
        self.context_padding_before = tuple(
            int(v) for v in np.maximum(-offsets.min(axis=0, initial=0), 0)
        )
        self.context_padding_after = tuple(
            int(v) for v in np.maximum(offsets.max(axis=0, initial=0), 0)
        )
        inputs = settings.context_size + self.coarser_count(0)  # no column that no grid reads
        arm_widths = [inputs] + [settings.arm_width] * settings.arm_layers + [2]
        self.arm_weights = nn.ParameterList()
        self.arm_biases = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(arm_widths[:-1], arm_widths[1:], strict=True)):
            # Cool-chic's initialisation: small random first and last layers, zero hidden
            # layers (which are residual, so they start as the identity).
            if 0 < i < len(arm_widths) - 2:
                weight = torch.zeros(fan_out, fan_in)
            else:
                weight = torch.randn(fan_out, fan_in) / fan_out**2
            self.arm_weights.append(nn.Parameter(weight))
            self.arm_biases.append(nn.Parameter(torch.zeros(fan_out)))
        if settings.arm_stabiliser:
            if blocked:
                raise ValueError("the entropy model's stabiliser has no blocked passes")
            # zero: the entropy model starts as the MLP alone
            self.arm_stabiliser_weight = nn.Parameter(torch.zeros(2, inputs))

    # --- the parameters that are coded, in file order -------------------------------------

    def coded_parameters(self) -> dict[str, torch.Tensor]:
        """Every network tensor the decoder needs, by name, in the order the file holds them."""
        named: dict[str, torch.Tensor] = {}
        if self.settings.learned_upsampling:
            named["upsampling.taps"] = self.upsampling_taps
        for i, (w, b) in enumerate(zip(self.synthesis_weights, self.synthesis_biases, strict=True)):
            named[f"synthesis.{i}.weight"] = w
            named[f"synthesis.{i}.bias"] = b
        if self.settings.synthesis_stabiliser:
            named["synthesis.stabiliser.weight"] = self.stabiliser_weight
        for i, (w, b) in enumerate(zip(self.residual_weights, self.residual_biases, strict=True)):
            named[f"residual.{i}.weight"] = w
            named[f"residual.{i}.bias"] = b
        named["output.weight"] = self.output_weight
        named["output.bias"] = self.output_bias
        for i, (w, b) in enumerate(zip(self.arm_weights, self.arm_biases, strict=True)):
            named[f"arm.{i}.weight"] = w
            named[f"arm.{i}.bias"] = b
        if self.settings.arm_stabiliser:
            named["arm.stabiliser.weight"] = self.arm_stabiliser_weight
        return named

    # --- latents ---------------------------------------------------------------------------

    def scaled_latents(self) -> list[torch.Tensor]:
        """The latent values y = theta * gain^level, clamped to the coder's +-MAX_LATENT."""
        return [
            (theta * gain).clamp(-MAX_LATENT, MAX_LATENT)
            for theta, gain in zip(self.latents, self.gains, strict=True)
        ]

    # --- upsampling and synthesis ------------------------------------------------------------

    def _upsample_axis(self, x: torch.Tensor, axis: int, length: int, level: int) -> torch.Tensor:
        """2x polyphase upsampling of x (1, C, *S) along spatial ``axis``, cropped to length,
        to grid ``level``'s resolution (which picks the filter when there is one a level):
        shifted multiply-adds with their own backward (``polyphase``)."""
        taps = self.upsampling_taps
        taps = taps[level] if taps.ndim == 2 else taps
        return PolyphaseUpsample.apply(x, taps, 2 + axis, length)

    def upsample(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """All grids at full resolution, (1, levels, *shape), finest grid first."""
        stack = latents[-1][None, None]
        for level in range(len(latents) - 2, -1, -1):
            for axis, length in enumerate(self.grid_shapes[level]):
                stack = self._upsample_axis(stack, axis, length, level)
            stack = torch.cat([latents[level][None, None], stack], dim=1)
        return stack

    def synthesise(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """The normalised image (*shape) from quantised latent values."""
        state = latents
        for _, stage in self.synthesis_stages():
            state = stage(state)
        return state

    def synthesis_stages(
        self, shape: tuple[int, ...] | None = None, upsample: Callable | None = None
    ) -> list[tuple[tuple[str, ...], Callable]]:
        """The synthesis as a chain of stages, each with the names of the coded tensors it
        reads, in file order: ``synthesise`` runs them in turn; ``quantise_network`` keeps a
        stage's input while it tries steps for later tensors. ``shape`` and ``upsample``
        stand in for a region of the image (``regions.synthesise_block``)."""
        act = _activation(self.settings.activation)
        shape = self.shape if shape is None else shape
        upsample = self.upsample if upsample is None else upsample
        stages: list[tuple[tuple[str, ...], Callable]] = [
            (("upsampling.taps",), lambda latents: upsample(latents).reshape(len(latents), -1))
        ]
        pairs = list(zip(self.synthesis_weights, self.synthesis_biases, strict=True))
        names = [(f"synthesis.{i}.weight", f"synthesis.{i}.bias") for i in range(len(pairs))]
        if self.blocked:
            params = [t for pair in pairs for t in pair]
            residual = (False,) * len(pairs)
            activation = self.settings.activation
            layers = [(tuple(n for pair in names for n in pair),
                       lambda x: BlockedMLP.apply(x, residual, activation, *params))]  # fmt: skip
        else:
            layers = []
            for i, ((w, b), pair) in enumerate(zip(pairs, names, strict=True)):
                last = i == len(pairs) - 1
                layers.append((pair, lambda x, w=w, b=b, last=last: _layer(x, w, b, act, last)))
        if self.settings.synthesis_stabiliser:
            # one stage, as the stabiliser reads the MLP's input
            def mlp_and_stabiliser(x, layers=layers):
                out = x
                for _, layer in layers:
                    out = layer(out)
                return out + self.stabiliser_weight @ x

            read = tuple(n for stage_names, _ in layers for n in stage_names)
            layers = [(read + ("synthesis.stabiliser.weight",), mlp_and_stabiliser)]
        stages += layers
        stages.append(((), lambda x: x.reshape(1, -1, *shape)))
        pad = (1, 1) * self.ndim
        for i, (w, b) in enumerate(zip(self.residual_weights, self.residual_biases, strict=True)):

            def residual_layer(z, w=w, b=b, first=i == 0):
                inner = F.pad(z if first else act(z), pad, mode="replicate")
                # written out: oneDNN's 3D backward pass for 2 channels is slow (and 2D no faster)
                return z + SmallConvolution.apply(inner[0], w, b)[None]

            stages.append(((f"residual.{i}.weight", f"residual.{i}.bias"), residual_layer))

        def output_layer(z):
            out = torch.addmm(
                self.output_bias[:, None], self.output_weight, z.reshape(z.shape[1], -1)
            )
            return out.reshape(shape).clamp(0.0, 1.0)

        stages.append((("output.weight", "output.bias"), output_layer))
        return stages

    # --- entropy model -----------------------------------------------------------------------

    def coarser_count(self, level: int) -> int:
        """How many coarser grids grid ``level``'s entropy model reads (none past the coarsest)."""
        return max(0, min(self.settings.coarser_levels(), len(self.grid_shapes) - 1 - level))

    def coarser_context(self, latents: list[torch.Tensor], level: int) -> torch.Tensor | None:
        """(coarser_count, *grid shape): grid level + j's value at floor(p / 2^j) for every p
        of grid ``level``, j = 1 .. coarser_count; None when it reads none."""
        count = self.coarser_count(level)
        if count == 0:
            return None
        rows = []
        for j in range(1, count + 1):
            coarse = latents[level + j]
            for axis, length in enumerate(self.grid_shapes[level]):
                coarse = coarse.repeat_interleave(2**j, dim=axis).narrow(axis, 0, length)
            rows.append(coarse)
        return torch.stack(rows)

    def laplace_parameters(
        self, latents: list[torch.Tensor], level: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_scale), each (number of latents of ``level``,), for every latent at once."""
        return self.arm(*self.context_rows(latents, level))

    def arm(self, context: torch.Tensor, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_scale) from the entropy model's input rows and its first layer's weight."""
        h = torch.addmm(self.arm_biases[0][:, None], first, context)
        layers = len(self.arm_weights)
        for i in range(1, layers):
            h = F.relu(h)
            w, b = self.arm_weights[i], self.arm_biases[i]
            h = torch.addmm(b[:, None], w, h) + (h if i < layers - 1 else 0)
        if self.settings.arm_stabiliser:
            h = h + self.arm_stabiliser_weight[:, : context.shape[0]] @ context
        return h[0], h[1]

    def context_rows(self, latents: list[torch.Tensor], level: int):
        """The entropy model's input rows for grid ``level`` and its first layer's weight."""
        context = CausalContext.apply(latents[level], *self.context_geometry(level))
        return self.with_coarser(context, self.coarser_context(latents, level))

    def with_coarser(self, context: torch.Tensor, coarse: torch.Tensor | None):
        """The context rows (the coarser grids' rows appended) and the weight that reads them:
        a grid near the coarsest has fewer coarser grids, and the weight columns of the
        missing ones go unused."""
        count = 0 if coarse is None else coarse.shape[0]
        if count:
            context = torch.cat([context, coarse.reshape(count, -1)])
        first = self.arm_weights[0]
        if first.shape[1] > context.shape[0]:
            first = first[:, : context.shape[0]]
        return context, first

    def context_geometry(self, level: int):
        """Slices of the zero-padded grid that read x[p + o], one per context offset o; the
        slice of the grid itself inside the padding; the padded shape."""
        return self.context_geometry_of(self.grid_shapes[level])

    def context_geometry_of(self, shape: tuple[int, ...]):
        """``context_geometry`` of any grid (or region of one) of this shape."""
        before = self.context_padding_before
        after = self.context_padding_after
        slices = tuple(
            tuple(slice(b + o, b + o + n) for b, o, n in zip(before, offset, shape, strict=True))
            for offset in self.context_offsets.tolist()
        )
        interior = tuple(slice(b, b + n) for b, n in zip(before, shape, strict=True))
        padded = tuple(b + n + a for b, n, a in zip(before, shape, after, strict=True))
        return slices, interior, padded

    def latent_bits(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """Estimated bits of all quantised latents under the (float) entropy model."""
        return torch.stack(self.latent_bits_by_level(latents)).sum()

    def latent_bits_by_level(self, latents: list[torch.Tensor]) -> list[torch.Tensor]:
        """Estimated bits of each grid's quantised latents, finest grid first."""
        levels = []
        for level, grid in enumerate(latents):
            if self.blocked:
                context, first = self.context_rows(latents, level)
                params = [first, self.arm_biases[0]]
                for w, b in list(zip(self.arm_weights, self.arm_biases, strict=True))[1:]:
                    params += [w, b]
                layers = len(self.arm_weights)
                residual = tuple(0 < i < layers - 1 for i in range(layers))
                bits = BlockedLaplaceRate.apply(context, grid.reshape(-1), residual, *params)
            else:
                mu, log_scale = self.laplace_parameters(latents, level)
                bits = laplace_bits(grid.reshape(-1), mu, log_scale).sum()
            levels.append(bits)
        return levels

    # --- cost ------------------------------------------------------------------------------

    def macs_per_voxel(self) -> dict[str, float]:
        """Multiply-adds per output voxel of decoding: upsampling, synthesis, entropy model."""
        voxels = math.prod(self.shape)
        upsampling = 0
        for level in range(len(self.grid_shapes) - 2, -1, -1):
            channels = len(self.grid_shapes) - 1 - level
            size = list(self.grid_shapes[level + 1])
            for axis, length in enumerate(self.grid_shapes[level]):
                size[axis] = length
                upsampling += 4 * channels * math.prod(size)
        s = self.settings
        widths = [len(self.grid_shapes), *s.synthesis_widths, s.residual_channels]
        synthesis = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
        synthesis += s.residual_channels * len(self.grid_shapes) * int(s.synthesis_stabiliser)
        synthesis += s.residual_layers * 3**self.ndim * s.residual_channels**2
        synthesis += s.residual_channels
        entropy = 0.0
        for level, grid in enumerate(self.grid_shapes):
            arm_widths = [s.context_size + self.coarser_count(level)]
            arm_widths += [s.arm_width] * s.arm_layers + [2]
            pairs = zip(arm_widths[:-1], arm_widths[1:], strict=True)
            per_latent = sum(a * b for a, b in pairs) + 2 * arm_widths[0] * s.arm_stabiliser
            entropy += per_latent * math.prod(grid) / voxels
        return {
            "upsampling": upsampling / voxels,
            "synthesis": float(synthesis),
            "entropy_model": entropy,
            "total": upsampling / voxels + synthesis + entropy,
        }
