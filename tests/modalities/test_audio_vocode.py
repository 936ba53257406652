"""The WaveGrad recipes and ``polydiff vocode``: each recipe trains a step and vocodes; input mels are read in
either orientation from .npy / .pt files and checked against the mel config stored with the model (one line
naming the file and what was expected); chunked vocoding equals whole-input vocoding away from the seams while the
network never sees more than a chunk."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from polydiff.cli import main
from polydiff.commands.train import RECIPES_DIR
from polydiff.errors import UserError
from polydiff.modalities.audio import speech
from polydiff.modalities.audio.chunks import PositionNoise, plan_chunks
from polydiff.modalities.audio.mel import mel_spectrogram
from polydiff.modalities.audio.mel_input import read_mel, read_wav
from polydiff.modalities.audio.vocode import vocode_mels
from polydiff.pipeline import DiffusionModel
from polydiff.recipes.files import load_recipe
from polydiff.train.trainer import train

RECIPES = ["audio/wavegrad_tiny", "audio/wavegrad_24k", "audio/wavegrad_ljspeech"]
SHORT = {"audio/wavegrad_tiny": 1200, "audio/wavegrad_24k": 2400, "audio/wavegrad_ljspeech": 1024}  # >= n_fft


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return speech.make_speech_corpus(tmp_path_factory.mktemp("corpus"), 3, 16000, seed=0, source="synthetic")


@pytest.fixture(scope="module")
def mel(tiny, corpus) -> torch.Tensor:
    return read_wav(corpus / "wavs" / "SP0001.wav", tiny.config.data.options.mel_config).mel[:, :90]  # (80, 90)


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_trains_a_step_stores_its_mel_config_and_vocodes(name, corpus, tmp_path):
    torch.manual_seed(0)
    root = corpus if "ljspeech" in name or "tiny" in name else corpus / "wavs"
    sets = ["train.steps=1", "train.checkpoint_every=1", "train.sample_every=0", "train.val_every=0",
            "data.batch_size=2", "data.num_workers=0", "data.val_fraction=0.0", f"data.options.segment={SHORT[name]}",
            f'data.options.root="{root.as_posix()}"', f'train.out_dir="{tmp_path.as_posix()}"']
    cfg = load_recipe(RECIPES_DIR / f"{name}.toml", sets)
    result = train(cfg, progress=False)
    assert result.steps == 1 and result.nonfinite_skipped == 0
    model = DiffusionModel.from_pretrained(result.model_dir)
    config = model.config.data.options.mel_config  # the model folder keeps the recipe, mel config included
    assert config == cfg.data.options.mel_config and model.sampling.steps == 6
    # the paper's training betas reached the schedule (sigma_max 12.2), its 6 sampling betas the sampling defaults
    assert model.schedule.sigma_max == pytest.approx(12.2473, abs=1e-4) and len(model.sampling.betas) == 6
    given = read_wav(corpus / "wavs" / "SP0002.wav", config).mel[:, :12]
    (wave,) = vocode_mels(model, [given])
    assert wave.shape == (12 * config.hop_length,) and torch.isfinite(wave).all() and wave.abs().max() <= 1


def test_an_untrained_wavegrad_samples_bounded_where_unclipped_sampling_diverges(tiny, mel):
    """The NaNs seen from an early WaveGrad: its eps_hat is off by a few units, the Euler step multiplies the error
    by sigma, and the FiLM products make the network's output grow like a high power of its input's scale."""
    from polydiff.core.samplers import SAMPLERS

    cond = {"mel": mel[None, :, :20]}
    sigmas = torch.tensor([157.0, 50.0, 12.0, 2.0, 0.3, 0.0])
    x = sigmas[0] * torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = SAMPLERS["euler"](tiny.denoiser, x, sigmas, cond=cond)
    assert not torch.isfinite(plain).all() or plain.abs().max() > 1e6
    (wave,) = vocode_mels(tiny, [mel[:, :20]], sampler="euler", steps=5)
    assert torch.isfinite(wave).all() and wave.abs().max() <= 1


@pytest.mark.parametrize("sampler", ["euler", "ddpm"])  # deterministic, and stochastic: noise drawn at each step
def test_chunked_vocoding_equals_whole_input_away_from_the_seams_and_keeps_memory_bounded(tiny, mel, monkeypatch,
                                                                                          sampler):
    hop, chunk, overlap = 200, 30, 12  # a network call reaches ~4 frames each way: 2 calls ~ 8 < 12
    from polydiff.modalities.audio.wavegrad_fast import FastWaveGrad

    seen, decode = [], FastWaveGrad.decode  # vocode_mels runs a WaveGrad as FastWaveGrad (the same function)

    def watched(self, x_in, c_noise, features):
        seen.append(x_in.shape[-1])
        return decode(self, x_in, c_noise, features)

    monkeypatch.setattr(FastWaveGrad, "decode", watched)
    sigmas = torch.tensor([0.1, 0.02, 0.0])  # low noise: an untrained model's x0_hat is not all clipped there
    # ddpm draws its step 0.1 -> 0.02 (std ~0.02); fp32: bf16 rounding depends on the batch's shape and threads
    options = dict(sampler=sampler, sigmas=sigmas, seed=3, precision="fp32")
    whole = vocode_mels(tiny, [mel], chunk=1000, **options)[0]
    seen.clear()
    chunked = vocode_mels(tiny, [mel], chunk=chunk, overlap=overlap, batch=2, **options)[0]
    assert max(seen) == chunk * hop < mel.shape[1] * hop  # the network never saw more than a chunk
    plan = plan_chunks([mel.shape[1]], chunk, overlap)
    seams = torch.zeros(mel.shape[1], dtype=torch.bool)
    for a, b in zip(plan, plan[1:]):
        seams[b.start: a.stop] = True  # overlapping frames, crossfaded
    away = (~seams).repeat_interleave(hop)
    assert away.sum() > len(away) // 3 and (whole[away].abs() < 0.99).float().mean() > 0.5  # not just clipped
    torch.testing.assert_close(chunked[away], whole[away], atol=1e-5, rtol=0)
    hard = vocode_mels(tiny, [mel], chunk=chunk - overlap, overlap=0, **options)[0]  # abutting chunks, no context
    assert (hard - whole).abs().max() > 1e-3  # near their edges the chunks see other context: the test can fail
    pair = vocode_mels(tiny, [mel[:, :40], mel], chunk=chunk, overlap=overlap, **{**options, "seed": 2})
    torch.testing.assert_close(pair[1], chunked, atol=1e-5, rtol=0)  # input i uses seed + i, whatever the batch
    if sampler == "ddpm":  # the step's noise matters: another seed's differs away from the seams too
        other = vocode_mels(tiny, [mel], chunk=chunk, overlap=overlap, batch=2, **{**options, "seed": 4})[0]
        assert (other[away] - chunked[away]).abs().max() > 1e-3


def test_position_noise_is_a_function_of_utterance_draw_and_sample_index():
    """A batch of chunks draws, at every call, the slices of its utterances' noise of that draw: the same numbers
    whatever the chunking, and new numbers at each draw (a noise function for core.utils.randn_like)."""
    from polydiff.core.utils import randn_like

    whole, parts = PositionNoise([5], [(0, 9000)]), PositionNoise([5, 5], [(1000, 5096), (4000, 8096)])
    like_whole, like_parts = torch.empty(1, 1, 9000), torch.empty(2, 1, 4096)
    draws_whole = [whole.draw(0)] + [randn_like(like_whole, whole) for _ in range(3)]
    draws_parts = [parts.draw(0)] + [randn_like(like_parts, parts) for _ in range(3)]
    for w, p in zip(draws_whole, draws_parts):
        assert torch.equal(p[0, 0], w[0, 0, 1000:5096]) and torch.equal(p[1, 0], w[0, 0, 4000:8096])
    assert not torch.allclose(draws_whole[1], draws_whole[2]) and not torch.allclose(draws_whole[0], draws_whole[1])
    assert not torch.allclose(PositionNoise([6], [(0, 9000)]).draw(1), draws_whole[1])  # another utterance
    with pytest.raises(ValueError, match="shape"):
        randn_like(torch.empty(1, 1, 100), whole)


@pytest.mark.parametrize("shape, note", [((80, 37), "bins x frames"), ((37, 80), "frames x bins"),
                                         ((1, 37, 80), "frames x bins"), ((80, 80), "square")])
def test_orientation_is_detected_and_said(tiny, mel, tmp_path, shape, note):
    config = tiny.config.data.options.mel_config
    m = mel[:, : shape[-1] if shape[-2] == 80 else shape[-2]]  # (80, frames)
    array = (m if shape[-2] == 80 else m.T).reshape(shape).numpy()
    np.save(tmp_path / "m.npy", array)
    given = read_mel(tmp_path / "m.npy", config)
    assert given.mel.shape == (80, m.shape[1]) and note in given.note and "m.npy" in given.note
    torch.testing.assert_close(given.mel, m)


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_bad_arrays_are_one_line_naming_the_file(tiny, mel, tmp_path):
    config = tiny.config.data.options.mel_config
    cases = {"dims.npy": np.zeros((2, 80, 10), np.float32), "bins.npy": np.zeros((64, 10), np.float32) - 5,
             "objects.npy": None, "nan.npy": mel.numpy().copy(), "line.npy": np.zeros(80, np.float32)}
    cases["nan.npy"][3, 4] = np.nan
    expected = {"dims.npy": "2-D mel", "bins.npy": "80 mel bins", "objects.npy": "cannot read",
                "nan.npy": "NaN", "line.npy": "2-D mel"}
    for file, array in cases.items():
        if array is None:
            np.save(tmp_path / file, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        else:
            np.save(tmp_path / file, array)
        with pytest.raises(UserError) as error:
            read_mel(tmp_path / file, config)
        assert file in one_line(error) and expected[file] in one_line(error)
    (tmp_path / "m.txt").write_text("1 2 3")
    with pytest.raises(UserError, match=r"m\.txt: expected a \.npy or \.pt"):
        read_mel(tmp_path / "m.txt", config)


def test_pt_files_load_tensors_only_and_declare_their_settings(tiny, mel, tmp_path):
    config = tiny.config.data.options.mel_config
    torch.save(mel.T.clone(), tmp_path / "plain.pt")
    torch.testing.assert_close(read_mel(tmp_path / "plain.pt", config).mel, mel)
    torch.save({"mel": mel.clone(), "sample_rate": 16000, "hop_length": 200}, tmp_path / "dict.pt")
    torch.testing.assert_close(read_mel(tmp_path / "dict.pt", config).mel, mel)
    sentinel = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (sentinel,))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"mel": Payload()}, protocol=2))
    with pytest.raises(UserError) as error:
        read_mel(tmp_path / "evil.pt", config)
    assert "evil.pt: cannot read" in one_line(error) and not sentinel.exists()  # weights_only: nothing unpickled


@pytest.mark.parametrize("declared, given, expected", [
    ({"hop_length": 256}, "hop_length 256", "hop_length 200"),
    ({"sample_rate": 22050}, "sample_rate 22050", "sample_rate 16000"),
    ({"n_mels": 128}, "n_mels 128", "n_mels 80"),
    ({"sample_rate": 24000, "hop_length": 300}, "sample_rate 24000, hop_length 300",
     "sample_rate 16000, hop_length 200"),
])
def test_declared_settings_that_differ_are_one_line_with_both(tiny, mel, tmp_path, declared, given, expected):
    config = tiny.config.data.options.mel_config
    torch.save({"mel": mel.clone(), **declared}, tmp_path / "tts.pt")
    with pytest.raises(UserError) as error:
        read_mel(tmp_path / "tts.pt", config)
    assert f"made with {given}" in one_line(error) and f"expects {expected}" in one_line(error)
    np.save(tmp_path / "tts.npy", mel.numpy())  # the same settings passed on the command line
    with pytest.raises(UserError, match=f"made with {given}"):
        read_mel(tmp_path / "tts.npy", config, declared=declared)


def test_a_log10_mel_is_refused_unless_said_and_then_converted(tiny, corpus, tmp_path):
    import dataclasses

    config = tiny.config.data.options.mel_config
    wave = torch.from_numpy(soundfile.read(str(corpus / "wavs" / "SP0001.wav"), dtype="float32")[0])
    wave[4000:8000] = 0  # silence: the mel reaches its floor, log10(1e-5) = -5
    natural = mel_spectrogram(wave, config)
    np.save(tmp_path / "log10.npy", mel_spectrogram(wave, dataclasses.replace(config, log="10")).numpy())
    with pytest.raises(UserError) as error:
        read_mel(tmp_path / "log10.npy", config)
    assert "log10.npy" in one_line(error) and "looks like log10" in one_line(error) and "--mel-log" in one_line(error)
    converted = read_mel(tmp_path / "log10.npy", config, log="10")
    torch.testing.assert_close(converted.mel, natural, atol=1e-4, rtol=1e-5)
    assert "converted" in converted.note
    np.save(tmp_path / "ln.npy", natural.numpy())
    with pytest.raises(UserError, match="ln.npy: mel values go down to"):  # natural-log values said to be log10
        read_mel(tmp_path / "ln.npy", config, log="10")


def test_the_vocode_command_writes_wavs_and_refuses_a_bad_file_in_one_line(tiny, corpus, mel, tmp_path, capsys):
    model_dir = str(tiny.source)
    np.save(tmp_path / "a.npy", mel[:, :20].numpy())
    torch.save(mel[:, :30].T.clone(), tmp_path / "b.pt")
    code = main(["vocode", model_dir, "--mel", str(tmp_path / "a.npy"), str(tmp_path / "b.pt"), "--steps", "2",
                 "--out", str(tmp_path / "out"), "--device", "cpu"])
    said = capsys.readouterr().out
    assert code == 0 and "bins x frames" in said and "frames x bins" in said
    for stem, frames in (("a", 20), ("b", 30)):
        info = soundfile.info(str(tmp_path / "out" / f"{stem}.wav"))
        assert info.samplerate == 16000 and info.frames == frames * 200 and info.subtype == "PCM_16"
    assert main(["vocode", model_dir, "--wav", str(corpus / "wavs" / "SP0003.wav"), "--betas", "1e-4", "0.01", "0.2",
                 "--out", str(tmp_path / "one.wav"), "--device", "cpu"]) == 0
    assert soundfile.info(str(tmp_path / "one.wav")).samplerate == 16000
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["vocode", model_dir, "--wav", "x.wav", "--betas", "0.1", "1.5", "--out", str(tmp_path / "two.wav")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "--betas" in err and "(0, 1)" in err
    np.save(tmp_path / "bad.npy", np.zeros((7, 9), np.float32))
    code = main(["vocode", model_dir, "--mel", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "x.wav")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bad.npy" in err and "80 mel bins" in err
    code = main(["vocode", model_dir, "--mel", str(tmp_path / "a.npy"), str(tmp_path / "b.pt"), "--out", "x.wav"])
    assert code == 2 and "need a folder" in capsys.readouterr().err
