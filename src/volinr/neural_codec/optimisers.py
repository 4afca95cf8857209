"""The neural codec's optimisers: the networks' (Adam or SOAP) and the latents' Adam, stepped
as one (``training.Trainer``)."""

from __future__ import annotations

import torch

from volinr.neural_codec.settings import CodecSettings


def network_optimiser(parameters: list[torch.Tensor], settings: CodecSettings):
    """Adam, or SOAP (Vyas et al. 2024: Adam in the eigenbasis of Shampoo's preconditioner,
    pytorch-optimizer's) with Cool-chic's settings for its networks: betas 0.95, the basis
    renewed every 10 steps, decoupled weight decay 0.01 on every tensor; vectors (biases, taps)
    get plain Adam updates. SOAP's first step only builds its preconditioner."""
    group = {"params": parameters, "factor": 1.0}
    if settings.network_optimiser == "adam":
        return torch.optim.Adam([group], lr=settings.learning_rate)
    from pytorch_optimizer import SOAP

    return SOAP(
        [group], lr=settings.learning_rate, betas=(0.95, 0.95), weight_decay=0.01,
        precondition_frequency=10, max_precondition_dim=256,
    )  # fmt: skip


class Optimisers:
    """Several optimisers (the latents' and the networks') stepped as one."""

    def __init__(self, optimisers: list):
        self.optimisers = optimisers

    @property
    def param_groups(self) -> list[dict]:
        return [group for o in self.optimisers for group in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimisers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimisers:
            o.step()

    def state_dict(self) -> list[dict]:
        return [o.state_dict() for o in self.optimisers]

    def load_state_dict(self, states: list[dict]) -> None:
        for o, state in zip(self.optimisers, states, strict=True):
            o.load_state_dict(state)
