"""Per-batch transforms: randomness applied to each training batch, reproducible under resume.

A transform is built from its typed options (``register_transform``) and called as
``transform(batch, generators) -> batch`` with one ``torch.Generator`` per example. The trainer seeds
example i of micro-batch m of step s from (seed, s, m, global row i), so what a transform draws for an
example does not depend on the batch it lands in, on the number of processes, or on a resume: the same
contract as the core's per-sample generators (``core.utils.randn_like``). This is where a cascade's noise
conditioning augmentation, video's random frame masks and audio's random segments draw their randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..core.utils import rand_like_batch
from ..recipes.config import Config, setting
from ..registry import register_transform


class BatchTransform(Protocol):
    """Called on each batch; may also define ``check(example_shape) -> str | None``, which the trainer calls
    before the first step so that a transform that cannot apply says why at the start."""

    def __call__(self, batch: dict, generators: Sequence[torch.Generator]) -> dict: ...


def example_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (seed, step, micro-batch, row, ...), by hashing: distinct keys give
    unrelated streams, whatever their size."""
    digest = hashlib.blake2b(b"".join(int(k).to_bytes(16, "little", signed=True) for k in keys), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def example_generators(keys: Sequence[int], rows: range) -> list[torch.Generator]:
    """One CPU generator per row, seeded by ``example_seed(*keys, row)``."""
    return [torch.Generator().manual_seed(example_seed(*keys, row)) for row in rows]


def apply_transforms(batch: dict, transforms: Sequence[BatchTransform], generators: Sequence[torch.Generator]):
    """Each transform in order, all drawing from the same per-example generators."""
    for transform in transforms:
        batch = transform(batch, generators)
    return batch


@dataclass(frozen=True)
class RandomFlipOptions(Config):
    """Options of ``random_flip``."""

    dim: int = setting(-1, doc="the example dimension to flip (-1: the last, e.g. an image's width)")
    p: float = setting(0.5, ge=0, le=1, doc="probability of flipping each example")


@register_transform("random_flip", RandomFlipOptions)
class RandomFlip:
    """Flip each example along one of its dimensions with probability p (the horizontal flips of DDPM and ADM
    training, Ho et al. 2020, sec. 4)."""

    def __init__(self, options: RandomFlipOptions):
        self.dim, self.p = options.dim, options.p

    def check(self, example_shape: tuple[int, ...]) -> str | None:
        """Why this transform cannot apply to examples of ``example_shape``, or None."""
        if not -len(example_shape) <= self.dim < len(example_shape):
            return f"random_flip: dim {self.dim} is outside examples of shape {example_shape}"
        return None

    def __call__(self, batch: dict, generators: Sequence[torch.Generator]) -> dict:
        x = batch["x"]
        example_dims = x.ndim - 1
        problem = self.check(tuple(x.shape[1:]))
        if problem:
            raise ValueError(problem)
        dim = self.dim % example_dims + 1  # in the batch (B, *S)
        flip = rand_like_batch(torch.empty(len(x), dtype=torch.float64), generators).to(x.device) < self.p  # (B,)
        shape = (len(x),) + (1,) * example_dims
        return {**batch, "x": torch.where(flip.view(shape), x.flip(dim), x)}
