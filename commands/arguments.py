"""argparse types shared by the commands: each rejects a bad value with one line naming what was expected."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """An integer >= 1 (below 2**31)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not 1 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"expected a positive integer below 2**31, got {value}")
    return value


def seed(text: str) -> int:
    """A seed: an integer in 0 .. 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed in 0 .. 2**32 - 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def name(text: str) -> str:
    """A non-empty name."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got an empty string")
    return text
