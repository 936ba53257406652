"""The audio part of ``polydiff demo``: a speech corpus spoken on the machine (espeak-ng, ``speech``), the tiny
WaveGrad recipe trained on it through the engine, then a sentence it never heard vocoded from its log-mel with the
recipe's 6-step schedule, next to Griffin-Lim (Griffin & Lim 1984) from the same mel: the mel magnitudes mapped
back to linear frequencies by least squares (torchaudio's InverseMelScale) and 32 phase-recovery iterations."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ...media import Audio, Image, save_media
from ...pipeline import DiffusionModel
from ...recipes.files import load_recipe
from ...registry import register_demo
from ...storage.output import fresh_demo_folder
from .mel import MelConfig, mel_spectrogram
from .speech import make_speech_corpus
from .vocode import mel_config_of, vocode_mels
from .writer import to_waves

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "audio" / "wavegrad_tiny.toml"
GRIFFIN_LIM_ITERATIONS = 32


def _corpus(folder: Path, sentences: int, rate: int) -> tuple[Path, Path, str]:
    """``sentences`` + 1 distinct sentences spoken into ``folder`` (an LJSpeech-layout corpus); the last one is
    taken out of metadata.csv and wavs/ into ``folder/held_out``. (the corpus, the held-out wav, its text)"""
    fresh_demo_folder(folder)
    make_speech_corpus(folder, sentences + 1, rate, seed=0)  # distinct while sentences + 1 <= len(SENTENCES)
    lines = (folder / "metadata.csv").read_text(encoding="utf-8").splitlines()
    key, text, _ = lines[-1].split("|")
    assert all(line.split("|")[1] != text for line in lines[:-1]), "the held-out sentence is also in the corpus"
    (folder / "metadata.csv").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    (folder / "held_out").mkdir()
    held_out = shutil.move(folder / "wavs" / f"{key}.wav", folder / "held_out" / f"{key}.wav")
    (folder / "held_out" / "metadata.csv").write_text(lines[-1] + "\n", encoding="utf-8")
    return folder, Path(held_out), text


def _train(corpus: Path, out: Path, steps: int, sets: tuple[str, ...] = ()) -> Path:
    """Train the tiny WaveGrad recipe on ``corpus`` for ``steps`` into ``out``; the model folder. Says the loss
    at the first and the last logged step, read back from the run's scalars.csv."""
    from ...train.demo_run import train_for_demo  # the trainer only when a demo trains

    result = train_for_demo(RECIPE, out, steps, (f"data.options.root={json.dumps(corpus.as_posix())}",
                                                 "data.options.speak=0", *sets))
    with open(result.run_dir / "scalars.csv", newline="") as f:
        losses = [(int(r["step"]), float(r["value"])) for r in csv.DictReader(f) if r["name"] == "train/loss"]
    curve = " -> ".join(f"{loss:.3f} (step {step})" for step, loss in dict.fromkeys([*losses[:1], *losses[-1:]]))
    print(f"demo: loss {curve}")
    return result.model_dir


def griffin_lim(mel: torch.Tensor, config: MelConfig, iterations: int = GRIFFIN_LIM_ITERATIONS,
                seed: int = 0) -> torch.Tensor:
    """A waveform (frames * hop,) from a log-mel (n_mels, frames) of ``config`` (``mel.mel_spectrogram``):
    exp, then the mel filters inverted by least squares (negative magnitudes set to 0), then Griffin-Lim. Its
    frame f is centred on sample f * hop + hop / 2 (mel_spectrogram's padding); torch's centred STFT puts it on
    f * hop, hence the half-hop shift."""
    from torchaudio.transforms import GriffinLim, InverseMelScale

    frames, hop = mel.shape[-1], config.hop_length
    inverse = InverseMelScale(config.n_fft // 2 + 1, config.n_mels, config.sample_rate, config.f_min, config.f_max,
                              None if config.norm == "none" else config.norm, config.mel_scale, driver="gelsd")
    base = torch.e if config.log == "e" else 10.0
    magnitudes = inverse(torch.pow(base, mel.double()).float())  # (n_mels, frames) -> (n_fft // 2 + 1, frames)
    run = GriffinLim(config.n_fft, iterations, config.win_length, hop, power=1.0, length=(frames - 1) * hop + 1)
    with torch.random.fork_rng(devices=[]):  # its random initial phases, without touching the global generator
        torch.manual_seed(seed)
        wave = run(magnitudes)
    shift = hop // 2
    return torch.nn.functional.pad(wave, (shift, frames * hop - shift - wave.shape[-1]))


def mel_l1(wave: torch.Tensor, reference: torch.Tensor, config: MelConfig) -> float:
    """Mean absolute difference of the log-mels of two waveforms (T,)."""
    return (mel_spectrogram(wave, config) - mel_spectrogram(reference, config)).abs().mean().item()


