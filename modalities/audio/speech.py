"""Speech made on the machine, nothing downloaded: English sentences spoken by espeak-ng, written as a corpus in
LJSpeech's layout (Ito & Johnson 2017: ``metadata.csv`` with ``id|text|normalized text`` lines, ``wavs/<id>.wav``)
so that the ``ljspeech`` data set reads it like the real one.

Sources, in order (``source="auto"``): the espeak-ng library bundled by the ``espeakng-loader`` wheel, driven
through ctypes (speak_lib.h: espeak_Initialize in AUDIO_OUTPUT_SYNCHRONOUS mode, a callback collecting the 16-bit
samples, espeak_Synth); the ``espeak-ng`` program on PATH (``-w file.wav``); last, ``synthetic``: a voiced
stand-in, glottal pulses at a falling, wavering pitch through three formant resonators per syllable (Klatt 1980's
digital resonator), which has speech's spectral shape but no words. Every corpus says which source spoke it.
"""

from __future__ import annotations

import ctypes
import functools
import math
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

SOURCES = ("auto", "espeak_library", "espeak_program", "synthetic")

SENTENCES = (
    "The old lighthouse keeper climbed the stairs every evening at dusk.",
    "A gentle rain fell on the quiet village all through the night.",
    "Please remember to water the tomatoes before you leave for work.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "Seven brave sailors crossed the northern sea in a wooden boat.",
    "Could you tell me the way to the nearest railway station?",
    "The museum opens at nine and closes early on Sundays.",
    "Fresh bread from the bakery smells wonderful in the morning.",
    "Thunder rolled across the valley as the storm drew closer.",
    "Her grandmother kept a diary for more than sixty years.",
    "The committee will announce its decision next Thursday afternoon.",
    "Bright yellow kites danced above the beach in the strong wind.",
    "He carefully folded the map and put it back in his pocket.",
    "Owls hunt at night, gliding silently over the open fields.",
    "The recipe calls for two eggs, a cup of flour, and a pinch of salt.",
    "Why does the moon look so much larger near the horizon?",
    "Our train was delayed by forty minutes because of snow on the tracks.",
    "The little dog barked happily when its owner came home.",
    "Mathematics is the language in which nature seems to be written.",
    "They planted a row of cherry trees along the river bank.",
    "The library is a wonderful place to spend a rainy afternoon.",
    "Each autumn the geese fly south in long, noisy formations.",
    "I would rather walk than wait another hour for the bus.",
    "The painter mixed blue and yellow to make a soft shade of green.",
    "Quiet voices drifted from the kitchen late into the evening.",
    "A thousand stars were visible once the city lights went out.",
    "The engineer checked every bolt on the bridge twice.",
    "Do not forget to bring an umbrella, just in case.",
    "The children built a castle of sand with towers and a moat.",
    "Strong coffee and warm toast make a fine breakfast.",
    "The mountain path was steep, narrow, and covered in loose stones.",
    "She answered every question with patience and good humor.",
    "Several students stayed behind to help clean the classroom.",
    "The clock on the tower struck twelve as we crossed the square.",
    "How many languages do you think are spoken in this city?",
    "Wild strawberries grow along the edge of the forest in June.",
    "The pilot announced that we would land in twenty minutes.",
    "A fox slipped under the fence and vanished into the hedge.",
    "Good questions are often more valuable than quick answers.",
    "The fisherman mended his nets on the harbor wall.",
    "Light travels faster than sound, so we see lightning first.",
    "The new bridge will connect the two halves of the town.",
    "Every morning he read the newspaper from the last page to the first.",
    "The garden was full of roses, lilies, and humming bees.",
    "Please speak slowly and clearly when you leave a message.",
    "The ancient walls of the city were built from golden stone.",
    "It took them three days to reach the top of the glacier.",
    "A cold wind blew in from the sea and rattled the windows.",
    "The scientist wrote her results in a small blue notebook.",
    "Music filled the hall long after the concert had ended.",
    "When the tide goes out, you can walk to the little island.",
    "The farmer counted his sheep twice before closing the gate.",
    "Nobody expected the quiet student to win the chess tournament.",
    "Hot soup is the best remedy for a chilly winter evening.",
    "The river widens as it approaches the sea.",
    "We watched the sunset from the roof of the old hotel.",
    "The baker wakes at four to prepare the morning loaves.",
    "Is there any tea left in the pot, or shall I make some more?",
    "Great ideas often begin as simple questions.",
    "The last bus leaves the station at half past eleven.",
    "Snow covered the hills, and the valley was silent and white.",
    "He tuned the old radio until the voice came through clearly.",
)


