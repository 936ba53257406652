"""Audio data: speech corpora made on the machine (espeak-ng or the synthetic stand-in) in LJSpeech's layout, the
``ljspeech`` and ``audio_folder`` loaders (mono, resampled, bad files skipped and counted), fixed-size examples with
their mels, ``random_segment``, and the audio writer."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from torchaudio.functional import resample

from polydiff.data.examples import SKIPPED, collate
from polydiff.data.transforms import example_generators
from polydiff.errors import UserError
from polydiff.media import Audio, save_media
from polydiff.modalities.audio import speech
from polydiff.modalities.audio.folder import AudioFolderOptions, LJSpeechOptions, audio_folder, ljspeech
from polydiff.modalities.audio.mel import MEL_PRESETS, MelConfig, mel_spectrogram
from polydiff.modalities.audio.segments import WINDOW_KEYS, RandomSegment, extend
from polydiff.modalities.audio.writer import export_audio, write_audio
from polydiff.recipes.config import ConfigError, config_from_dict
from polydiff.registry import WriteContext

RATE = 24000  # wavegrad_24k, the default preset: hop 300, n_fft 2048, 128 mels


def tone(seconds: float, rate: int = RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal (a few harmonics at a wandering pitch), (T, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    phase = np.cumsum(140 + 20 * np.sin(2 * np.pi * 1.3 * t + seed)) / rate
    wave = sum(0.3 / k * np.sin(2 * np.pi * k * phase) for k in range(1, 6))
    return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def write(path: Path, wave: np.ndarray, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, rate, subtype="PCM_16" if path.suffix == ".wav" else None)
    return path


def espeak_available() -> bool:
    try:
        speech._espeak_library()
        return True
    except (ImportError, OSError, RuntimeError):
        return False


@pytest.mark.parametrize("source", ["synthetic", "espeak_library"])
def test_a_made_corpus_has_ljspeech_layout_and_loads(tmp_path, source):
    if source == "espeak_library" and not espeak_available():
        pytest.skip("espeakng-loader is not installed")
    root = speech.make_speech_corpus(tmp_path / "corpus", n_sentences=3, sample_rate=16000, seed=1, source=source)
    lines = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and (root / "SOURCE").read_text().strip() == source
    for line in lines:
        key, text, normalized = line.split("|")
        assert text in speech.SENTENCES and normalized == text
        info = soundfile.info(str(root / "wavs" / f"{key}.wav"))
        assert info.samplerate == 16000 and info.subtype == "PCM_16" and info.frames > 16000  # over a second
    data = ljspeech(LJSpeechOptions(root=str(root), mel_preset="hifigan_22k", segment=8192), 0)
    assert len(data) >= 3 and sorted(set(data.texts.values())) == sorted(line.split("|")[2] for line in lines)
    item = data[0]
    assert item["x"].shape == (1, 8192) and item["cond"]["mel"].shape == (80, 32) and SKIPPED not in item


def test_speak_writes_a_corpus_into_a_root_without_one_once_and_says_so(tmp_path, capsys):
    root = tmp_path / "fresh" / "speech"
    options = LJSpeechOptions(root=str(root), speak=2, mel_preset="hifigan_22k", segment=8192)
    data = ljspeech(options, 0)
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and f"{root} has no metadata.csv: speaking 2 sentences" in said and "22050 Hz" in said
    lines = (root / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and len(data) >= 2 and soundfile.info(str(root / "wavs" / "SP0001.wav")).samplerate == 22050
    reference = speech.make_speech_corpus(tmp_path / "reference", 2, 22050, seed=0)  # the deterministic seed 0
    assert lines == (reference / "metadata.csv").read_text(encoding="utf-8").splitlines()
    stamp = (root / "metadata.csv").stat().st_mtime_ns
    ljspeech(options, 1)  # a corpus is there now: nothing is spoken again
    assert capsys.readouterr().err == "" and (root / "metadata.csv").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="does not exist"):  # without speak, a missing corpus stays an error
        ljspeech(LJSpeechOptions(root=str(tmp_path / "none"), mel_preset="hifigan_22k", segment=8192), 0)
    with pytest.raises(ConfigError, match="'speak' must be >= 0"):
        LJSpeechOptions(speak=-1)


def test_speech_falls_back_to_the_program_then_to_the_synthetic_voice(tmp_path, monkeypatch):
    def no_library():
        raise OSError("no libespeak-ng here")

    monkeypatch.setattr(speech, "_espeak_library", no_library)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    wave, used = speech.speak("A short test.", 8000, np.random.default_rng(0))
    assert used == "synthetic" and wave.dtype == np.float32 and abs(np.abs(wave).max() - 0.9) < 1e-6
    program = tmp_path / "bin" / "espeak-ng"  # a stand-in that writes 0.5 s at 22,050 Hz where -w says
    program.parent.mkdir()
    program.write_text(f"#!{sys.executable}\nimport sys, numpy, soundfile\npath = sys.argv[sys.argv.index('-w') + 1]\n"
                       "soundfile.write(path, 0.5 * numpy.sin(numpy.arange(11025) / 4.0), 22050)\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{tmp_path / 'empty'}")
    wave, used = speech.speak("A short test.", 16000, np.random.default_rng(0))
    assert used == "espeak_program" and wave.shape == (8000,)


def test_audio_folder_reads_recursively_mixes_to_mono_and_resamples_once_said(tmp_path, capsys):
    stereo = tone(1.0, 44100, channels=2)
    write(tmp_path / "d" / "a" / "stereo.flac", stereo, 44100)
    write(tmp_path / "d" / "b" / "c" / "mono.wav", tone(0.6, 16000)[:, :1], 16000)
    write(tmp_path / "d" / "native.wav", tone(0.5))
    (tmp_path / "d" / "notes.txt").write_text("not audio")
    data = audio_folder(AudioFolderOptions(root=str(tmp_path / "d"), segment=6000), 0)
    said = capsys.readouterr().err
    assert said.count("resampled") == 1 and "2 of 3" in said and "44100 Hz" in said and "16000 Hz" in said
    assert [p.name for p in dict.fromkeys(data.files)] == ["stereo.flac", "mono.wav", "native.wav"]
    assert len(data) == 4 + 3 + 2  # 24,000, 14,400 and 12,000 samples at 24 kHz in windows of 6,000
    expected = resample(torch.from_numpy(stereo.mean(1)), 44100, RATE)  # mono, then resampled
    item = data[1]  # the stereo file's second window, 6,000 samples on
    torch.testing.assert_close(item["x"][0], expected[6000:12000], atol=1e-4, rtol=0)  # 16-bit files


def test_class_folders_label_every_window(tmp_path):
    for speaker, seconds in (("ann", 0.5), ("bob", 0.6)):
        write(tmp_path / "d" / speaker / "1.wav", tone(seconds))
    data = audio_folder(AudioFolderOptions(root=str(tmp_path / "d"), class_folders=True, segment=3000), 0)
    labels = [int(data[i]["cond"]["class_labels"]) for i in range(len(data))]
    assert data.num_classes == 2 and labels == [0] * 4 + [1] * 5  # 12,000 and 14,400 samples, windows of 3,000


@pytest.mark.parametrize("damage", ["corrupt", "empty file", "no samples", "silent", "shorter than n_fft", "missing"])
def test_a_bad_clip_is_skipped_and_counted(tmp_path, damage):
    root = speech.make_speech_corpus(tmp_path / "c", 3, RATE, seed=0, source="synthetic")
    bad = root / "wavs" / "SP0002.wav"
    if damage == "corrupt":
        bad.write_bytes(bad.read_bytes()[:20] + b"\x07" * 200)
    elif damage == "empty file":
        bad.write_bytes(b"")
    elif damage == "no samples":
        write(bad, np.zeros((0, 1), np.float32))
    elif damage == "silent":
        write(bad, np.full((RATE, 1), 1e-4, np.float32))
    elif damage == "shorter than n_fft":
        write(bad, tone(0.05))
    else:
        bad.unlink()
    data = ljspeech(LJSpeechOptions(root=str(root), window=RATE * 20), 0)  # one window per clip
    assert [p.name for p in data.files] == ["SP0001.wav", "SP0002.wav", "SP0003.wav"]
    item = data[1]
    reason = {"no samples": "holds no samples", "silent": "silent: peak", "shorter than n_fft": "shorter than one FFT"}
    assert len(item[SKIPPED]) == 1 and "SP0002.wav" in item[SKIPPED][0]
    assert reason.get(damage, "LibsndfileError") in item[SKIPPED][0]
    torch.testing.assert_close(item["x"], data[2]["x"])  # replaced by the next readable clip
    assert collate([data[0], item])[SKIPPED] == item[SKIPPED]  # what the trainer counts


def test_no_readable_clip_is_one_user_error_naming_the_folder(tmp_path):
    folder = tmp_path / "quiet"
    for i in range(2):
        write(folder / f"{i}.wav", np.zeros((RATE, 1), np.float32))
    with pytest.raises(UserError, match="quiet") as error:
        audio_folder(AudioFolderOptions(root=str(folder)), 0)
    assert "\n" not in str(error.value) and "silent" in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        audio_folder(AudioFolderOptions(root=str(tmp_path / "empty")), 0)
    with pytest.raises(UserError, match="metadata.csv"):
        ljspeech(LJSpeechOptions(root=str(folder)), 0)
    (folder / "metadata.csv").write_text("no separator here\n")
    with pytest.raises(UserError, match=r"metadata.csv:1: expected 'id\|text\|normalized text'"):
        ljspeech(LJSpeechOptions(root=str(folder)), 0)


def test_reflection_extends_a_short_clip_without_silence():
    wave = torch.arange(1.0, 6.0)  # 1..5
    assert extend(wave, 12).tolist() == [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3, 4]
    torch.testing.assert_close(extend(wave, 8), torch.nn.functional.pad(wave[None], (0, 3), mode="reflect")[0])


@pytest.mark.parametrize("window", [0, 6 * RATE])
def test_examples_collate_with_the_mel_of_their_segment(tmp_path, window):
    for i, seconds in enumerate((0.2, 0.9, 2.5)):  # shorter and longer than a segment (0.3 s)
        write(tmp_path / "d" / f"{i}.wav", tone(seconds, seed=i))
    data = audio_folder(AudioFolderOptions(root=str(tmp_path / "d"), window=window), 0)
    batch = collate([data[i] for i in range(len(data))])
    config = MEL_PRESETS["wavegrad_24k"]
    assert batch["x"].shape == (len(data), 1, 7200) and batch["cond"]["mel"].shape == (len(data), 128, 24)
    assert data.example_shape == (1, 7200)
    own = mel_spectrogram(batch["x"], config)
    if window:  # cut from the window's mel: the frames whose FFT reaches past the segment see real neighbours
        assert set(WINDOW_KEYS) <= set(batch["cond"]) and batch["cond"]["window"].shape == (len(data), 1, window)
        torch.testing.assert_close(batch["cond"]["mel"][..., 3:-3], own[..., 3:-3], atol=1e-4, rtol=1e-4)
    else:
        assert not set(WINDOW_KEYS) & set(batch["cond"])
        torch.testing.assert_close(batch["cond"]["mel"], own, atol=1e-4, rtol=1e-4)
    short = data[0]["x"][0]  # 4,800 samples, extended by reflection: no run of digital silence
    torch.testing.assert_close(short[4800:4810], short[4789:4799].flip(0))
    assert (short[4800:].abs() > 0).float().mean() > 0.9


def test_random_segment_draws_a_frame_of_the_real_part_per_example(tmp_path):
    for i, seconds in enumerate((0.25, 1.0, 3.0)):
        write(tmp_path / "d" / f"{i}.wav", tone(seconds, seed=i))
    data = audio_folder(AudioFolderOptions(root=str(tmp_path / "d"), window=4 * RATE), 0)
    batch = collate([data[i] for i in range(3)])
    transform = RandomSegment()
    assert transform.check((1, 7200)) is None and "mono" in transform.check((2, 7200))
    draws = [transform(batch, example_generators((0, step, 0), range(3))) for step in range(12)]
    for out in draws:
        assert out["x"].shape == (3, 1, 7200) and set(out["cond"]) == {"mel"}
        for b in range(3):
            window, valid = batch["cond"]["window"][b, 0], int(batch["cond"]["window_length"][b])
            start = next(s for s in range(0, window.numel() - 7199, 300) if torch.equal(window[s:s + 7200],
                                                                                      out["x"][b, 0]))
            assert start == 0 if valid < 7200 else start + 7200 <= valid
            torch.testing.assert_close(out["cond"]["mel"][b], batch["cond"]["window_mel"][b, :, start // 300:][:, :24])
    starts = {tuple(out["x"][2, 0, :5].tolist()) for out in draws}
    assert len(starts) > 6  # the 3 s clip's segment moves from step to step
    part = transform(collate([data[i] for i in (1, 2)]), example_generators((0, 5, 0), range(1, 3)))
    torch.testing.assert_close(part["x"], draws[5]["x"][1:], rtol=0, atol=0)  # a function of the example's generator
    fixed = {"x": batch["x"], "cond": {"mel": batch["cond"]["mel"]}}
    assert transform(fixed, example_generators((0,), range(3))) is fixed  # nothing to draw from


def test_segments_and_windows_are_validated():
    with pytest.raises(ConfigError, match=r"'segment' must be a multiple of the hop_length 256 .* \(e.g. 7168 or 7424"):
        config_from_dict(LJSpeechOptions, {"mel_preset": "hifigan_22k", "segment": 7200})
    with pytest.raises(ConfigError, match="n_fft 2048"):
        LJSpeechOptions(segment=1200)
    with pytest.raises(ConfigError, match="window"):
        LJSpeechOptions(segment=7200, window=3600)
    with pytest.raises(ConfigError, match="window"):
        LJSpeechOptions(segment=7200, window=24100)
    custom = config_from_dict(LJSpeechOptions, {"segment": 4000, "mel": {"sample_rate": 16000, "hop_length": 200,
                                                                         "n_fft": 800, "win_length": 800}})
    assert custom.mel_config == MelConfig(sample_rate=16000, hop_length=200, n_fft=800, win_length=800)
    assert custom.sample_rate == 16000
    with pytest.raises(ConfigError, match="mel.f_max"):
        config_from_dict(LJSpeechOptions, {"mel": {"sample_rate": 8000}})


def test_the_writer_writes_wavs_at_the_data_rate(tmp_path):
    options = LJSpeechOptions(mel_preset="hifigan_22k", segment=8192)
    context = WriteContext((-1.0, 1.0), SimpleNamespace(data=SimpleNamespace(name="ljspeech", options=options)))
    wave = torch.from_numpy(tone(0.4, 22050)[:, 0])
    samples = wave.reshape(1, 1, -1) * torch.tensor([1, 2, 4.0])[:, None, None]  # (3, 1, T), the last two clipped
    media = write_audio(samples, context)
    assert isinstance(media, Audio) and media.rate == 22050 and media.samples.shape[1] == 1
    assert np.abs(media.samples).max() <= 1  # clipped to the data range
    assert soundfile.info(str(save_media(media, tmp_path / "clip"))).samplerate == 22050
    paired = write_audio(samples, WriteContext((-1.0, 1.0), context.config, reference=samples))
    assert len(paired.samples) > len(media.samples) + 3 * samples.shape[-1] - 1
    written = export_audio(samples, context, tmp_path / "out")
    wavs = sorted((tmp_path / "out" / "wavs").glob("*.wav"))
    assert [p.name for p in wavs] == ["000000.wav", "000001.wav", "000002.wav"] and written[0] == wavs[0].parent
    wave, rate = soundfile.read(str(wavs[0]), dtype="float32")
    assert rate == 22050 and soundfile.info(str(wavs[0])).subtype == "PCM_16"
    np.testing.assert_allclose(wave, samples[0, 0].numpy(), atol=1 / 16384)
    assert written[1].suffix == ".png" and written[1].stat().st_size > 0
    assert write_audio(samples[:1], WriteContext((-1.0, 1.0))).rate == 22050  # no data options: LJSpeech's rate


def test_a_vocoder_trains_on_a_made_corpus_with_random_segments(tmp_path):
    """The data set, random_segment and the writer in the engine: preflight, steps, validation, sample media."""
    from polydiff.recipes.schema import RecipeConfig
    from polydiff.train.trainer import train

    root = speech.make_speech_corpus(tmp_path / "corpus", 4, RATE, seed=0, source="synthetic")
    cfg = config_from_dict(RecipeConfig, {
        "name": "vocoder", "modality": "audio",
        "data": {"name": "ljspeech", "batch_size": 2, "val_fraction": 0.25, "transforms": [{"name": "random_segment"}],
                 "options": {"root": str(root), "window": 2 * RATE}},
        "model": {"name": "wavegrad", "options": {"preset": "tiny"}},
        "diffusion": {"schedule": "linear", "num_steps": 50, "parameterization": "eps", "c_noise": "sqrt_alpha_bar"},
        "objective": {"noise_levels": {"name": "wavegrad"}, "weighting": {"name": "simple"}},
        "train": {"steps": 2, "sample_every": 2, "val_every": 2, "checkpoint_every": 2, "out_dir": str(tmp_path)},
        "sample": {"sampler": "euler", "steps": 2, "num": 1},
    })
    result = train(cfg, progress=False)
    assert result.steps == 2 and result.skipped_examples == 0 and np.isfinite(result.last_loss)
    (wav,) = (tmp_path / "vocoder" / "samples").glob("*.wav")
    assert soundfile.info(str(wav)).samplerate == RATE
