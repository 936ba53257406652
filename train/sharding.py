"""How a model is spread over processes: replicated (DDP through accelerate) or sharded (FSDP2).

Both strategies give the trainer the same four things: a module to run the forward pass through, a
no-gradient-sync context for accumulation micro-batches, and whole (unsharded) state dicts of the model and
the optimizer for checkpoints, plus the inverse loads. Sharding uses torch's ``fully_shard`` (FSDP2, Zhao et
al. 2023) directly rather than accelerate's plugin, so it runs the same way on GPUs (NCCL) and on CPUs (gloo),
where it is tested; every process must take part in the collective gathers and loads.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..storage.guards import CheckpointError
from .state_checks import check_optimizer_state


def fsdp_units(module: nn.Module) -> list[nn.Module]:
    """The submodules sharded as separate FSDP units: a backbone's own ``fsdp_units()`` when it has one, else
    every entry of every ``nn.ModuleList`` in it (residual blocks, stages)."""
    backbone = getattr(module, "backbone", module)
    if callable(getattr(backbone, "fsdp_units", None)):
        return list(backbone.fsdp_units())
    return [child for m in backbone.modules() if isinstance(m, nn.ModuleList) for child in m]


class Replicated:
    """Every process holds the whole model; gradients are averaged by DDP (accelerate.prepare)."""

    sharded = False

    def __init__(self, accelerator):
        self.acc = accelerator

    def prepare(self, step_module: nn.Module, make_optimizer):
        """(the module to train through, the optimizer) with ``make_optimizer(parameters)`` building the latter."""
        return self.acc.prepare(step_module, make_optimizer(step_module.parameters()))

    def no_sync(self, module: nn.Module, sync: bool):
        return contextlib.nullcontext() if sync else self.acc.no_sync(module)

    def clip(self, parameters, max_norm: float) -> torch.Tensor:
        return torch.as_tensor(self.acc.clip_grad_norm_(parameters, max_norm))

    def model_state(self, model: nn.Module) -> dict:
        return model.state_dict()

    def optimizer_state(self, model: nn.Module, optimizer) -> dict:
        return optimizer.state_dict()

    def load_model_state(self, model: nn.Module, state: dict) -> None:
        model.load_state_dict(state)

    def load_optimizer_state(self, model: nn.Module, optimizer, state: dict) -> None:
        """Check the saved state against the live optimizer (``state_checks``), then load it."""
        params = {}
        for live, group in zip(optimizer.param_groups, state.get("param_groups", []) if isinstance(state, dict) else []):
            ids = group.get("params") if isinstance(group, dict) else None
            if not isinstance(ids, list) or len(ids) != len(live["params"]):
                raise CheckpointError("optimizer: a param group's parameter list does not fit the model")
            params.update(zip(ids, live["params"]))
        check_optimizer_state(optimizer.param_groups, state, params, "optimizer")
        optimizer.load_state_dict(state)


class Sharded(Replicated):
    """Parameters, gradients and optimizer moments sharded over the processes (FSDP2's ``fully_shard`` on each
    of ``fsdp_units`` and then the whole backbone, the module whose ``forward`` the denoiser calls: FSDP gathers
    parameters in forward hooks). fp16 loss scaling is not supported with it (use bf16)."""

    sharded = True

    def prepare(self, step_module: nn.Module, make_optimizer):
        """Shard over the processes; a single process has nothing to shard and trains the module as it is, with
        the same (whole-tensor, named) checkpoint format."""
        from torch.distributed.fsdp import fully_shard

        denoiser = step_module.denoiser.to(self.acc.device)
        if self.acc.num_processes > 1:
            for unit in fsdp_units(denoiser):
                fully_shard(unit)
            fully_shard(denoiser.backbone)
        return step_module, make_optimizer(denoiser.parameters())

    def no_sync(self, module: nn.Module, sync: bool):
        if self.acc.num_processes > 1:
            module.denoiser.backbone.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    def clip(self, parameters, max_norm: float) -> torch.Tensor:
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def _options(self, offload: bool = True):
        """Whole tensors, gathered to the CPU of the main process (offloading needs a process group)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=offload and self.acc.num_processes > 1)

    def model_state(self, model: nn.Module) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=self._options())

    def optimizer_state(self, model: nn.Module, optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=self._options())

    def load_model_state(self, model: nn.Module, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state, options=self._options(offload=False))

    def load_optimizer_state(self, model: nn.Module, optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        check_optimizer_state(optimizer.param_groups, state, dict(model.named_parameters()), "optimizer")
        set_optimizer_state_dict(model, optimizer, state, options=self._options(offload=False))
