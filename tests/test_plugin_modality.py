"""A new modality is a folder: this module defines a throwaway one (a backbone, a data set, a sample writer
and a command, each registered next to its code) and trains and samples it through the CLI without touching
a single package file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from polydiff import registry
from polydiff.cli import main
from polydiff.data.examples import TensorExamples
from polydiff.media import Audio
from polydiff.recipes.config import Config, setting
from polydiff.registry import BackboneSpec, WriteContext

PACKAGE = Path(__file__).resolve().parents[1]
RATE = 8000


@dataclass(frozen=True)
class ChirpOptions(Config):
    count: int = setting(64, gt=0, doc="clips in the data set")
    length: int = setting(32, gt=0, doc="samples per clip")


@dataclass(frozen=True)
class TinyConvOptions(Config):
    width: int = setting(8, gt=0, doc="channels of the hidden convolutions")
    num_classes: int = setting(2, ge=0, doc="class labels; 0 = unconditional")


def chirps(options: ChirpOptions, seed: int) -> TensorExamples:
    """Sines (N, 1, T) of two frequencies; the frequency is the class label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (options.count,), generator=g)
    t = torch.arange(options.length) / options.length
    x = 0.8 * torch.sin(2 * torch.pi * (2 + 3 * labels[:, None]) * t)[:, None, :]  # (N, 1, T)
    return TensorExamples(x, {"class_labels": labels})


class TinyConv(nn.Module):
    def __init__(self, options: TinyConvOptions, spec: BackboneSpec):
        super().__init__()
        channels = spec.example_shape[0]
        self.out_factor, self.null_cond = spec.out_factor, {"class_labels": options.num_classes}
        self.labels = nn.Embedding(options.num_classes + 1, options.width)
        self.inp = nn.Conv1d(channels, options.width, 3, padding=1)
        self.out = nn.Conv1d(options.width, channels * spec.out_factor, 3, padding=1)

    def forward(self, x_in, c_noise, cond):
        h = self.inp(x_in) + self.labels(cond["class_labels"])[:, :, None] + c_noise[:, None, None]
        return self.out(torch.nn.functional.silu(h))


def write_clips(samples: torch.Tensor, context: WriteContext) -> Audio:
    """Clips (N, 1, T) one after another as one mono WAV."""
    lo, hi = context.value_range
    wave = ((samples.clamp(lo, hi) - lo) / (hi - lo) * 2 - 1).reshape(-1, 1).numpy().astype(np.float32)
    return Audio(wave, RATE)


def count_parameters(args) -> int:
    from polydiff.pipeline import DiffusionModel

    model = DiffusionModel.from_pretrained(args.model_dir)
    print(f"{sum(p.numel() for p in model.denoiser.parameters())} parameters")
    return 0


@pytest.fixture
def throwaway_modality():
    """Register the components above as their own modules would, and remove them afterwards."""
    registry.register_dataset("chirps", ChirpOptions)(chirps)
    registry.register_backbone("tiny_conv", TinyConvOptions, example_shape=(1, 16),
                               conditional={"num_classes": 2})(TinyConv)
    registry.register_writer("chirp_audio", example_dims=2)(write_clips)
    registry.register_command("count-params", help="count a model's parameters",
                              arguments=lambda p: p.add_argument("model_dir"))(count_parameters)
    yield
    for kind, name in (("data", "chirps"), ("model", "tiny_conv"), ("writer", "chirp_audio"),
                       ("command", "count-params")):
        registry.unregister(kind, name)


RECIPE = """
name = "chirps"
modality = "chirp_audio"

[data]
name = "chirps"
batch_size = 16
options = {{ count = 64, length = 32 }}

[model]
name = "tiny_conv"
options = {{ width = 8, num_classes = 2 }}

[train]
steps = 6
sample_every = 3
val_every = 3
checkpoint_every = 6
ema_halflife_steps = 2
cond_drop_prob = 0.2
out_dir = "{out}"

[sample]
sampler = "euler"
steps = 4
num = 4
"""


def package_fingerprint() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in PACKAGE.rglob("*") if p.is_file() and ".venv" not in p.parts and "__pycache__" not in p.parts
            and ".git" not in p.parts and ".pytest_cache" not in p.parts}


def test_a_modality_defined_outside_the_package_trains_and_samples_through_the_cli(throwaway_modality, tmp_path,
                                                                                   capsys):
    before = package_fingerprint()
    recipe = tmp_path / "chirps.toml"
    recipe.write_text(RECIPE.format(out=tmp_path.as_posix()))
    assert main(["train", str(recipe)]) == 0
    run = tmp_path / "chirps"
    assert (run / "samples" / "step_000003.wav").is_file() and (run / "model" / "config.json").is_file()
    assert main(["sample", str(run / "model"), "--label", "1", "--num", "3", "--guidance", "2",
                 "--out", str(tmp_path / "drawn")]) == 0
    wave, rate = soundfile.read(tmp_path / "drawn" / "samples.wav")
    assert rate == RATE and wave.shape == (3 * 32,) and np.isfinite(wave).all()
    capsys.readouterr()
    assert main(["count-params", str(run / "model")]) == 0
    assert "parameters" in capsys.readouterr().out
    assert package_fingerprint() == before


def test_a_modality_whose_examples_have_the_wrong_rank_is_refused_at_start(throwaway_modality, tmp_path, capsys):
    recipe = tmp_path / "chirps.toml"
    recipe.write_text(RECIPE.format(out=tmp_path.as_posix()).replace('modality = "chirp_audio"', 'modality = "toy"'))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "modality 'toy' takes examples of 1 dimension(s), but data set 'chirps' gives examples of shape (1, 32)" in err
