"""Training infrastructure: checkpoints that resume exactly, and shareable model folders.

Tensors live in safetensors, everything else in JSON; nothing is ever pickled or unpickled. Folders are
written atomically, so a run killed at any moment (even mid-save) resumes from its newest complete
checkpoint.
"""

from .checkpoint import (
    checkpoint_config,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .guards import CheckpointError
from .pretrained import SAMPLING_KEYS, load_pretrained_files, save_pretrained
from .rng import capture_rng_state, restore_rng_state
from .state_codec import flatten_state, unflatten_state

__all__ = [
    "SAMPLING_KEYS",
    "CheckpointError",
    "capture_rng_state",
    "checkpoint_config",
    "checkpoint_step",
    "flatten_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_pretrained_files",
    "restore_rng_state",
    "save_checkpoint",
    "save_pretrained",
    "unflatten_state",
]