# ---------------------------------------------------------------------------------------------------------------
# espeak-ng, as a library (espeakng-loader) or as a program


class _EspeakLibrary:
    """The bundled libespeak-ng, initialized once per process (the library keeps global state, hence the lock)."""

    SYNCHRONOUS, UTF8, POS_CHARACTER, DONT_EXIT, RATE, PITCH = 2, 1, 1, 0x8000, 1, 3
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = lib.espeak_Initialize(self.SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                                          self.DONT_EXIT)
        if self.rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.rate})")
        self.lib, self.chunks, self.lock = lib, [], threading.Lock()
        self.callback = self.CALLBACK(self._collect)  # kept: the library calls it for as long as it lives
        lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav, count, events) -> int:
        if wav and count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0: go on

    def __call__(self, text: str, voice: str, words_per_minute: int, pitch: int) -> tuple[np.ndarray, int]:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(self.RATE, words_per_minute, 0)
            self.lib.espeak_SetParameter(self.PITCH, pitch, 0)
            self.chunks.clear()
            data = text.encode()
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, self.POS_CHARACTER, 0, self.UTF8, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed ({status})")
            wave = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return wave.astype(np.float32) / 32768, self.rate


@functools.lru_cache(maxsize=1)
def _espeak_library() -> _EspeakLibrary:
    return _EspeakLibrary()


def _espeak_program(text: str, voice: str, words_per_minute: int, pitch: int) -> tuple[np.ndarray, int]:
    import soundfile

    program = shutil.which("espeak-ng")
    if program is None:
        raise FileNotFoundError("espeak-ng is not on PATH")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run([program, "-v", voice, "-s", str(words_per_minute), "-p", str(pitch), "-w", str(path), text],
                       check=True, capture_output=True, timeout=60)
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


# ---------------------------------------------------------------------------------------------------------------
# The synthetic stand-in

_FORMANTS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "o": (570, 840, 2410),
             "u": (300, 870, 2240), "y": (390, 1990, 2550)}  # vowel formants F1-F3, Hz (Peterson & Barney 1952)
_BANDWIDTHS = (80, 100, 140)


def _resonator(x: torch.Tensor, frequency: float, bandwidth: float, rate: int) -> torch.Tensor:
    """Klatt's (1980) digital resonator y[n] = A x[n] + B y[n-1] + C y[n-2], unit gain at 0 Hz."""
    from torchaudio.functional import lfilter

    c = -math.exp(-2 * math.pi * bandwidth / rate)
    b = 2 * math.exp(-math.pi * bandwidth / rate) * math.cos(2 * math.pi * frequency / rate)
    a = 1 - b - c
    denominator, numerator = torch.tensor([1.0, -b, -c], dtype=x.dtype), torch.tensor([a, 0.0, 0.0], dtype=x.dtype)
    return lfilter(x, denominator, numerator, clamp=False)


