"""The audio part of ``polydiff demo``: its quick version trains the tiny WaveGrad on a spoken corpus that does not
hold the vocoded sentence and writes the three waveforms and their spectrograms; Griffin-Lim from a log-mel comes
back aligned with the waveform the mel was taken from."""

from __future__ import annotations

import dataclasses

import numpy as np
import soundfile
import torch
from PIL import Image

from polydiff.cli import main
from polydiff.modalities.audio import speech
from polydiff.modalities.audio.demo import griffin_lim, mel_l1
from polydiff.modalities.audio.mel import MelConfig, mel_spectrogram

WAVS = ("speech_original", "speech_vocoded", "speech_griffinlim")


def test_the_quick_audio_demo_vocodes_a_held_out_sentence_next_to_griffin_lim(capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--only", "audio", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "demo: audio wrote" in out and "log-mel L1 to the original: WaveGrad 6 steps" in out
    infos = [soundfile.info(str(tmp_path / f"{stem}.wav")) for stem in WAVS]
    assert {i.samplerate for i in infos} == {16000} and len({i.frames for i in infos}) == 1
    assert infos[0].frames % 200 == 0 and infos[0].frames > 0
    original, vocoded = (soundfile.read(str(tmp_path / f"{stem}.wav"))[0] for stem in WAVS[:2])
    assert np.abs(original).max() > 0.1 and np.isfinite(vocoded).all()
    picture = np.asarray(Image.open(tmp_path / "speech_spectrograms.png"))
    assert picture.ndim == 3 and picture.shape[0] > picture.shape[1] / 2 and picture.std() > 10
    corpus = tmp_path / "speech_16k"
    trained = [line.split("|")[1] for line in (corpus / "metadata.csv").read_text().splitlines()]
    (held_out,) = (corpus / "held_out" / "metadata.csv").read_text().splitlines()
    key, text, _ = held_out.split("|")
    assert text not in trained and len(trained) == 4 and not (corpus / "wavs" / f"{key}.wav").exists()
    assert (corpus / "held_out" / f"{key}.wav").is_file()


def test_griffin_lim_inverts_a_log_mel_in_place(tmp_path):
    config = MelConfig(sample_rate=16000, n_fft=1024, hop_length=200, win_length=800, n_mels=80, f_max=8000.0)
    wave, _ = speech.speak(speech.SENTENCES[0], 16000, np.random.default_rng(0), source="synthetic")
    wave = torch.from_numpy(wave[: len(wave) // 200 * 200])
    mel = mel_spectrogram(wave, config)
    again = griffin_lim(mel, config)
    assert again.shape == wave.shape and torch.isfinite(again).all()
    aligned = mel_l1(again, wave, config)
    shifted = mel_l1(torch.nn.functional.pad(again[100:], (0, 100)), wave, config)  # half a hop early
    assert aligned < 0.6 and aligned < shifted
    assert mel_l1(torch.zeros_like(wave) + 1e-4 * torch.randn_like(wave), wave, config) > 2 * aligned
    htk = dataclasses.replace(config, mel_scale="htk", norm="none", log="10")  # the other conventions invert too
    assert mel_l1(griffin_lim(mel_spectrogram(wave, htk), htk), wave, htk) < 0.6
