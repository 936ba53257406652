"""Exponential moving average of the weights, used for sampling.

Two ways to say how slow it is: a fixed ``decay`` with the usual warm-up decay_t = min(decay,
(1 + t) / (10 + t)) (Tarvainen & Valpola 2017 as used by guided-diffusion / diffusers' EMAModel), or a
half-life in optimizer steps with a ramp-up, beta_t = 0.5 ** (1 / min(halflife, ramp * t)) (EDM's
``ema_halflife_kimg`` with ``ema_rampup_ratio``, Karras et al. 2022, training_loop.py).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """An EMA copy of a module's parameters and buffers (buffers are copied, not averaged)."""

    def __init__(
        self,
        model: nn.Module,
        decay: float | None = None,
        halflife_steps: float | None = None,
        warmup: bool = True,
        rampup_ratio: float = 0.05,
    ):
        if (decay is None) == (halflife_steps is None):
            raise ValueError("give exactly one of decay or halflife_steps")
        self.decay, self.halflife_steps = decay, halflife_steps
        self.warmup, self.rampup_ratio = warmup, rampup_ratio
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    def beta(self, step: int) -> float:
        """The averaging weight of the old EMA at update ``step`` (0-based)."""
        if self.decay is not None:
            return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        halflife = self.halflife_steps
        if self.warmup:
            halflife = min(halflife, max(self.rampup_ratio * (step + 1), 1e-8))
        return 0.5 ** (1.0 / halflife)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema <- beta ema + (1 - beta) param, for every floating-point parameter; buffers copied."""
        beta = self.beta(self.num_updates)
        ema_params = dict(self.model.named_parameters())
        for name, param in model.named_parameters():
            ema_params[name].lerp_(param.detach().to(ema_params[name].dtype), 1.0 - beta)
        ema_buffers = dict(self.model.named_buffers())
        for name, buf in model.named_buffers():
            ema_buffers[name].copy_(buf)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
