"""Log-mel spectrograms as TTS models and vocoders compute them, and a check that a given mel fits a config.

A vocoder only works on the features it was trained on: the sample rate, the STFT, the mel filters, the log base
and the clamp must all match the TTS model's, and a mismatch does not fail, it just sounds bad. ``MelConfig``
names every one of these; ``check_mel`` catches the mismatches that show in the values.

    mel = log(max(clamp, M |STFT(pad(wave))|))      (B, 1, T) -> (B, n_mels, T // hop_length)

|STFT| is the magnitude (power 1), M the mel filter bank. The waveform is reflect-padded by (n_fft - hop) / 2
on each side and framed without centering, as HiFi-GAN does (Kong et al. 2020, jik876/hifi-gan meldataset.py),
so that exactly T // hop_length frames come out: a waveform of F * hop_length samples has F frames, the
alignment a vocoder's upsampler needs. (Tacotron 2's code frames with center=True and gives T // hop + 1.)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F
from torchaudio.transforms import MelSpectrogram

from ...errors import UserError
from ...recipes.config import Config, ConfigError, setting

_LOG_NAMES = {"e": "natural log", "10": "log10"}


@dataclass(frozen=True)
class MelConfig(Config):
    """The features of one TTS / vocoder pair; the defaults are HiFi-GAN's 22 kHz ones (``MEL_PRESETS``)."""

    sample_rate: int = setting(22050, gt=0, le=384000, doc="waveform samples per second")
    n_fft: int = setting(1024, gt=0, le=65536, doc="FFT size of the STFT")
    hop_length: int = setting(256, gt=0, le=65536, doc="waveform samples per mel frame")
    win_length: int = setting(1024, gt=0, le=65536, doc="Hann window length (<= n_fft, centred in each FFT frame)")
    n_mels: int = setting(80, gt=0, le=1024, doc="mel bins")
    f_min: float = setting(0.0, ge=0, doc="lowest frequency of the mel filters (Hz)")
    f_max: float = setting(8000.0, gt=0, doc="highest frequency of the mel filters (Hz, <= sample_rate / 2)")
    mel_scale: Literal["slaney", "htk"] = setting("slaney", doc="mel scale of the filter centres: Slaney's "
                                                                 "(librosa's default) or HTK's")
    norm: Literal["slaney", "none"] = setting("slaney", doc="filter weights: Slaney's area normalisation "
                                                             "(librosa's default) or triangles of height 1")
    log: Literal["e", "10"] = setting("e", doc="base of the log: e (Tacotron 2, HiFi-GAN) or 10")
    clamp: float = setting(1e-5, gt=0, doc="magnitudes below this are raised to it before the log")

    def check(self) -> None:
        if self.win_length > self.n_fft:
            raise ConfigError(("win_length",), f"{{key}} must be <= {{n_fft}} = {self.n_fft}, got {self.win_length}")
        if self.hop_length > self.n_fft:
            raise ConfigError(("hop_length",), f"{{key}} must be <= {{n_fft}} = {self.n_fft} (frames may not leave "
                                               f"gaps), got {self.hop_length}")
        if self.f_max > self.sample_rate / 2:
            raise ConfigError(("f_max",), f"{{key}} must be <= half of {{sample_rate}} ({self.sample_rate / 2:g} "
                                          f"Hz, the Nyquist frequency), got {self.f_max:g}")
        if self.f_min >= self.f_max:
            raise ConfigError(("f_min",), f"{{key}} must be below {{f_max}} = {self.f_max:g}, got {self.f_min:g}")

    @property
    def floor(self) -> float:
        """log(clamp): the smallest value a mel of this config can hold."""
        return _log(self.clamp, self.log)


MEL_PRESETS: dict[str, MelConfig] = {
    # HiFi-GAN (config_v1.json, meldataset.py) = Tacotron 2 (NVIDIA/tacotron2) features: 22,050 Hz, 1024-point
    # FFT and Hann window, hop 256, 80 librosa (Slaney) mel filters over 0-8000 Hz, ln of magnitudes clamped at 1e-5.
    # HiFi-GAN adds 1e-9 under the magnitude's square root; that only lifts exact silence above the clamp.
    "hifigan_22k": MelConfig(sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024, n_mels=80, f_min=0.0,
                             f_max=8000.0, mel_scale="slaney", norm="slaney", log="e", clamp=1e-5),
    # WaveGrad (Chen et al. 2021, sec. 5): 24 kHz, 128 mels, 50 ms Hann window (1200), 12.5 ms hop (300), 2048-point
    # FFT, 20 Hz - 12 kHz. The paper does not give the filter normalisation or the log: we assume HTK filters of
    # height 1 (tf.signal's, Google's stack) and ln with the 1e-5 clamp. lmnt-com/wavegrad differs (22,050 Hz,
    # normalised STFT, f_max = 11,025 Hz, 20 log10 dB mapped to [0, 1]) and is not expressible here.
    "wavegrad_24k": MelConfig(sample_rate=24000, n_fft=2048, hop_length=300, win_length=1200, n_mels=128, f_min=20.0,
                              f_max=12000.0, mel_scale="htk", norm="none", log="e", clamp=1e-5),
}


