"""Sizes no machine can allocate become one clear line, not an allocator trace (or the OOM killer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from ..errors import UserError

T = TypeVar("T")
_ALLOCATION_PHRASES = ("can't allocate memory", "not enough memory", "out of memory", "cannot allocate memory",
                       "std::bad_alloc")


def is_allocation_failure(err: BaseException) -> bool:
    """True for the errors torch and Python raise when memory runs out (CPU allocator, CUDA, MemoryError)."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(p in str(err).lower() for p in _ALLOCATION_PHRASES)


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Free memory where tensors of ``device`` live: free GPU memory, or the OS's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def parameter_bytes(build: Callable[[], torch.nn.Module]) -> int | None:
    """Bytes of the parameters and buffers ``build`` would allocate, counted on the meta device (nothing is
    allocated); None when the builder cannot run there."""
    try:
        with torch.device("meta"):
            module = build()
        tensors = [*module.parameters(), *module.buffers()]
    except Exception:  # a builder that reads files or checks values may not run on meta: then only step 2 guards
        return None
    return sum(t.numel() * t.element_size() for t in tensors)


def guard_allocation(build: Callable[[], T], what: str, keys: str, *, module: bool = False, copies: float = 1.0,
                     device: torch.device | str = "cpu") -> T:
    """``build()`` (for a ``module``, then moved to ``device``), unless the allocation fails or, for a ``module``,
    its parameters (times ``copies``: weights, EMA, gradients, optimizer moments) cannot fit in the free memory
    of ``device``: then a ``UserError`` naming ``keys``."""
    size = parameter_bytes(build) if module else None
    free = available_bytes(device) if size is not None else 0
    if size is not None and size * copies > free:
        raise UserError(f"{what} needs {size * copies / 2**30:.1f} GiB ({size / 2**30:.2f} GiB of weights x {copies:g}), "
                        f"more than the {free / 2**30:.1f} GiB free on {torch.device(device).type}: lower {keys}")
    try:
        built = build()
        return built.to(device) if module else built
    except Exception as err:
        if is_allocation_failure(err):
            raise UserError(f"{what} could not be allocated ({str(err).splitlines()[0][:160]}): lower {keys}") from None
        raise
