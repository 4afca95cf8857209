"""The synthesis's MSE after one integer of a 1x1 layer moves, from that layer's cached outputs.

The refinement (``network_quantisation``) tries each coded integer at q - 1, q + 1 and further:
about three evaluations a parameter, each running the synthesis from the tensor's stage to the
end over the whole image. A single weight w[o, i] (or bias b[o]) of a 1x1 layer moves one
output channel only, z[o] + delta x[i] (+ delta), and the next layer's pre-activation by the
rank-one term W'[:, o] (act(z[o] + delta x[i]) - act(z[o])): a candidate then costs one column
and one rank-one update instead of two full layers, and the stages after them run as in
``synthesise``. The costs equal the full synthesis's up to float rounding (the sums run in
another order), so a pass may settle a near-tie the other way; a candidate that moves more
than one value (its scale changed) runs the full synthesis, and the caches are rebuilt from
the tensor (no drift) each time a move is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from volinr.neural_codec.model import LatentCodecModel, _activation

_LAYER = re.compile(r"synthesis\.(\d+)\.(weight|bias)")


def layer_of(model: LatentCodecModel, name: str) -> int | None:
    """The 1x1 synthesis layer the coded tensor ``name`` belongs to, where its single moves
    can be evaluated from cached outputs (plain layers: not the blocked passes, and no
    stabiliser reading the layers' input); None otherwise."""
    match = _LAYER.fullmatch(name)
    if match is None or model.blocked or model.settings.synthesis_stabiliser:
        return None
    return int(match.group(1))


class SingleMoveDistortion:
    """other_term(values) of a synthesis layer's tensor for the refinement: the MSE with the
    tensor at ``values``, by a column and a rank-one update where ``values`` differ from the
    settled ones in one place, by ``full`` (the whole synthesis from the stage) otherwise.

    ``part``: the image's ``network_quantisation._Part`` (its cached stage inputs and the
    stages after); ``stage``: the layer's stage index."""

    def __init__(self, model, layer, tensor, part, stage, full: Callable[[torch.Tensor], float]):
        self.tensor, self.part, self.stage, self.full = tensor, part, stage, full
        weights, biases = model.synthesis_weights, model.synthesis_biases
        self.weight, self.bias = weights[layer], biases[layer]
        self.is_bias = tensor is self.bias
        self.last = layer == len(weights) - 1
        if not self.last:
            self.next_weight, self.next_bias = weights[layer + 1], biases[layer + 1]
            self.next_last = layer + 1 == len(weights) - 1
        self.act = _activation(model.settings.activation)
        self.settle(tensor.detach().clone())

    def settle(self, values: torch.Tensor) -> None:
        """Set the tensor to ``values`` (a kept move) and rebuild the caches there."""
        self.tensor.copy_(values)
        self.base, self.base_cost = values.clone(), None
        self.x = self.part.input_of(self.stage)
        self.z = torch.addmm(self.bias[:, None], self.weight, self.x)
        if not self.last:
            self.a = self.act(self.z)
            self.z_next = torch.addmm(self.next_bias[:, None], self.next_weight, self.a)

    def __call__(self, values: torch.Tensor) -> float:
        moved = torch.nonzero(values != self.base)
        if len(moved) > 1:
            return self.full(values)
        self.tensor.copy_(values)
        if len(moved) == 0:
            if self.base_cost is None:
                self.base_cost = self._cost(self.z, None)
            return self.base_cost
        index = tuple(moved[0].tolist())
        delta = values[index] - self.base[index]
        channel = index[0]
        column = self.z[channel] + (delta if self.is_bias else delta * self.x[index[1]])
        return self._cost(self.z, (channel, column))

    def _cost(self, z: torch.Tensor, moved: tuple[int, torch.Tensor] | None) -> float:
        if self.last:
            if moved is not None:
                z = z.clone()
                z[moved[0]] = moved[1]
            return self.part.mse_from(self.stage + 1, z)
        z_next = self.z_next
        if moved is not None:
            channel, column = moved
            change = self.act(column) - self.a[channel]
            z_next = torch.addr(z_next, self.next_weight[:, channel], change)
        out = z_next if self.next_last else self.act(z_next)
        return self.part.mse_from(self.stage + 2, out)