def spectrogram_picture(waves: dict[str, np.ndarray], config: MelConfig) -> np.ndarray:
    """uint8 (H, W, 3): the log-mel of each wave, titled with its name, stacked on one colour scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mels = {name: mel_spectrogram(torch.from_numpy(w), config).numpy() for name, w in waves.items()}
    low, high = config.floor, max(m.max() for m in mels.values())
    figure = Figure(figsize=(9, 2.2 * len(mels) + 0.3), dpi=90)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(mels), 1, squeeze=False, sharex=True)[:, 0]
    for axis, (name, mel) in zip(axes, mels.items()):
        shown = axis.imshow(mel, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                            vmin=max(low, high - 12), vmax=high,
                            extent=(0, mel.shape[1] * config.hop_length / config.sample_rate, 0, config.n_mels))
        axis.set_title(name, fontsize=9)
        axis.set_ylabel("mel bin", fontsize=8)
        axis.tick_params(labelsize=7)
        figure.colorbar(shown, ax=axis, pad=0.01).ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("seconds", fontsize=8)
    figure.tight_layout()
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()


@register_demo("audio", order=20, about="a tiny WaveGrad vocoder trained on espeak-ng speech, a held-out sentence "
                                        "vocoded in 6 steps next to Griffin-Lim (~4 min on 2 cores)")
def speech_demo(out: Path, quick: bool = False) -> list[Path]:
    """Speak a corpus into ``<out>/speech_16k`` (one more sentence held out), train ``recipes/audio/
    wavegrad_tiny.toml`` on it into ``<out>/wavegrad_tiny`` and write the held-out sentence three ways:
    ``speech_original.wav``, ``speech_vocoded.wav`` (WaveGrad from its mel, the recipe's sampling defaults),
    ``speech_griffinlim.wav`` (Griffin-Lim from the same mel), and ``speech_spectrograms.png`` (their log-mels)."""
    import soundfile

    start = time.perf_counter()
    sentences, steps = (4, 4) if quick else (60, 700)
    rate = load_recipe(RECIPE).data.options.sample_rate
    corpus, held_out, text = _corpus(out / "speech_16k", sentences, rate)
    model = DiffusionModel.from_pretrained(_train(corpus, out, steps, ("data.batch_size=4",) if quick else ()))
    config = mel_config_of(model)
    wave = torch.from_numpy(soundfile.read(str(held_out), dtype="float32")[0])
    frames = wave.numel() // config.hop_length
    if quick:
        frames = min(frames, 40)  # half a second
    original = wave[: frames * config.hop_length]
    mel = mel_spectrogram(original, config)  # (n_mels, frames): what a TTS model would hand the vocoder
    vocoded_at = time.perf_counter()
    (vocoded,) = vocode_mels(model, [mel])
    vocoded = torch.from_numpy(to_waves(vocoded[None, None], model.config.data.range)[0])
    vocoded_in = time.perf_counter() - vocoded_at
    griffin = griffin_lim(mel, config).clamp(-1, 1)
    waves = {"original": original.numpy(), "WaveGrad": vocoded.numpy(), "Griffin-Lim": griffin.numpy()}
    names = {"original": "speech_original", "WaveGrad": "speech_vocoded", "Griffin-Lim": "speech_griffinlim"}
    written = [save_media(Audio(np.ascontiguousarray(w[:, None]), config.sample_rate), out / names[name])
               for name, w in waves.items()]
    distances = {name: mel_l1(torch.from_numpy(w), original, config) for name, w in waves.items() if name != "original"}
    titles = {"original": f"original (held out): {text!r}",
              "WaveGrad": f"WaveGrad, {model.sampling.steps} steps ({model.sampling.sampler}): log-mel L1 "
                          f"{distances['WaveGrad']:.3f}",
              "Griffin-Lim": f"Griffin-Lim, {GRIFFIN_LIM_ITERATIONS} iterations: log-mel L1 "
                             f"{distances['Griffin-Lim']:.3f}"}
    picture = spectrogram_picture({titles[name]: w for name, w in waves.items()}, config)
    written.append(save_media(Image(picture), out / "speech_spectrograms"))
    print(f"demo: held-out sentence {text!r} ({len(original) / config.sample_rate:.1f} s, vocoded in "
          f"{vocoded_in:.1f} s): log-mel L1 to the original: WaveGrad {model.sampling.steps} steps "
          f"{distances['WaveGrad']:.3f}, Griffin-Lim {GRIFFIN_LIM_ITERATIONS} iterations "
          f"{distances['Griffin-Lim']:.3f}")
    print(f"demo: audio part done in {time.perf_counter() - start:.0f} s")
    return written
