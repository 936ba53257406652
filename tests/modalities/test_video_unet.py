"""The factorized space-time U-Net: any clip length, images in a clip really isolated, temporal layers that start
as the identity, frame conditioning that reaches the output."""

from __future__ import annotations

import pytest
import torch

from polydiff.modalities.nn.temporal import TemporalConv
from polydiff.modalities.nn.unet import Conditioning
from polydiff.modalities.video.unet import VideoUNet, VideoUNetOptions
from polydiff.registry import BackboneSpec

TINY = dict(channels=16, channel_mult=(1, 2), num_res_blocks=(1,), attention_resolutions=(4,), head_channels=16,
            temporal_head_channels=16)


def _net(frames: int = 4, seed: int = 0, **options) -> VideoUNet:
    torch.manual_seed(seed)
    net = VideoUNet(VideoUNetOptions(**{**TINY, **options}), BackboneSpec((1, frames, 8, 8)))
    with torch.no_grad():  # zero-initialised output layers would hide every effect: give every weight a value
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


@pytest.mark.parametrize("frames", [1, 3, 8, 40])
def test_one_network_runs_on_any_number_of_frames(frames):
    net = _net()
    x = torch.randn(2, 1, frames, 8, 8)
    out = net(x, torch.zeros(2), {})
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_frames_of_an_image_clip_do_not_see_each_other_and_video_frames_do():
    net = _net(temporal_conv=True)
    x = torch.randn(2, 1, 5, 8, 8)
    changed = x.clone()
    changed[:, :, 2] += 1.0  # change frame 2 of both clips
    images = torch.tensor([True, False])
    with torch.no_grad():
        before = net(x, torch.zeros(2), {"images": images})
        after = net(changed, torch.zeros(2), {"images": images})
    others = [0, 1, 3, 4]
    torch.testing.assert_close(after[0, :, others], before[0, :, others], rtol=0, atol=1e-6)  # image clip
    assert (after[1, :, others] - before[1, :, others]).abs().max() > 1e-3  # video clip: time mixes
    # an image clip's frames are what each frame gives alone
    alone = torch.cat([net(x[:1, :, f:f + 1], torch.zeros(1), {}) for f in range(5)], dim=2)
    torch.testing.assert_close(before[:1], alone, rtol=1e-5, atol=1e-5)


def test_temporal_convolution_starts_as_the_identity():
    conv = TemporalConv(6)
    h = torch.randn(3 * 4, 6, 5, 5)  # 3 clips of 4 frames folded into the batch
    torch.testing.assert_close(conv(h, Conditioning(torch.zeros(12, 1), extra={"frames": 4})), h)


def test_known_frames_reach_the_output_and_no_known_frame_is_the_null_path():
    net = _net(frame_conditioning=True, num_classes=3)
    x, known, labels = torch.randn(2, 1, 4, 8, 8), torch.randn(2, 1, 4, 8, 8), torch.tensor([0, 3])
    mask = torch.tensor([[True, False, False, False], [True, True, False, False]])
    with torch.no_grad():
        plain = net(x, torch.zeros(2), {"class_labels": labels})
        conditioned = net(x, torch.zeros(2), {"class_labels": labels, "known": known, "known_mask": mask})
        null = net(x, torch.zeros(2), {"class_labels": labels, "known": known,
                                       "known_mask": torch.zeros(2, 4, dtype=torch.bool)})
    torch.testing.assert_close(null, plain, rtol=0, atol=0)
    assert (conditioned - plain).abs().max() > 1e-3


def test_a_caption_reaches_every_frame_and_the_empty_caption_is_the_null_path():
    from polydiff.modalities.nn.text import encode_bytes

    net = _net(text="bytes", text_dim=16, text_length=12)
    x = torch.randn(2, 1, 3, 8, 8)
    with torch.no_grad():
        a = net(x, torch.zeros(2), {"caption_ids": encode_bytes(["digit 3 moving left"] * 2, 12)})
        b = net(x, torch.zeros(2), {"caption_ids": encode_bytes(["digit 3 moving left", "digit 7 moving up"], 12)})
        null = net(x, torch.zeros(2), {"caption_ids": torch.zeros(2, dtype=torch.long)})  # the null_cond value
        empty = net(x, torch.zeros(2), {"caption_ids": encode_bytes(["", ""], 12)})
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)  # each clip reads its own caption only
    assert ((a[1] - b[1]).abs().amax(dim=(0, 2, 3)) > 1e-4).all()  # every frame of clip 1 sees its caption
    torch.testing.assert_close(null, empty, rtol=0, atol=0)


def test_a_clip_shape_that_the_levels_cannot_halve_is_a_config_error():
    from polydiff.recipes.config import ConfigError

    with pytest.raises(ConfigError, match="halvings"):
        VideoUNet(VideoUNetOptions(**{**TINY, "channel_mult": (1, 2, 2, 2)}), BackboneSpec((1, 4, 12, 12)))


def test_a_video_cascade_upsamples_clips_with_the_image_cascade_code(tmp_path):
    """A 16x16 super-resolution stage conditioned on the 8x8 base stage's clips (lowres_channels), trained through
    lowres_augment and sampled through pipeline.cascade like images."""
    from polydiff.commands.train import RECIPES_DIR
    from polydiff.data.transforms import example_generators
    from polydiff.modalities.image.cascade import LowresAugment, LowresAugmentOptions
    from polydiff.pipeline import DiffusionModel, Pipeline
    from polydiff.pipeline.cascade import write_cascade
    from polydiff.recipes.files import load_recipe

    def model(size: int, lowres: int):
        cfg = load_recipe(RECIPES_DIR / "video/moving_digits.toml", [
            "model.options={channels = 8, channel_mult = [1, 2], num_res_blocks = [1], attention_resolutions = [4], "
            f"head_channels = 8, temporal_head_channels = 8, num_classes = 10, lowres_channels = {lowres}}}",
            f"data.options.size={size}", "data.options.frames=3", "sample.steps=2"])
        return DiffusionModel.build(cfg, (1, 3, size, size)).save_pretrained(tmp_path / f"stage{size}")

    batch = LowresAugment(LowresAugmentOptions(size=8, max_level=0.3))(
        {"x": torch.randn(2, 1, 3, 16, 16), "cond": {}}, example_generators((0,), range(2)))
    assert batch["cond"]["lowres"].shape == (2, 1, 3, 8, 8)
    base, sr = model(8, 0), model(16, 1)
    net = DiffusionModel.from_pretrained(sr).denoiser.backbone
    assert net.required_cond == ("lowres", "aug_level")
    out = net(batch["x"], torch.zeros(2), {**batch["cond"], "class_labels": torch.tensor([1, 10])})
    assert out.shape == (2, 1, 3, 16, 16)
    write_cascade(tmp_path / "cascade", [{"model": str(base)}, {"model": str(sr), "aug_level": 0.1}])
    clips = Pipeline.from_pretrained(tmp_path / "cascade").sample(2, cond={"class_labels": torch.tensor([3, 4])})
    assert clips.shape == (2, 1, 3, 16, 16) and torch.isfinite(clips).all()
