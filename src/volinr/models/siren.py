"""SIREN (Sitzmann et al. 2020), initialised as in the authors' reference notebook.

Layer-count convention: the paper's "2 / 3 / 4 layers" count sine layers. A SIREN with
``sine_layers = n`` has one first sine layer (in_features -> width), ``n - 1`` hidden sine
layers (width -> width) and a linear output layer; with a 3D coordinate input and width 128
this gives the paper's 17,153 / 33,665 / 50,177 parameters (Tables 1-3). The notebook's
``hidden_layers`` argument equals ``sine_layers - 1``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SineLayer(nn.Module):
    """sin(omega_0 * (W x + b))."""

    def __init__(self, in_features: int, out_features: int, omega_0: float, is_first: bool):
        super().__init__()
        self.omega_0 = omega_0
        self.linear = nn.Linear(in_features, out_features)
        # Bounds from the reference notebook: the first layer spans several periods of the
        # sine over [-1, 1]; later layers keep pre-activations ~ U(-sqrt(6), sqrt(6)).
        bound = 1.0 / in_features if is_first else math.sqrt(6.0 / in_features) / omega_0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


class Siren(nn.Module):
    """Coordinates in [-1, 1]^in_features -> one intensity."""

    def __init__(
        self,
        in_features: int = 3,
        hidden_features: int = 128,
        sine_layers: int = 2,
        out_features: int = 1,
        omega_0: float = 30.0,
    ):
        super().__init__()
        if sine_layers < 1:
            raise ValueError(f"a SIREN needs at least one sine layer, got {sine_layers}")
        self.config = {
            "in_features": in_features,
            "hidden_features": hidden_features,
            "sine_layers": sine_layers,
            "out_features": out_features,
            "omega_0": omega_0,
        }
        layers: list[nn.Module] = [SineLayer(in_features, hidden_features, omega_0, True)]
        layers += [
            SineLayer(hidden_features, hidden_features, omega_0, False)
            for _ in range(sine_layers - 1)
        ]
        self.net = nn.Sequential(*layers)
        self.output = nn.Linear(hidden_features, out_features)
        bound = math.sqrt(6.0 / hidden_features) / omega_0
        with torch.no_grad():
            self.output.weight.uniform_(-bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.output(self.net(coords))

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
