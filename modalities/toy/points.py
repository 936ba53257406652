"""The toy modality: vectors (D,) drawn as a scatter plot of their first two coordinates."""

from __future__ import annotations

import numpy as np
import torch

from ...media import Image
from ...registry import WriteContext, register_writer


@register_writer("toy", example_dims=1)
def write_points(samples: torch.Tensor, context: WriteContext) -> Image:
    """Points (N, D) as a scatter of coordinates 0 and 1 (next to ``context.reference`` data when given), axes
    spanning ``context.value_range``; a 1-D vector is plotted against its index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("samples", samples)] if context.reference is None else [("data", context.reference), ("samples", samples)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False, sharex=True, sharey=True)
    lo, hi = context.value_range
    for ax, (title, pts) in zip(axes[0], panels):
        pts = pts.detach().float().cpu().reshape(len(pts), -1)
        xs, ys = (pts[:, 0], pts[:, 1]) if pts.shape[1] > 1 else (torch.arange(len(pts)), pts[:, 0])
        ax.scatter(xs, ys, s=2, alpha=0.5)
        ax.set_title(title)
        ax.set_ylim(lo, hi)
        if pts.shape[1] > 1:
            ax.set_xlim(lo, hi)
            ax.set_aspect("equal")
    fig.tight_layout()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return Image(pixels)
