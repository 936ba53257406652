"""Data sets by recipe name. Each builder takes the recipe's typed options and returns a map-style
data set whose items are ``{"x": Tensor, "cond": {name: Tensor}}``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset, Subset

from ..core.utils import lookup
from .swiss_roll import swiss_roll


class TensorExamples(Dataset):
    """Examples held in memory: ``x`` (N, *S) and optional per-example conditions (N, ...)."""

    def __init__(self, x: torch.Tensor, cond: dict[str, torch.Tensor] | None = None):
        self.x, self.cond = x, dict(cond or {})

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "cond": {k: v[i] for k, v in self.cond.items()}}

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch by one gather (the DataLoader's batched fetch; ``collate`` passes it through)."""
        return self[torch.as_tensor(indices)]


def _swiss_roll(options, seed: int) -> Dataset:
    return TensorExamples(swiss_roll(options.num_samples, options.noise, torch.Generator().manual_seed(seed)))


DATASETS: dict[str, Callable[..., Dataset]] = {"swiss_roll": _swiss_roll}


def build_dataset(name: str, options, seed: int) -> Dataset:
    """The data set ``name`` built from its options (seeded where it is synthetic)."""
    return lookup(DATASETS, name, "data set")(options, seed)


def split(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A fixed (train, validation) split: a seeded permutation, the first ``val_fraction`` held out."""
    n = len(dataset)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(val_fraction * n))
    return Subset(dataset, perm[n_val:]), Subset(dataset, perm[:n_val])


def collate(items: list[dict] | dict) -> dict:
    """Stack a list of examples into a batch ``{"x": (B, *S), "cond": {k: (B, ...)}}`` (a batch fetched
    whole by ``__getitems__`` is already one)."""
    if isinstance(items, dict):
        return items
    return {
        "x": torch.stack([it["x"] for it in items]),
        "cond": {k: torch.stack([it["cond"][k] for it in items]) for k in items[0]["cond"]},
    }
