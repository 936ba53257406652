"""Exponential moving average of the weights, used for sampling.

Two ways to say how slow it is: a fixed ``decay`` with the usual warm-up decay_t = min(decay,
(1 + t) / (10 + t)) (Tarvainen & Valpola 2017 as used by guided-diffusion / diffusers' EMAModel), or a
half-life in optimizer steps with a ramp-up, beta_t = 0.5 ** (1 / min(halflife, ramp * t)) (EDM's
``ema_halflife_kimg`` with ``ema_rampup_ratio``, Karras et al. 2022, training_loop.py).

The average is kept as one shadow tensor per parameter and buffer, on the parameters' own devices and with
their own sharding: under FSDP each process averages its shard (no module copy, which FSDP cannot deepcopy);
``full_state`` gathers the whole thing for checkpoints and model folders.
"""

from __future__ import annotations

import torch
from torch import nn


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` laid out like ``like``: the same sharding for a DTensor, the same device otherwise."""
    if hasattr(like, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(like.dtype), like.device_mesh, like.placements)
    return full.to(device=like.device, dtype=like.dtype)


class EMA:
    """An EMA of a module's floating-point parameters; buffers are copied, not averaged."""

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
        with torch.no_grad():
            self.shadow = {name: p.detach().clone() for name, p in model.state_dict(keep_vars=True).items()}
        self._averaged = {name for name, p in model.named_parameters() if p.is_floating_point()}
        self.num_updates = 0
        self._source: nn.Module | None = None  # the module the pairs below were taken from
        self._pairs: tuple[list, list, list, list] = ([], [], [], [])

    def beta(self, step: int) -> float:
        """The averaging weight of the old EMA at update ``step`` (0-based)."""
        if self.decay is not None:
            return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        halflife = self.halflife_steps
        if self.warmup:
            halflife = min(halflife, max(self.rampup_ratio * (step + 1), 1e-8))
        return 0.5 ** (1.0 / halflife)

    def _pair_up(self, model: nn.Module) -> tuple[list, list, list, list]:
        """(averaged shadows, their parameters, copied shadows, their buffers) of ``model``, found once: the
        module's tensors are updated in place, so the pairs stay valid."""
        if self._source is not model:
            averaged, params, copied, buffers = [], [], [], []
            for name, value in model.state_dict(keep_vars=True).items():
                shadow = self.shadow[name]
                (averaged if name in self._averaged else copied).append(shadow)
                (params if name in self._averaged else buffers).append(value)
            self._source, self._pairs = model, (averaged, params, copied, buffers)
        return self._pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema <- beta ema + (1 - beta) param, for every floating-point parameter; buffers copied."""
        beta = self.beta(self.num_updates)
        averaged, params, copied, buffers = self._pair_up(model)
        for shadow, param in zip(averaged, params):
            shadow.lerp_(param.detach().to(shadow.dtype), 1.0 - beta)
        for shadow, buffer in zip(copied, buffers):
            shadow.copy_(buffer.detach())
        self.num_updates += 1

    def full_state(self, keep: bool = True) -> dict[str, torch.Tensor]:
        """The averaged weights as a whole state dict. Sharded (FSDP) shadows are gathered one tensor at a time,
        a collective every process must join, and kept, on the CPU, only where ``keep`` (the main process), so
        no process ever holds the whole average on its GPU; unsharded ones are returned as they are."""
        out = {}
        for name, t in self.shadow.items():
            if hasattr(t, "full_tensor"):
                whole = t.full_tensor()
                if keep:
                    out[name] = whole.cpu()
            elif keep:
                out[name] = t
        return out

    def copy_to(self, model: nn.Module) -> nn.Module:
        """Load the averaged weights into ``model`` (an unsharded copy to sample with); returns it."""
        model.load_state_dict(self.full_state())
        return model

    def state_dict(self, keep: bool = True) -> dict:
        """``{"model": full_state(keep), "num_updates": n}``."""
        return {"model": self.full_state(keep), "num_updates": self.num_updates}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        weights = state["model"]
        missing, unexpected = set(self.shadow) - set(weights), set(weights) - set(self.shadow)
        if missing or unexpected:
            raise KeyError(f"EMA weights do not match the model (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]})")
        for name, shadow in self.shadow.items():
            if tuple(weights[name].shape) != tuple(shadow.shape):
                raise ValueError(f"EMA entry {name!r} has shape {tuple(weights[name].shape)}, the model "
                                 f"{tuple(shadow.shape)}")
            shadow.copy_(_shard_like(weights[name], shadow))
        self.num_updates = int(state["num_updates"])
