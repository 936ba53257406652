"""Capture and restore every random number generator a training run draws from.

Python's ``random``, numpy's global ``RandomState``, torch's CPU generator, each CUDA device's generator
and any number of named per-run ``torch.Generator`` objects (data order, noise, dropout, ...). Restoring
the captured state makes the following draws repeat exactly, which is what makes ``--resume``
continue a run bit for bit on the CPU. The captured state is plain nested Python (tuples, ints, a numpy
array, byte tensors), so ``state_codec`` stores it exactly: no pickle.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..storage.guards import CheckpointError


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Snapshot of the global RNGs (python, numpy, torch CPU, CUDA when available) and named generators."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: gen.get_state() for name, gen in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None):
    """Put the RNGs back to a ``capture_rng_state`` snapshot.

    Every named generator passed must be in the snapshot (a missing one would silently change the run).
    CUDA states are restored when this machine has CUDA; with fewer devices than were captured, the
    first ones are restored.
    """
    random.setstate(_as_python_state(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    saved = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise CheckpointError(f"checkpoint has no state for generator '{name}' (it has {sorted(saved)})")
        gen.set_state(saved[name])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def _as_python_state(state: Any) -> tuple:
    """``random.setstate`` needs tuples all the way down: (version, tuple of 625 ints, gauss_next)."""
    version, internal, gauss_next = state
    return (version, tuple(internal), gauss_next)
