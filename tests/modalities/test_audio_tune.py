"""``polydiff tune-schedule``: the log-mel score orders hand-made cases; with a denoiser whose posterior is known a
schedule that never reaches the data's noise scale ranks below one that does; on a tiny WaveGrad trained one step
the command ranks candidates, stores the winner atomically with a record, and ``polydiff vocode`` then uses it;
mistakes are one line naming the path."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from polydiff.cli import main
from polydiff.commands.train import RECIPES_DIR
from polydiff.core.grids import betas_to_sigmas
from polydiff.errors import UserError
from polydiff.modalities.audio import speech
from polydiff.modalities.audio.mel import mel_spectrogram
from polydiff.modalities.audio.tune import (MANTISSAS, RECORD_FILE, Candidate, Clip, beta_candidate, coordinate_search,
                                            grid_candidates, log_mel_distance, read_clips, score_candidate,
                                            store_winner, tune)
from polydiff.pipeline import DiffusionModel
from polydiff.recipes.files import load_recipe
from polydiff.train.trainer import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return speech.make_speech_corpus(tmp_path_factory.mktemp("corpus"), 3, 16000, seed=0, source="synthetic")


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    """The model folder of the tiny WaveGrad recipe trained one step (16 kHz, hop 200, 80 bins, WG-6 default)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("run")
    sets = ["train.steps=1", "train.checkpoint_every=1", "train.sample_every=0", "train.val_every=0",
            "data.batch_size=2", "data.num_workers=0", "data.val_fraction=0.0", "data.options.segment=1200",
            f'data.options.root="{corpus.as_posix()}"', f'train.out_dir="{out.as_posix()}"']
    return Path(train(load_recipe(RECIPES_DIR / "audio/wavegrad_tiny.toml", sets), progress=False).model_dir)


@pytest.fixture(scope="module")
def model(trained) -> DiffusionModel:
    return DiffusionModel.from_pretrained(trained)


