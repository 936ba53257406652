"""Learning-rate schedule: linear warm-up from 0, then constant or cosine decay to 0 (Loshchilov & Hutter 2017)."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, total_steps: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_lr_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, kind: str):
    """A ``LambdaLR`` over ``lr_factor`` (its state is just the step count, so it checkpoints exactly)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, kind))
