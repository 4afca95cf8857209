"""Soft rounding, the differentiable stand-in for rounding latents during training."""

from __future__ import annotations

import math

import torch


def soft_round(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Agustsson & Theis (2020): a differentiable rounding; identity as temperature grows."""
    middle = torch.floor(x) + 0.5
    return middle + torch.tanh((x - middle) / temperature) / (2 * math.tanh(0.5 / temperature))


def soft_round_conditional_mean(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """E[X | soft_round(X) + U = x], the decoder-side half of soft rounding with noise."""
    middle = torch.floor(x - 0.5) + 0.5
    scaled = (x - 0.5 - middle) * (2 * math.tanh(0.5 / temperature))
    return middle + torch.atanh(scaled.clamp(-1 + 1e-6, 1 - 1e-6)) * temperature + 0.5
