"""Every bundled recipe loads and takes a training step, then samples (GPU-sized recipes with their sizes cut
down for the CPU, on small data files made here); the GPU recipes' full-size backbones have their
published parameter counts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polydiff.commands.train import RECIPES_DIR, bundled_recipes
from polydiff.errors import UserError
from polydiff.pipeline import DiffusionModel
from polydiff.pipeline.build import build_backbone
from polydiff.recipes.files import load_recipe
from polydiff.train.trainer import train


def fake_cifar(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": rng.integers(0, 10, 8).tolist(), b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8)}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def fake_imagenet(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)).save(root / f"n{c:08d}" / f"{i}.jpg")
    return root


def fake_videos(root: Path) -> Path:
    from polydiff.media.video import Mp4Writer

    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"Class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(2):
            with Mp4Writer(root / f"Class{c}" / f"v_{i}.mp4", 25) as writer:
                for _ in range(12):
                    writer.write(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    return root


SMALL_UNET = ['model.options={channels = 8, channel_mult = [1, 2], num_res_blocks = [1], attention_resolutions = [8], '
              'head_channels = 8, num_classes = NUM, lowres_channels = LOW, text = "TEXT", text_dim = 16, '
              'text_length = 8}']


def overrides(name: str, tmp_path: Path) -> list[str]:
    """Sizes cut for one CPU step, and small data where the recipe expects files."""
    cfg = load_recipe(RECIPES_DIR / f"{name}.toml")
    sets = ["train.steps=1", "train.checkpoint_every=1", "train.sample_every=1", "train.val_every=1",
            "train.mixed_precision=no", "data.num_workers=0", "sample.num=2", "sample.steps=2",
            "data.val_fraction=0.1", f'train.out_dir="{tmp_path.as_posix()}"']
    if cfg.data.name in ("swiss_roll",):
        return sets + ["data.options.num_samples=200", "data.batch_size=20"]
    sets.append("data.batch_size=4")
    if cfg.data.name == "cifar10":
        sets.append(f'data.options.root="{fake_cifar(tmp_path / "cifar").as_posix()}"')
    if cfg.data.name == "image_folder":
        sets.append(f'data.options.root="{fake_imagenet(tmp_path / "imagenet").as_posix()}"')
    if cfg.data.name == "glyphs":
        sets.append("data.options.num_samples=40")
    if cfg.objective.task == "classify":
        return sets  # classifiers guide CPU-sized models (tests/modalities/test_image_classifier.py)
    o = cfg.model.options
    if cfg.modality == "video":
        if cfg.data.name == "moving_digits":
            sets += ["data.options.size=16", "data.options.frames=4", "data.options.num_samples=40"]
        if cfg.data.name == "video_folder":
            sets += [f'data.options.root="{fake_videos(tmp_path / "videos").as_posix()}"', "data.options.size=16",
                     "data.options.frames=4", "data.options.clips_per_file=1"]
        return sets + [f"model.options={{channels = 8, channel_mult = [1, 2], num_res_blocks = [1], attention_resolutions"
                       f" = [8], head_channels = 8, temporal_head_channels = 8, num_classes = {o.num_classes}, "
                       f"frame_conditioning = {str(o.frame_conditioning).lower()}}}"]
    small = SMALL_UNET[0].replace("NUM", str(o.num_classes))
    small = small.replace("LOW", str(o.lowres_channels)).replace("TEXT", o.text)
    return sets + [small]


@pytest.mark.parametrize("name", bundled_recipes())
def test_every_recipe_takes_a_step_and_samples(name, tmp_path):
    if name.startswith("audio/"):
        pytest.skip("a vocoder trains on a generated corpus and vocodes a mel: tests/modalities/test_audio_vocode.py")
    cfg = load_recipe(RECIPES_DIR / f"{name}.toml", overrides(name, tmp_path))
    result = train(cfg, progress=False)
    assert result.steps == 1 and result.nonfinite_skipped == 0 and result.model_dir is not None
    model = DiffusionModel.from_pretrained(result.model_dir)
    if "lowres" in getattr(model.denoiser.backbone, "required_cond", ()):
        return  # a super-resolution stage samples inside a cascade (tests/pipeline/test_cascade.py)
    if cfg.objective.task == "classify":
        with pytest.raises(UserError, match="is a classifier"):
            model.sample(2, steps=2)  # it guides models (tests/modalities/test_image_classifier.py)
        return
    assert torch.isfinite(model.sample(2, steps=2)).all()


@pytest.mark.parametrize("name, shape, millions", [("image/cifar10", (3, 32, 32), 35.7),
                                                     ("image/imagenet64", (3, 64, 64), 296.0)])
def test_gpu_recipes_build_the_published_backbones(name, shape, millions):
    cfg = load_recipe(RECIPES_DIR / f"{name}.toml")
    with torch.device("meta"):
        backbone = build_backbone(cfg, shape, device="meta")
    assert sum(p.numel() for p in backbone.parameters()) / 1e6 == pytest.approx(millions, rel=0.002)