def _log(value: float, base: str) -> float:
    return math.log(value) if base == "e" else math.log10(value)


@functools.lru_cache(maxsize=16)
def _transform(config: MelConfig, device: torch.device) -> MelSpectrogram:
    """The magnitude mel spectrogram of ``config`` on ``device``, built once (its filter bank is a buffer)."""
    return MelSpectrogram(
        sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
        hop_length=config.hop_length, f_min=config.f_min, f_max=config.f_max, n_mels=config.n_mels,
        power=1.0, center=False, norm=None if config.norm == "none" else config.norm, mel_scale=config.mel_scale,
    ).to(device)


def mel_spectrogram(wave: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """Log-mel of ``wave`` (B, 1, T) or (T,), samples in [-1, 1] -> (B, n_mels, T // hop) or (n_mels, T // hop)."""
    if wave.ndim == 1:
        return mel_spectrogram(wave[None, None], config)[0]  # (T,) -> (1, 1, T) -> (n_mels, frames)
    if wave.ndim != 3 or wave.shape[1] != 1:
        raise ValueError(f"mel_spectrogram takes waveforms (B, 1, T) or (T,), got shape {tuple(wave.shape)}")
    left = (config.n_fft - config.hop_length) // 2
    right = config.n_fft - config.hop_length - left
    if wave.shape[-1] <= max(left, right) or wave.shape[-1] < config.hop_length:
        raise ValueError(f"a waveform of {wave.shape[-1]} samples is too short for n_fft {config.n_fft}, "
                         f"hop_length {config.hop_length} (needs more than {max(left, right, config.hop_length - 1)})")
    padded = F.pad(wave.float(), (left, right), mode="reflect")  # (B, 1, T + n_fft - hop)
    magnitudes = _transform(config, wave.device)(padded)[:, 0]  # (B, 1, n_mels, frames) -> (B, n_mels, frames)
    clamped = magnitudes.clamp(min=config.clamp)
    mel = clamped.log() if config.log == "e" else clamped.log10()
    assert mel.shape[-1] == wave.shape[-1] // config.hop_length, (mel.shape, wave.shape)
    return mel


def check_mel(mel: torch.Tensor, config: MelConfig, source: str) -> None:
    """Raise a one-line ``UserError`` naming ``source`` when ``mel`` ((B,) n_mels, frames) cannot be a log-mel of
    ``config``: the wrong number of bins, NaN / inf, or values out of the config's range. The range is a heuristic:
    values below log(clamp) were not clamped as configured (dB? another clamp?); a minimum sitting exactly at the
    other base's floor (log10(1e-5) = -5 where ln(1e-5) = -11.51 is expected) shows the other log base; values all
    >= 0 look like linear magnitudes. A mel of the other base that never reaches its floor (no silence) passes."""
    if mel.ndim not in (2, 3) or mel.shape[-2] != config.n_mels:
        raise UserError(f"{source}: expected a mel spectrogram ((B,) {config.n_mels} mel bins, frames), got shape "
                        f"{tuple(mel.shape)}")
    values = mel.detach().float()
    finite = torch.isfinite(values)
    if not finite.all():
        raise UserError(f"{source}: {int((~finite).sum())} of {values.numel()} mel values are NaN or infinite; "
                        f"expected finite log-mel values")
    low = values.min().item()
    name, floor = _LOG_NAMES[config.log], config.floor
    other = "10" if config.log == "e" else "e"
    other_floor = _log(config.clamp, other)
    expected = f"expected the {name} of magnitudes clamped at {config.clamp:g} (>= {floor:.3f})"
    at_other_floor = abs(low - other_floor) <= 2e-3 * max(1.0, abs(other_floor))
    if at_other_floor:
        raise UserError(f"{source}: the mel looks like {_LOG_NAMES[other]}: its minimum {low:.3f} is "
                        f"{_LOG_NAMES[other]}({config.clamp:g}), that base's floor (a range heuristic); {expected}")
    if low < floor - 2e-3 * max(1.0, abs(floor)):
        raise UserError(f"{source}: mel values go down to {low:.3f}, below {name}({config.clamp:g}) = {floor:.3f} "
                        f"(dB, another log base or clamp? a range heuristic); {expected}")
    if low >= 0:
        raise UserError(f"{source}: every mel value is >= 0 (minimum {low:.3f}): this looks like linear magnitudes "
                        f"or a [0, 1] scale rather than their log (a range heuristic); {expected}, mostly negative")
