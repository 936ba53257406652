"""Fixed-size training examples from clips of any length, and ``random_segment``, the batch transform that draws
where in its clip each example's segment lies.

An audio example is a window of a file (``data.options.window`` samples) with its log-mel, and a segment of it
(``data.options.segment`` samples, x) with the matching mel frames (cond["mel"]); the data set places the segment
in the window's centre. ``random_segment`` moves it to a random frame of the window's real part, per example and
step, from the trainer's per-example generators (so resume and any number of processes draw alike): the random
segments of HiFi-GAN (Kong et al. 2020, jik876/hifi-gan meldataset.py) and WaveGrad (lmnt-com/wavegrad
dataset.py). Segments start on frame boundaries and their mel is cut from the window's mel, as lmnt's WaveGrad
does and HiFi-GAN does when fine-tuning: each frame keeps its real neighbours, as in a whole utterance's mel at
inference, and no mel is computed per step. The example's shape never changes, so the model is built on it.

A clip shorter than its window is extended by reflection (..., c, b, a | b, c, ...) before its mel is computed:
the padding is speech-like, so no example teaches the model that a speech mel goes with digital silence or that
silence is noise, and the mel matches the padded waveform exactly. Segments start within the real part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core.utils import rand_like_batch
from ...registry import register_transform

WINDOW, WINDOW_MEL, WINDOW_LENGTH = "window", "window_mel", "window_length"  # cond keys the data set adds
WINDOW_KEYS = (WINDOW, WINDOW_MEL, WINDOW_LENGTH)


def reflect(positions: torch.Tensor, length: torch.Tensor | int) -> torch.Tensor:
    """Indices into a clip of ``length`` samples for ``positions`` >= 0 past its end, reflecting back and forth
    without repeating the edge sample (torch's "reflect" padding, for any length of padding)."""
    length = torch.as_tensor(length, dtype=torch.long)
    period = (2 * (length - 1)).clamp(min=1)
    q = positions % period
    return torch.where(q < length, q, period - q).clamp(max=length - 1)


def extend(wave: torch.Tensor, length: int) -> torch.Tensor:
    """``wave`` (T,) with 0 < T <= length, extended to (length,) by reflection."""
    return wave[reflect(torch.arange(length), wave.shape[-1])]


def last_start(valid: torch.Tensor, segment: int, hop: int) -> torch.Tensor:
    """The last frame (B,) at which a segment of ``segment`` samples can start in ``valid`` (B,) real samples; 0 when
    the clip is shorter than a segment (its segment then takes some of the reflection)."""
    return ((valid - segment) // hop).clamp(min=0)


def cut(window: torch.Tensor, window_mel: torch.Tensor, start: torch.Tensor, segment: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The segments of ``segment`` samples starting at frames ``start`` (B,) of windows (B, 1, W) with their mels
    (B, n_mels, W // hop) -> (x (B, 1, segment), mel (B, n_mels, segment // hop))."""
    hop = window.shape[-1] // window_mel.shape[-1]
    frames = segment // hop
    samples = (start * hop)[:, None, None] + torch.arange(segment, device=window.device)  # (B, 1, segment)
    columns = start[:, None, None] + torch.arange(frames, device=window.device)  # (B, 1, frames)
    x = window.gather(-1, samples)
    mel = window_mel.gather(-1, columns.expand(-1, window_mel.shape[1], -1))  # (B, n_mels, frames)
    return x, mel


@register_transform("random_segment")
class RandomSegment:
    """x and cond["mel"] become the segment of each example's window that starts at a frame drawn uniformly over
    its real part; the window keys leave ``cond``. Examples without a window (a data set whose window is its
    segment, or not an audio clip data set) pass unchanged: there is nothing to draw from."""

    def __init__(self, options=None):
        self.options = options

    def check(self, example_shape: tuple[int, ...]) -> str | None:
        if len(example_shape) != 2 or example_shape[0] != 1:
            return f"random_segment cuts mono waveforms (1, T), but the examples have shape {example_shape}"
        return None

    def __call__(self, batch: dict, generators: Sequence[torch.Generator]) -> dict:
        cond = batch["cond"]
        if WINDOW not in cond:
            return batch
        window, window_mel, x = cond[WINDOW], cond[WINDOW_MEL], batch["x"]
        hop = window.shape[-1] // window_mel.shape[-1]
        count = last_start(cond[WINDOW_LENGTH], x.shape[-1], hop) + 1  # (B,) possible starts
        u = rand_like_batch(torch.empty(len(x), dtype=torch.float64), generators)  # (B,) in [0, 1)
        start = (u * count.cpu()).long().clamp(max=count.cpu() - 1).to(window.device)
        x, mel = cut(window, window_mel, start, x.shape[-1])
        rest = {k: v for k, v in cond.items() if k not in WINDOW_KEYS}
        return {**batch, "x": x, "cond": {**rest, "mel": mel}}
