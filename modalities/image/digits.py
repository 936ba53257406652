"""scikit-learn's handwritten digits (Alpaydin & Kaynak 1998, UCI; 1797 grey 8x8 images, classes 0-9),
bundled with scikit-learn, so nothing is downloaded: the image modality's CPU data set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ...data.examples import TensorExamples
from ...recipes.config import Config, setting
from ...registry import register_dataset


@dataclass(frozen=True)
class DigitsOptions(Config):
    """Options of ``digits``."""

    size: int = setting(8, ge=8, le=256, doc="image side: the 8x8 originals, enlarged (bicubic, clipped) to size")


def load_digits(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, size, size) in [-1, 1], labels (N,)): intensities 0..16 mapped linearly to [-1, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8 - 1  # (N, 8, 8) -> (N, 1, 8, 8)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    return x, torch.tensor(data.target, dtype=torch.long)


@register_dataset("digits", DigitsOptions)
def digits(options: DigitsOptions, seed: int) -> TensorExamples:
    """All 1797 digits with their classes (``class_labels``)."""
    x, labels = load_digits(options.size)
    return TensorExamples(x, {"class_labels": labels})
