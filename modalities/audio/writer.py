"""Waveforms to listen to and to evaluate: one clip of every sample in turn (each after its real example when the
writer is given them), a WAV file per sample at the data's sample rate, and a picture of the first few log-mels.

The sample rate is the recipe's data options' ``sample_rate`` (the mel config's, ``folder.AudioOptions``); a recipe
whose data set has none (a folder of .npy waveforms) is written at ``DEFAULT_RATE``, said once.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from ...media import Audio, Image, save_media, to_unit_range
from ...registry import WriteContext, register_writer
from .mel import MelConfig, mel_spectrogram

DEFAULT_RATE = 22050  # LJSpeech's
GAP, PAIR_GAP = 0.25, 0.05  # seconds of silence between samples, and between a real example and its sample
MAX_PICTURED = 16  # spectrograms in the picture
_warned = set()


def sample_rate(context: WriteContext) -> int:
    """The data's sample rate, from the recipe in ``context``, else ``DEFAULT_RATE``."""
    options = getattr(getattr(context.config, "data", None), "options", None)
    rate = getattr(options, "sample_rate", None)
    if isinstance(rate, int) and rate > 0:
        return rate
    name = getattr(getattr(context.config, "data", None), "name", None)
    if name not in _warned:
        _warned.add(name)
        print(f"polydiff: data set {name!r} names no sample rate; audio is written at {DEFAULT_RATE} Hz",
              file=sys.stderr)
    return DEFAULT_RATE


def to_waves(samples: torch.Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """Samples (N, 1, T) in ``value_range`` -> float32 (N, T) in [-1, 1], clipped; NaN (a diverged sampler) -> 0."""
    return (to_unit_range(samples.nan_to_num(nan=sum(value_range) / 2), value_range) * 2 - 1).numpy()[:, 0]


@torch.no_grad()
def write_audio(samples: torch.Tensor, context: WriteContext) -> Audio:
    """Samples (N, 1, T) as one mono clip: each sample after a short pause, and after its real example when
    ``context.reference`` holds one per sample (a vocoder's inputs beside its outputs)."""
    rate = sample_rate(context)
    waves = to_waves(samples, context.value_range)
    real = None
    if context.reference is not None and len(context.reference) == len(waves):
        real = to_waves(context.reference, context.value_range)
    parts = []
    for i, wave in enumerate(waves):
        if real is not None:
            parts += [real[i], np.zeros(int(PAIR_GAP * rate), np.float32)]
        parts += [wave, np.zeros(int(GAP * rate), np.float32)]
    return Audio(np.concatenate(parts)[:, None], rate)  # (T,) -> (T, 1)


def spectrograms(waves: np.ndarray, rate: int, context: WriteContext) -> np.ndarray:
    """uint8 (H, W, 3): the log-mel of each of the first ``MAX_PICTURED`` waves in a column, with the data's mel
    config (else HiFi-GAN's features at ``rate``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    config = getattr(getattr(getattr(context.config, "data", None), "options", None), "mel_config", None)
    if not isinstance(config, MelConfig) or config.sample_rate != rate:
        config = dataclasses.replace(MelConfig(), sample_rate=rate, f_max=min(8000.0, rate / 2))
    waves = waves[:MAX_PICTURED]
    figure = Figure(figsize=(8, 1.4 * len(waves) + 0.4), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(waves), 1, squeeze=False)[:, 0]
    for i, (axis, wave) in enumerate(zip(axes, waves)):
        wave = wave if len(wave) > config.n_fft else np.pad(wave, (0, config.n_fft + 1 - len(wave)))
        mel = mel_spectrogram(torch.from_numpy(wave), config).numpy()  # (n_mels, frames)
        axis.imshow(mel, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                    extent=(0, len(wave) / rate, 0, config.n_mels))
        axis.set_ylabel(f"{i}: mel bin", fontsize=7)
        axis.tick_params(labelsize=6)
    axes[-1].set_xlabel("seconds", fontsize=7)
    figure.tight_layout()
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()


def export_audio(samples: torch.Tensor, context: WriteContext, folder: Path) -> list[Path]:
    """``folder/wavs/000000.wav``... (16-bit PCM at the data's sample rate) and ``folder/spectrograms.png``."""
    rate, waves = sample_rate(context), to_waves(samples, context.value_range)
    folder.mkdir(parents=True, exist_ok=True)
    for i, wave in enumerate(waves):
        save_media(Audio(np.ascontiguousarray(wave[:, None]), rate), folder / "wavs" / f"{i:06d}")
    picture = save_media(Image(spectrograms(waves, rate, context)), folder / "spectrograms")
    return [folder / "wavs", picture]


register_writer("audio", example_dims=2, export=export_audio)(write_audio)
