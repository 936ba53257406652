"""Training: the accelerate trainer, checkpoints that resume exactly, EMA, data order, run folders.

Checkpoint tensors live in safetensors and everything else in JSON (``polydiff.storage``); nothing is
ever pickled or unpickled. Folders are written atomically, so a run killed at any moment (even mid-save)
resumes from its newest complete checkpoint. Sampling a trained model needs none of this package
(``polydiff.pipeline``).
"""

from .checkpoint import (
    checkpoint_config,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "checkpoint_config",
    "checkpoint_step",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]
