"""The mels a vocoder is asked to vocode: arrays from a TTS model (.npy, .pt) or the mel of a waveform (--wav).

A vocoder only works on the features it was trained on (``mel.MelConfig``, stored with the model in its recipe's
data options). What an array shows is checked here: one axis must have the model's n_mels bins (the other is time;
when both do, bins x frames is assumed, the layout Tacotron 2 and HiFi-GAN save, and said), the values must be
finite and look like the model's log (``mel.check_mel``). A natural-log vs log10 file is converted, not refused,
when its base is given (``log``). What an array cannot show -- the sample rate, hop, FFT and filters it was made
with -- a .pt file may declare as a dict ``{"mel": tensor, "sample_rate": 22050, "hop_length": 256, ...}`` (any
``MelConfig`` field) or the caller may pass (``declared``); a declared setting that differs from the model's is
one error naming every difference. .pt files are read with ``torch.load(weights_only=True)``: tensors and plain
values only, never arbitrary pickled objects; .npy with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from .mel import MelConfig, check_mel, mel_spectrogram

SUFFIXES = (".npy", ".pt")
LAYOUTS = ("auto", "bins-frames", "frames-bins")
LOG_BASES = ("e", "10")
SETTINGS = tuple(f.name for f in dataclasses.fields(MelConfig))
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError)


@dataclass(frozen=True)
class MelInput:
    """One input made ready to vocode: its log-mel (n_mels, frames) in the model's convention, the file it came
    from and what was assumed in reading it (said to the user)."""

    mel: torch.Tensor
    source: str
    note: str


def _load(path: Path) -> tuple[object, dict]:
    """The array of a .npy / .pt file and the mel settings a .pt dict declares beside it."""
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: expected a .npy or .pt mel spectrogram (or pass a waveform with --wav)")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), {}
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as err:
        first = (str(err).strip().splitlines() or [""])[0][:120]
        raise UserError(f"{path}: cannot read it as a {path.suffix} array ({type(err).__name__}: {first})") from None
    if not isinstance(loaded, dict):
        return loaded, {}
    unknown = sorted(str(k) for k in loaded if k != "mel" and k not in SETTINGS)
    if "mel" not in loaded or unknown:
        raise UserError(f"{path}: a .pt dict must hold 'mel' and mel settings ({', '.join(SETTINGS)}); "
                        f"got keys {sorted(map(str, loaded))}")
    settings = {k: v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
                for k, v in loaded.items() if k != "mel"}
    odd = sorted(k for k, v in settings.items() if not isinstance(v, (int, float, str)))
    if odd:
        kind = type(settings[odd[0]]).__name__
        raise UserError(f"{path}: mel setting {odd[0]!r} must be a number or a string, got {kind}")
    return loaded["mel"], settings


def _as_matrix(array: object, source: str) -> torch.Tensor:
    """A real 2-D float tensor from a loaded array; a leading batch dimension of 1 is dropped."""
    if isinstance(array, np.ndarray):
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise UserError(f"{source}: expected a real-valued mel array, got dtype {array.dtype}")
        array = torch.from_numpy(np.ascontiguousarray(array))
    if not isinstance(array, torch.Tensor):
        raise UserError(f"{source}: expected a tensor (or a dict with 'mel'), got {type(array).__name__}")
    if array.is_complex() or array.dtype == torch.bool:
        raise UserError(f"{source}: expected a real-valued mel array, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]  # (1, a, b) -> (a, b)
    if array.ndim != 2:
        raise UserError(f"{source}: expected a 2-D mel (bins x frames or frames x bins, optionally with a leading "
                        f"batch dimension of 1), got shape {tuple(array.shape)}")
    return array.float()


def orient(matrix: torch.Tensor, n_mels: int, layout: str, source: str) -> tuple[torch.Tensor, str]:
    """(mel (n_mels, frames), what was assumed): the axis with ``n_mels`` entries is the bins' (``layout`` "auto"),
    or the one ``layout`` names."""
    rows, cols = matrix.shape
    if layout == "auto":
        if rows == n_mels and cols == n_mels:
            return matrix, (f"{source}: shape ({rows}, {cols}) is square, so either axis could be the {n_mels} bins; "
                            f"assumed bins x frames (--mel-layout frames-bins if not)")
        layout = "bins-frames" if rows == n_mels else "frames-bins" if cols == n_mels else "none"
        if layout == "none":
            raise UserError(f"{source}: expected one axis of {n_mels} mel bins (the model's n_mels), got shape "
                            f"({rows}, {cols})")
    bins = rows if layout == "bins-frames" else cols
    if bins != n_mels:
        raise UserError(f"{source}: --mel-layout {layout} puts {bins} bins on the bins axis of shape ({rows}, {cols}); "
                        f"expected the model's {n_mels}")
    mel = matrix if layout == "bins-frames" else matrix.T  # (frames, bins) -> (bins, frames)
    return mel.contiguous(), f"{source}: read as {n_mels} bins x {mel.shape[1]} frames ({layout.replace('-', ' x ')})"


def check_settings(declared: dict, config: MelConfig, source: str) -> None:
    """One ``UserError`` naming every declared mel setting (but the log base, which is converted) that differs from
    the model's ``config``: what the mel was made with and what the vocoder expects."""
    different = {k: v for k, v in declared.items() if k != "log" and v is not None and v != getattr(config, k)}
    if different:
        given = ", ".join(f"{k} {v}" for k, v in different.items())
        expected = ", ".join(f"{k} {getattr(config, k)}" for k in different)
        raise UserError(f"{source}: the mel was made with {given}, but this vocoder expects {expected} (the mel "
                        f"config stored with the model, data.options)")


