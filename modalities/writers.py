"""Writers that turn a batch of samples into something a person looks at, by modality."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..core.utils import lookup


def write_scatter(samples: torch.Tensor, path: Path, reference: torch.Tensor | None = None) -> Path:
    """2-D points (N, 2) as a scatter PNG (next to reference data when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("samples", samples)] if reference is None else [("data", reference), ("samples", samples)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False, sharex=True, sharey=True)
    for ax, (title, pts) in zip(axes[0], panels):
        pts = pts.detach().float().cpu()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        ax.set_title(title)
        ax.set_aspect("equal")
    fig.tight_layout()
    path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


WRITERS: dict[str, Callable[..., Path]] = {"toy": write_scatter}


def write_samples(modality: str, samples: torch.Tensor, path: Path, reference: torch.Tensor | None = None) -> Path:
    """Write ``samples`` with the modality's writer; returns the file written."""
    return lookup(WRITERS, modality, "sample writer (modality)")(samples, path, reference)
