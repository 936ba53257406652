"""Speech and other audio on disk: ``ljspeech`` (LJSpeech's layout, Ito & Johnson 2017: ``metadata.csv`` with
``id|text|normalized text`` lines and ``wavs/<id>.wav``) and ``audio_folder`` (any .wav / .flac files, searched
recursively, optionally a class per sub-folder).

Files are read with soundfile, mixed to mono and resampled to the mel config's sample rate (torchaudio) when theirs
differs. Each file is cut into windows of ``window`` samples (overlapping evenly so that all of it is covered; a
shorter file is one window); one window is one example (``segments``: x is a segment of it, with its mel). A file
that cannot be read, holds no samples, is shorter than one FFT window or is silent (peak below ``silence``) is
skipped and counted like any unreadable file (``data.folder.FileDataset``). ``ljspeech`` with ``speak`` > 0 first
speaks a corpus into a root that has no metadata.csv (``speech.make_speech_corpus``).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...data.folder import READ_ERRORS, FileDataset, FolderOptions, read_folder
from ...errors import UserError
from ...recipes.config import ConfigError, setting, show
from ...registry import register_dataset
from .mel import MEL_PRESETS, MelConfig, mel_spectrogram
from .segments import WINDOW, WINDOW_LENGTH, WINDOW_MEL, cut, extend, last_start

SUFFIXES = (".wav", ".flac")
RESAMPLE_MARGIN = 64  # source samples read beyond each side of a window: the resampling filter's reach (~7)


@dataclass(frozen=True)
class AudioOptions(FolderOptions):
    """Options shared by the audio data sets: the mel features, the example's length and what counts as silent."""

    root: str = setting("data", doc="the folder of audio files")
    mel_preset: str = setting("wavegrad_24k", choices=tuple(MEL_PRESETS),
                              doc="the mel features (and so the sample rate), from modalities.audio.mel.MEL_PRESETS")
    mel: MelConfig | None = setting(None, doc='every mel setting as a table, instead of mel_preset; "none": the preset')
    segment: int = setting(7200, gt=0, le=2**24, doc="samples per example (x), a multiple of the mel hop_length and "
                                                     ">= its n_fft; cond['mel'] has segment / hop_length frames")
    window: int = setting(0, ge=0, le=2**26, doc="samples of a file each example carries for the random_segment "
                                                 "transform to cut from (a multiple of hop_length, >= segment); "
                                                 "0: the segment itself, examples are fixed segments")
    silence: float = setting(1e-3, ge=0, lt=1, doc="a window whose largest absolute sample is below this is skipped "
                                                   "as silent")

    @property
    def mel_config(self) -> MelConfig:
        """The mel features: ``mel`` when set, else the preset's."""
        return self.mel if self.mel is not None else MEL_PRESETS[self.mel_preset]

    @property
    def sample_rate(self) -> int:
        """The data's sample rate: the mel config's (files at other rates are resampled)."""
        return self.mel_config.sample_rate

    def check(self) -> None:
        super().check()
        m = self.mel_config
        source = "{mel}" if self.mel is not None else f"{{mel_preset}} = {show(self.mel_preset)}"
        if self.segment % m.hop_length or self.segment < m.n_fft:
            low = max(m.hop_length * (self.segment // m.hop_length), m.n_fft + (-m.n_fft) % m.hop_length)
            raise ConfigError(("segment",), f"{{key}} must be a multiple of the hop_length {m.hop_length} of {source} "
                                            f"and >= its n_fft {m.n_fft}, got {self.segment} (e.g. {low} or "
                                            f"{low + m.hop_length})")
        if self.window and (self.window % m.hop_length or self.window < self.segment):
            raise ConfigError(("window",), f"{{key}} must be 0 or a multiple of the hop_length {m.hop_length} of "
                                           f"{source} and >= {{segment}} = {self.segment}, got {self.window}")


@dataclass(frozen=True)
class LJSpeechOptions(AudioOptions):
    """Options of ``ljspeech``."""

    root: str = setting("data", doc="the corpus folder: metadata.csv (lines of id, text and normalized text, "
                                    "separated by vertical bars) and wavs/<id>.wav")
    speak: int = setting(0, ge=0, le=100_000, doc="when > 0 and root has no metadata.csv: first write this many "
                                                  "sentences there, spoken by espeak-ng at the mel config's sample "
                                                  "rate (modalities/audio/speech.py, seed 0), so that a recipe runs "
                                                  "on a fresh machine; 0: the corpus must exist")


@dataclass(frozen=True)
class AudioFolderOptions(AudioOptions):
    """Options of ``audio_folder``."""

    root: str = setting("data", doc="folder of .wav / .flac files, searched recursively")
    class_folders: bool = setting(False, doc="each sub-folder of root is a class, e.g. a speaker (labels in sorted "
                                             "order)")


def read_window(path: Path, start: int, length: int, rate: int) -> torch.Tensor:
    """Samples [start, start + length) of ``path`` at ``rate`` as mono float32 (fewer at the end of the file).
    Another rate is resampled from the window plus a margin, on block boundaries where both rates meet exactly."""
    import soundfile
    from torchaudio.functional import resample

    with soundfile.SoundFile(str(path)) as f:
        native, frames = f.samplerate, f.frames
        if native == rate:
            f.seek(min(start, frames))
            return torch.from_numpy(f.read(length, dtype="float32", always_2d=True).mean(axis=1))
        g = math.gcd(native, rate)
        block_in, block_out = native // g, rate // g  # block_in source samples <-> block_out samples at ``rate``
        margin = -(-RESAMPLE_MARGIN // block_in)
        first = max(0, start // block_out - margin)
        stop = min(-(-frames // block_in), -(-(start + length) // block_out) + margin)
        f.seek(min(first * block_in, frames))
        source = f.read(max(0, stop - first) * block_in, dtype="float32", always_2d=True).mean(axis=1)
    offset = start - first * block_out
    if len(source) == 0:
        return torch.zeros(0)
    return resample(torch.from_numpy(source), native, rate)[offset: offset + length]


def check_wave(wave: torch.Tensor, n_fft: int, silence: float) -> None:
    """``ValueError`` (a skipped file) unless ``wave`` is finite, at least ``n_fft`` samples and not silent."""
    if wave.numel() == 0:
        raise ValueError("holds no samples")
    if not torch.isfinite(wave).all():
        raise ValueError("holds NaN or inf")
    if wave.numel() < n_fft:
        raise ValueError(f"{wave.numel()} samples, shorter than one FFT window ({n_fft})")
    peak = float(wave.abs().max())
    if peak < silence:
        raise ValueError(f"silent: peak {peak:.2g} < data.options.silence = {silence:g}")


def list_windows(files: list[Path], rate: int, window: int, root: Path) -> tuple[list[int], list[int]]:
    """(file index, start sample at ``rate``) of every window; each file is covered by ceil(length / window) windows
    spread evenly from its start to its end. A file whose header cannot be read gets one window (its read fails,
    and it is counted). Files at other rates are announced once."""
    import soundfile

    owners, starts, rates = [], [], Counter()
    for i, path in enumerate(files):
        try:
            info = soundfile.info(str(path))
            length = math.ceil(info.frames * rate / info.samplerate)
            rates[info.samplerate] += info.samplerate != rate
        except READ_ERRORS:
            length = window
        count = max(1, math.ceil(length / window))
        owners += [i] * count
        starts += np.linspace(0, max(0, length - window), count).round().astype(int).tolist()
    if sum(rates.values()):
        found = ", ".join(f"{n} at {r} Hz" for r, n in sorted(rates.items()) if n)
        print(f"polydiff: {sum(rates.values())} of {len(files)} audio files under {root} ({found}) are resampled "
              f"to the mel config's {rate} Hz as they are read", file=sys.stderr)
    return owners, starts


class AudioClips(FileDataset):
    """One example per window: x (1, segment), cond["mel"] (n_mels, segment // hop), and, when the window is longer
    than the segment, cond["window"] (1, window), cond["window_mel"] and cond["window_length"] (real samples)."""

    def __init__(self, files: list[Path], labels: list[int] | None, root: Path, num_classes: int | None,
                 options: AudioOptions):
        self.mel, self.segment, self.silence = options.mel_config, options.segment, options.silence
        self.window = options.window or options.segment
        owners, self.starts = list_windows(files, self.mel.sample_rate, self.window, root)
        super().__init__([files[i] for i in owners], None if labels is None else [labels[i] for i in owners], root,
                         num_classes)
        self.example_shape = (1, options.segment)

    def _example(self, i: int) -> dict:
        wave = read_window(self.files[i], self.starts[i], self.window, self.mel.sample_rate)
        check_wave(wave, self.mel.n_fft, self.silence)
        valid = torch.tensor(wave.numel())
        window = extend(wave, self.window)[None]  # (W,) -> (1, W)
        window_mel = mel_spectrogram(window[None], self.mel)  # (1, 1, W) -> (1, n_mels, W // hop)
        start = last_start(valid, self.segment, self.mel.hop_length) // 2  # the centre
        x, mel = cut(window[None], window_mel, start[None], self.segment)
        cond = {"mel": mel[0]}
        if self.window > self.segment:
            cond.update({WINDOW: window, WINDOW_MEL: window_mel[0], WINDOW_LENGTH: valid})
        if self.labels is not None:
            cond["class_labels"] = torch.tensor(self.labels[i], dtype=torch.long)
        return {"x": x[0], "cond": cond}


def read_metadata(root: Path) -> tuple[list[Path], list[str]]:
    """The wav files and normalized texts of an LJSpeech-layout corpus, in metadata order."""
    path = root / "metadata.csv"
    if not root.is_dir():
        raise UserError(f"data.options.root: {root} {'is not a folder' if root.exists() else 'does not exist'}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"data.options.root: cannot read {path} as UTF-8 text, the LJSpeech metadata ({err})") from None
    files, texts = [], []
    for number, line in enumerate(lines, 1):
        if line.strip():
            fields = line.split("|")  # LJSpeech quotes nothing: '|' only separates
            if len(fields) < 2 or not fields[0].strip():
                raise UserError(f"{path}:{number}: expected 'id|text|normalized text', got {line[:60]!r}")
            files.append(root / "wavs" / f"{fields[0].strip()}.wav")
            texts.append(fields[-1].strip())
    if not files:
        raise UserError(f"data.options.root: {path} lists no clips (expected 'id|text|normalized text' lines)")
    return files, texts


def speak_corpus(root: Path, sentences: int, rate: int) -> None:
    """Write a spoken corpus of ``sentences`` sentences at ``rate`` Hz into ``root`` (``speech.make_speech_corpus``,
    seed 0), saying so in one line; a folder that cannot be written is a ``UserError``."""
    from .speech import make_speech_corpus

    print(f"polydiff: {root} has no metadata.csv: speaking {sentences} sentences into it at {rate} Hz first "
          f"(data.options.speak)", file=sys.stderr, flush=True)
    try:
        make_speech_corpus(root, sentences, rate, seed=0)
    except OSError as err:
        raise UserError(f"data.options.speak: cannot write a corpus in {root} ({err})") from None


@register_dataset("ljspeech", LJSpeechOptions)
def ljspeech(options: LJSpeechOptions, seed: int) -> AudioClips:
    """The clips of ``metadata.csv`` (a listed clip missing from wavs/ is skipped and counted when read); with
    ``speak``, a corpus spoken on the machine first when root has none."""
    root = Path(options.root).expanduser()
    if options.speak and not root.is_file() and not (root / "metadata.csv").exists():
        speak_corpus(root, options.speak, options.sample_rate)
    files, texts = read_metadata(root)
    dataset = AudioClips(files, None, root, None, options)
    dataset.texts = dict(zip(files, texts))  # normalized text by file, for models that need it
    dataset[0]  # a corpus of which no clip reads is refused now, not at the first step
    return dataset


@register_dataset("audio_folder", AudioFolderOptions)
def audio_folder(options: AudioFolderOptions, seed: int) -> AudioClips:
    return read_folder(options, SUFFIXES, lambda *found: AudioClips(*found, options))