def synthetic_speech(text: str, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced stand-in for ``text``: one syllable per vowel group (120-220 ms), a glottal source (a sawtooth of
    the pitch's phase: harmonics falling 6 dB per octave) whose pitch falls over the sentence with a slow waver,
    through the vowel's three formant resonators in cascade (Klatt 1980), under a raised-cosine envelope; a breath
    of noise at each word's start and pauses between words (longer at punctuation)."""
    f0, parts = rng.uniform(95, 190), []
    words = re.findall(r"[A-Za-z']+[,.;:?!]?", text) or ["a"]
    for w, word in enumerate(words):
        progress = w / max(1, len(words) - 1)
        noise = rng.normal(0, 0.02, int(0.03 * rate))
        parts.append(noise - np.concatenate([[0], noise[:-1]]))  # first difference: a hiss, like a fricative
        for vowels in re.findall(r"[aeiouy]+", word.lower()) or ["a"]:
            n = int(rng.uniform(0.12, 0.22) * rate)
            t = np.arange(n) / rate
            pitch = f0 * (1.15 - 0.3 * progress) * (1 + 0.04 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
            phase = np.cumsum(pitch) / rate
            source = torch.from_numpy(2 * (phase % 1.0) - 1)
            voiced = source
            for formant, bandwidth in zip(_FORMANTS.get(vowels[0], _FORMANTS["a"]), _BANDWIDTHS):  # in cascade
                voiced = _resonator(voiced, formant * rng.uniform(0.95, 1.05), bandwidth, rate)
            parts.append(voiced.numpy() * np.sin(np.pi * np.arange(n) / n) ** 0.5)
        parts.append(np.zeros(int((0.25 if word[-1] in ",.;:?!" else 0.06) * rate)))
    wave = np.concatenate(parts)
    return (0.5 * wave / max(1e-9, np.abs(wave).max())).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Speaking, and writing a corpus


def speak(text: str, sample_rate: int, rng: np.random.Generator, source: str = "auto",
          voice: str = "en-us") -> tuple[np.ndarray, str]:
    """(``text`` spoken at ``sample_rate`` as float32 (T,), peak 0.9; the source that spoke it). Each sentence
    gets its own speaking rate (140-185 words a minute) and pitch (35-65 of espeak's 0-100) from ``rng``."""
    from torchaudio.functional import resample

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    words_per_minute, pitch = int(rng.integers(140, 186)), int(rng.integers(35, 66))
    order = ("espeak_library", "espeak_program", "synthetic") if source == "auto" else (source,)
    for name in order:
        try:
            if name == "espeak_library":
                wave, rate = _espeak_library()(text, voice, words_per_minute, pitch)
            elif name == "espeak_program":
                wave, rate = _espeak_program(text, voice, words_per_minute, pitch)
            else:
                wave, rate = synthetic_speech(text, sample_rate, rng), sample_rate
        except (ImportError, OSError, RuntimeError, subprocess.SubprocessError):  # this source is unavailable
            if name == order[-1]:
                raise
            continue
        if rate != sample_rate:
            wave = resample(torch.from_numpy(wave), rate, sample_rate).numpy()
        return (0.9 * wave / max(1e-9, float(np.abs(wave).max()))).astype(np.float32), name
    raise AssertionError("unreachable")


def make_speech_corpus(folder: str | Path, n_sentences: int = 16, sample_rate: int = 22050, seed: int = 0,
                       source: str = "auto", voice: str = "en-us") -> Path:
    """Write ``n_sentences`` sentences (drawn from ``SENTENCES`` by ``seed``, repeating when more are asked) as an
    LJSpeech-layout corpus in ``folder``: ``metadata.csv`` (``SP0001|text|text``), ``wavs/SP0001.wav`` (16-bit
    PCM at ``sample_rate``) and ``SOURCE`` naming what spoke it. Returns ``folder``."""
    import soundfile

    if n_sentences < 1:
        raise ValueError(f"n_sentences must be >= 1, got {n_sentences}")
    folder = Path(folder)
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(SENTENCES)) for _ in range(-(-n_sentences // len(SENTENCES)))])
    lines, used = [], set()
    for i, k in enumerate(order[:n_sentences], 1):
        text, key = SENTENCES[k], f"SP{i:04d}"
        wave, name = speak(text, sample_rate, rng, source, voice)
        soundfile.write(str(folder / "wavs" / f"{key}.wav"), wave, sample_rate, subtype="PCM_16")
        lines.append(f"{key}|{text}|{text}")
        used.add(name)
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "SOURCE").write_text(", ".join(sorted(used)) + "\n", encoding="utf-8")
    return folder
