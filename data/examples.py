"""Examples and batches: every data set yields ``{"x": Tensor (*S), "cond": {name: Tensor}}`` and a batch
stacks them to ``{"x": (B, *S), "cond": {name: (B, ...)}}``. In-memory examples, the fixed train / validation
split, collation (which also adds up the examples a data set had to skip, see ``data.folder``)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, IterableDataset, Subset

SKIPPED = "skipped"  # optional item / batch key: names of unreadable files a data set skipped for this example


class TensorExamples(Dataset):
    """Examples held in memory: ``x`` (N, *S) and optional per-example conditions (N, ...)."""

    def __init__(self, x: torch.Tensor, cond: dict[str, torch.Tensor] | None = None):
        self.x, self.cond = x, dict(cond or {})
        self.example_shape = tuple(x.shape[1:])
        labels = self.cond.get("class_labels")
        self.num_classes = int(labels.max()) + 1 if labels is not None and len(labels) else None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "cond": {k: v[i] for k, v in self.cond.items()}}

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch by one gather (the DataLoader's batched fetch; ``collate`` passes it through)."""
        return self[torch.as_tensor(indices)]


def example_shape(dataset) -> tuple[int, ...]:
    """The shape of one example: the data set's ``example_shape`` attribute, else that of its first example."""
    shape = getattr(dataset, "example_shape", None)
    if shape is None and isinstance(dataset, Subset):
        shape = getattr(dataset.dataset, "example_shape", None)
    if shape is None:
        first = next(iter(dataset)) if isinstance(dataset, IterableDataset) else dataset[0]
        shape = tuple(first["x"].shape)
    return tuple(int(n) for n in shape)


def split(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A fixed (train, validation) split: a seeded permutation, the first ``val_fraction`` held out."""
    n = len(dataset)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(val_fraction * n))
    return Subset(dataset, perm[n_val:]), Subset(dataset, perm[:n_val])


def fetch(dataset, indices: list[int]) -> dict:
    """The batch of ``dataset`` at ``indices``, gathered at once where the data set can (``__getitems__``)."""
    getitems = getattr(dataset, "__getitems__", None)
    return collate(getitems(indices) if getitems is not None else [dataset[i] for i in indices])


def collate(items: list[dict] | dict) -> dict:
    """Stack a list of examples into a batch ``{"x": (B, *S), "cond": {k: (B, ...)}}`` (a batch fetched whole
    by ``__getitems__`` is already one); the names of skipped files are gathered under ``"skipped"``."""
    if isinstance(items, dict):
        return items
    batch = {
        "x": torch.stack([it["x"] for it in items]),
        "cond": {k: torch.stack([it["cond"][k] for it in items]) for k in items[0]["cond"]},
    }
    skipped = [name for it in items for name in it.get(SKIPPED, ())]
    if skipped:
        batch[SKIPPED] = skipped
    return batch
