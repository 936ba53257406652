"""argparse types shared by the commands: each rejects a bad value with one line naming what was expected."""

from __future__ import annotations

import argparse
import math


def _integer(text: str, lo: int, hi: int, what: str) -> int:
    """An integer in [lo, hi)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not lo <= value < hi:
        raise argparse.ArgumentTypeError(f"expected {what} in {lo} .. {hi - 1}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (below 2**31)."""
    return _integer(text, 1, 2**31, "a positive integer")


def seed(text: str) -> int:
    """A seed: an integer in 0 .. 2**32 - 1."""
    return _integer(text, 0, 2**32, "an integer seed")


def label(text: str) -> int:
    """A class label: an integer in 0 .. 2**31 - 1 (the model checks it against its classes)."""
    return _integer(text, 0, 2**31, "a class label")


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