def test_the_score_is_zero_for_the_clip_itself_and_grows_with_what_is_added(model, corpus):
    config = model.config.data.options.mel_config
    clips = read_clips(corpus, config, 2, 20, seed=1)
    assert [c.wave.numel() for c in clips] == [4000, 4000] and clips[0].source != clips[1].source
    noise = [torch.randn(c.wave.shape, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(clips)]
    scores = [log_mel_distance([c.wave + a * n for c, n in zip(clips, noise)], clips, config) for a in (0, 0.01, 0.1)]
    assert scores[0].tolist() == [0.0, 0.0]
    assert bool((scores[1] > 0.05).all()) and bool((scores[2] > scores[1] + 0.1).all())
    quiet = log_mel_distance([0.01 * c.wave for c in clips], clips, config)  # 40 dB down: ln(100) ~ 4.6 per bin
    assert bool((quiet > 2).all())


class Posterior(nn.Module):
    """The exact denoiser of Gaussian data with the power spectrum of the clip c whose mel is the condition (c with
    random phases, which its mel cannot tell apart): with independent DFT bins (orthonormal rfft) of variance
    P(f) = |C(f)|^2, D(x, sigma) = irfft(X(f) P(f) / (P(f) + sigma^2)). Started at sigmas[0] * n, a sampler draws
    from it only when sigmas[0] reaches the clip's scale; from a smaller one it keeps a quiet, white x."""

    def __init__(self, clips):
        super().__init__()
        self.pairs = [(c.mel, torch.fft.rfft(c.wave, norm="ortho").abs().square()) for c in clips]
        self.backbone = nn.Module()
        self.backbone.required_cond = ("mel",)
        self.anchor = nn.Parameter(torch.zeros(1))  # DiffusionModel.device reads a parameter's

    def forward(self, x, sigma, cond):
        power = torch.stack([next(p for m, p in self.pairs if torch.equal(m, row)) for row in cond["mel"]])[:, None]
        gain = power / (power + sigma[:, None, None] ** 2)  # (B, 1, T // 2 + 1), sigma (B,) -> (B, 1, 1)
        return torch.fft.irfft(torch.fft.rfft(x, norm="ortho") * gain, n=x.shape[-1], norm="ortho")


def tones(config, seed: int = 0) -> list[Clip]:
    """Two harmonic tones (f0 200 and 240 Hz, 10 harmonics, peak ~0.9) over a faint noise floor, 0.25 s each: near
    stationary, so a draw of ``Posterior`` (random phases) has nearly their mel."""
    t = torch.arange(20 * config.hop_length) / config.sample_rate
    g = torch.Generator().manual_seed(seed)
    clips = []
    for f0 in (200, 240):
        wave = sum(0.3 / k * torch.sin(2 * math.pi * f0 * k * t + k) for k in range(1, 11))
        wave = wave + 1e-3 * torch.randn(t.shape, generator=g)
        clips.append(Clip(f"tone {f0} Hz", wave, mel_spectrogram(wave, config)))
    return clips


@pytest.mark.parametrize("sampler", ["ddpm", "euler"])
def test_a_schedule_short_of_the_data_scale_ranks_below_one_that_reaches_it(model, sampler):
    clips = tones(model.config.data.options.mel_config)
    exact = dataclasses.replace(model, denoiser=Posterior(clips))
    tiny = Candidate("betas", "tiny", {}, betas_to_sigmas([1e-6] * 6))  # sigma_max 0.0024: far below the tones
    low, mid, high = (beta_candidate((m,) * 6, sampler) for m in (1, 3, 9))  # sigma_max 0.35, 0.69, 3.2
    wg6 = Candidate("betas", "WG-6", {}, betas_to_sigmas([7e-6, 1.4e-4, 2.1e-3, 2.8e-2, 3.5e-1, 7e-1]))  # 2.1
    scores = [score_candidate(exact, clips, c, sampler).score for c in (tiny, low, mid, high, wg6)]
    assert scores[0] > scores[1] > scores[2] > scores[3] and scores[0] > scores[3] + 1  # the scale reached decides
    assert scores[4] < scores[1]


def test_the_default_competes_only_at_its_own_number_of_steps(model):
    clips = tones(model.config.data.options.mel_config)[:1]
    ranked, left_out = tune(model, clips, 4, candidates=2)
    assert len(ranked) == 6 + 2 and {r.candidate.kind for r in ranked} == {"spacing", "betas"}
    assert "the current default (6 steps, not 4)" in left_out
    assert all(len(r.candidate.sigmas) == 5 and r.candidate.sampling["steps"] == 4 for r in ranked)
    ranked, left_out = tune(model, clips, 6, candidates=1)
    assert [r.candidate.kind for r in ranked].count("default") == 1 and not left_out


def test_the_coordinate_search_keeps_its_budget_and_finds_a_separable_optimum():
    target = (2, 9, 1, 5)
    calls = []

    def score(m):
        calls.append(m)
        return sum(abs(np.log(a) - np.log(b)) for a, b in zip(m, target))

    coordinate_search(score, 4, 100)
    assert len(calls) == len(set(calls)) and target in calls and len(calls) <= 100
    calls.clear()
    coordinate_search(score, 4, 9)
    assert len(calls) == 9 and calls[: len(MANTISSAS)] == [(m,) * 4 for m in MANTISSAS]
    calls.clear()
    coordinate_search(score, 4, 3)
    assert calls == [(1,) * 4, (3,) * 4, (9,) * 4]  # evenly spaced uniform schedules when the budget is small


def test_the_command_ranks_stores_the_winner_with_a_record_and_vocode_uses_it(trained, corpus, tmp_path, capsys):
    from safetensors.torch import load_file

    before = json.loads((trained / "config.json").read_text())["sampling"]
    weights = load_file(str(trained / "model.safetensors"))
    (trained / "README.md").write_text("mine\n")
    args = ["tune-schedule", str(trained), "--data", str(corpus), "--clips", "2", "--frames", "12", "--device", "cpu"]
    assert main([*args, "--candidates", "3", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "winner:" in said and "--dry-run" in said and not (trained / RECORD_FILE).exists()
    assert json.loads((trained / "config.json").read_text())["sampling"] == before

    assert main([*args, "--candidates", "4"]) == 0
    said = capsys.readouterr().out
    rows = [line.split() for line in said.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == list(range(1, 11))  # the top 10 of 1 default + 6 grids + 4 betas
    assert [float(r[1]) for r in rows] == sorted(float(r[1]) for r in rows)
    record = json.loads((trained / RECORD_FILE).read_text())
    assert len(record["scores"]) == 11 and {s["kind"] for s in record["scores"]} == {"default", "spacing", "betas"}
    assert [s["score"] for s in record["scores"]] == sorted(s["score"] for s in record["scores"])
    assert record["previous"]["betas"] == before["betas"] and record["winner"]["score"] == record["scores"][0]["score"]
    winner = record["winner"]["sampling"]
    tuned = DiffusionModel.from_pretrained(trained)
    assert tuned.sampling.sampler == winner["sampler"] and list(tuned.sampling.betas) == winner.get("betas", [])
    assert (trained / "README.md").read_text() == "mine\n"  # the user's files are carried over
    after = load_file(str(trained / "model.safetensors"))
    assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights)

    # vocode with no schedule options samples on the tuned default: as with the winner's options given explicitly,
    # not as with the previous default's (unless that won)
    def vocoded(*options) -> np.ndarray:
        out = tmp_path / f"v{len(list(tmp_path.glob('v*.wav')))}.wav"
        wav = tmp_path / "short.wav"  # 0.5 s of a clip
        if not wav.exists():
            soundfile.write(str(wav), soundfile.read(str(corpus / "wavs" / "SP0002.wav"))[0][4000:12000], 16000)
        assert main(["vocode", str(trained), "--wav", str(wav), "--out", str(out), "--device", "cpu", *options]) == 0
        return soundfile.read(str(out), dtype="float32")[0]

    def options(sampling: dict) -> list[str]:
        if sampling.get("betas"):
            return ["--sampler", sampling["sampler"], "--betas", *map(str, sampling["betas"])]
        return ["--sampler", sampling["sampler"], "--steps", str(sampling["steps"]), "--spacing", sampling["spacing"]]

    plain = vocoded()
    assert np.array_equal(plain, vocoded(*options(winner)))
    if record["scores"][0]["kind"] != "default":
        assert np.abs(plain - vocoded(*options(before))).max() > 1e-2
    capsys.readouterr()

    assert main([*args, "--candidates", "1", "--sampler", "euler"]) == 0  # a second tuning keeps the first's record
    again = json.loads((trained / RECORD_FILE).read_text())
    assert again["history"][0]["winner"] == record["winner"] and again["sampler"] == "euler"
    assert DiffusionModel.from_pretrained(trained).sampling.sampler == "euler"


def test_a_store_that_fails_midway_leaves_the_model_folder_as_it_was(corpus, tmp_path, monkeypatch):
    from polydiff.storage import files

    torch.manual_seed(0)
    folder = DiffusionModel.build(load_recipe(RECIPES_DIR / "audio/wavegrad_tiny.toml"), (1, 4000)).save_pretrained(
        tmp_path / "model")
    config = (folder / "config.json").read_bytes()

    def refuse(path, obj):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(files, "write_json", refuse)  # the record's write, after the staged config and weights
    with pytest.raises(OSError):
        store_winner(folder, beta_candidate((5,) * 6, "ddpm"), {"scores": []})
    assert (folder / "config.json").read_bytes() == config and not (folder / RECORD_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
    monkeypatch.undo()
    store_winner(folder, beta_candidate((5,) * 6, "ddpm"), {"scores": []})
    assert DiffusionModel.from_pretrained(folder).sampling.betas == (5e-6, 5e-5, 5e-4, 5e-3, 5e-2, 0.5)
    grid = next(g for g in grid_candidates(DiffusionModel.from_pretrained(folder), 4, "heun")[0]
                if g.sampling["spacing"] == "karras")
    store_winner(folder, grid, {"scores": []})  # a grid winner clears the recipe's betas
    s = DiffusionModel.from_pretrained(folder).sampling
    assert (s.sampler, s.steps, s.spacing, s.betas) == ("heun", 4, "karras", ())
    assert len(json.loads((folder / RECORD_FILE).read_text())["history"]) == 1


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_mistakes_are_one_line_naming_the_path(trained, corpus, tmp_path, capsys):
    from polydiff.recipes.files import load_recipe as load

    toy = load(RECIPES_DIR / "toy/swiss_roll.toml", ["model.options.hidden=16", "model.options.depth=1"])
    not_vocoder = DiffusionModel.build(toy, (2,)).save_pretrained(tmp_path / "toy")
    assert main(["tune-schedule", str(not_vocoder), "--data", str(corpus), "--device", "cpu"]) == 2
    assert str(not_vocoder) in one_line_error(capsys)

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.wav").write_bytes(b"not audio at all")
    (tmp_path / "junk" / "b.wav").write_bytes(b"")
    assert main(["tune-schedule", str(trained), "--data", str(tmp_path / "junk"), "--device", "cpu"]) == 2
    err = one_line_error(capsys)
    assert str(tmp_path / "junk") in err and "none of its 2 audio file(s)" in err
    (tmp_path / "empty").mkdir()
    assert main(["tune-schedule", str(trained), "--data", str(tmp_path / "empty"), "--device", "cpu"]) == 2
    assert str(tmp_path / "empty") in one_line_error(capsys)
    assert main(["tune-schedule", str(trained), "--data", str(corpus), "--frames", "2", "--device", "cpu"]) == 2
    assert "--frames 2" in one_line_error(capsys)


def test_audio_at_another_rate_is_resampled_and_said(model, corpus, tmp_path, capsys):
    from torchaudio.functional import resample

    config = model.config.data.options.mel_config
    wave, rate = soundfile.read(str(corpus / "wavs" / "SP0001.wav"), dtype="float32")
    (tmp_path / "d").mkdir()
    soundfile.write(str(tmp_path / "d" / "high.wav"), resample(torch.from_numpy(wave), rate, 22050).numpy(), 22050)
    (clip,) = read_clips(tmp_path / "d", config, 1, 20)
    err = capsys.readouterr().err
    assert "22050 Hz" in err and "high.wav" in err and "resampled to 16000 Hz" in err
    assert clip.wave.numel() == 20 * config.hop_length and clip.mel.shape == (config.n_mels, 20)
    with pytest.raises(UserError, match="--data: .*nothing does not exist"):
        read_clips(tmp_path / "nothing", config, 1, 20)