def convert_log(mel: torch.Tensor, given: str, wanted: str) -> torch.Tensor:
    """A log-mel in base ``given`` as base ``wanted``: log_w(x) = log_g(x) ln(g) / ln(w)."""
    if given == wanted:
        return mel
    return mel * (math.log(10.0) if given == "10" else 1 / math.log(10.0))


def read_mel(path: str | Path, config: MelConfig, log: str | None = None, layout: str = "auto",
             declared: dict | None = None) -> MelInput:
    """The mel in ``path`` (.npy / .pt) as the model's features. ``log``: the file's log base ("e" or "10"; None:
    what the file declares, else the model's); ``declared``: mel settings the caller vouches for (e.g. the TTS
    model's hop), checked with those the file declares against ``config``."""
    path = Path(path)
    source = str(path)
    array, in_file = _load(path)
    settings = {**in_file, **{k: v for k, v in (declared or {}).items() if v is not None}}
    check_settings(settings, config, source)
    given_log = log or str(settings.get("log", config.log))
    if given_log not in LOG_BASES:
        raise UserError(f"{source}: the mel's log base must be one of {', '.join(LOG_BASES)}, got {given_log!r}")
    mel, note = orient(_as_matrix(array, source), config.n_mels, layout, source)
    mel = convert_log(mel, given_log, config.log)
    try:
        check_mel(mel, config, source)
    except UserError as err:
        raise UserError(f"{err} (--mel-log tells which log the file holds: e or 10)") from None
    if given_log != config.log:
        note += f", log{'10' if given_log == '10' else ' e'} converted to the model's"
    return MelInput(mel, source, note)


def read_wav(path: str | Path, config: MelConfig) -> MelInput:
    """The log-mel of the waveform in ``path`` (any soundfile format, mixed to mono, resampled to the model's rate)
    with the model's own ``config``: the features it was trained on."""
    import soundfile
    from torchaudio.functional import resample

    path = Path(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise UserError(f"{path}: cannot read it as audio ({type(err).__name__}: {str(err)[:120]})") from None
    wave = torch.from_numpy(data.mean(axis=1))  # (T, channels) -> (T,)
    if not torch.isfinite(wave).all():
        raise UserError(f"{path}: the waveform holds NaN or infinite samples")
    if rate != config.sample_rate:
        wave = resample(wave, rate, config.sample_rate)
    if wave.numel() < config.n_fft:
        raise UserError(f"{path}: {wave.numel()} samples at {config.sample_rate} Hz, shorter than one FFT window "
                        f"({config.n_fft}); expected a longer waveform")
    mel = mel_spectrogram(wave, config)  # (T,) -> (n_mels, T // hop)
    note = f"{path}: {mel.shape[1]} frames of its mel at {config.sample_rate} Hz"
    return MelInput(mel, str(path), note + (f" (resampled from {rate} Hz)" if rate != config.sample_rate else ""))
