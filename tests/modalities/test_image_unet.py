"""The image U-Net: the published sizes, the architecture switches, and every kind of condition."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.precond import Precond
from polydiff.modalities.image.unet import PRESETS, ImageUNet, UNetOptions
from polydiff.modalities.nn.text import encode_bytes
from polydiff.recipes.config import ConfigError
from polydiff.registry import BackboneSpec


def count(options: UNetOptions, shape, out_factor: int = 1) -> int:
    with torch.device("meta"):
        model = ImageUNet(options, BackboneSpec(shape, out_factor))
    return sum(p.numel() for p in model.parameters())


def test_presets_have_the_published_sizes():
    """DDPM's CIFAR-10 U-Net has 35.7M parameters (Ho et al. 2020, sec. 4), ADM's ImageNet 64x64 model 296M
    (Dhariwal & Nichol 2021, Table 13, with learned variance and 1000 classes)."""
    assert count(UNetOptions(preset="cifar10"), (3, 32, 32)) == pytest.approx(35.7e6, rel=0.002)
    assert count(UNetOptions(preset="imagenet64", num_classes=1000), (3, 64, 64), 2) == pytest.approx(296e6, rel=0.002)
    assert set(PRESETS) >= {"cifar10", "imagenet64", "imagen_base64", "imagen_sr256", "tiny"}


def small(**values) -> UNetOptions:
    return UNetOptions(**{"channels": 16, "channel_mult": (1, 2), "num_res_blocks": (1,), "attention_resolutions": (4,),
                          "head_channels": 16, **values})


@pytest.mark.parametrize("switches", [{}, {"efficient": True}, {"resblock_updown": True}, {"scale_shift": False},
                                      {"num_res_blocks": (1, 3)}, {"gradient_checkpointing": True},
                                      {"channels_last": True}])
def test_architecture_switches_keep_the_contract(switches):
    torch.manual_seed(0)
    model = ImageUNet(small(**switches), BackboneSpec((3, 8, 8), 2))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = model(x, torch.tensor([0.1, -0.4]), {})
    assert out.shape == (2, 6, 8, 8) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sizes_that_do_not_fit_the_images_are_config_errors():
    with pytest.raises(ConfigError, match=r"3 levels: 2 halvings do not divide 6x6"):
        ImageUNet(small(channel_mult=(1, 2, 2)), BackboneSpec((3, 6, 6)))
    with pytest.raises(ConfigError, match="num_res_blocks' has 3 entries for 2 levels"):
        ImageUNet(small(num_res_blocks=(1, 1, 1)), BackboneSpec((3, 8, 8)))


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # zero-initialised output layers would hide every condition
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def test_captions_change_the_output_and_empty_ones_are_the_null_tokens():
    torch.manual_seed(0)
    model = perturbed(ImageUNet(small(text="bytes", text_dim=16, text_length=12), BackboneSpec((1, 8, 8))))
    denoiser = Precond(model, "edm", sigma_data=0.5)
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 3.0])
    a = denoiser(x, sigma, {"caption_ids": encode_bytes(["bold letter A", "bold letter A"], 12)})
    b = denoiser(x, sigma, {"caption_ids": encode_bytes(["small letter q", "small letter q"], 12)})
    assert not torch.allclose(a, b)
    empty = denoiser(x, sigma, {"caption_ids": encode_bytes(["", ""], 12)})
    torch.testing.assert_close(empty, denoiser(x, sigma), rtol=0, atol=0)  # the null path is the empty caption
    longer = encode_bytes(["bold letter A and then some more"] * 2, 40)  # cut to text_length, not an error
    torch.testing.assert_close(denoiser(x, sigma, {"caption_ids": longer}), denoiser(x, sigma, {"caption_ids":
                                                                                                 longer[:, :12]}))


def test_precomputed_text_tokens_with_a_mask():
    torch.manual_seed(0)
    model = perturbed(ImageUNet(small(text="embeddings", text_dim=8, text_length=5), BackboneSpec((1, 8, 8))))
    x, c = torch.randn(2, 1, 8, 8), torch.zeros(2)
    tokens, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = model(x, c, {"text": tokens, "text_mask": mask})
    changed = tokens.clone()
    changed[0, 3] += 10  # a padded token of sample 0: ignored
    torch.testing.assert_close(model(x, c, {"text": changed, "text_mask": mask})[0], out[0])
    nothing = model(x, c, {"text_mask": torch.zeros(2, 5, dtype=torch.bool)})  # no text at all: null tokens
    assert torch.isfinite(nothing).all() and not torch.allclose(nothing, out)


def test_a_super_resolution_stage_reads_its_low_resolution_input_and_level():
    torch.manual_seed(0)
    model = perturbed(ImageUNet(small(lowres_channels=3), BackboneSpec((3, 8, 8))))
    assert model.required_cond == ("lowres", "aug_level")
    x, c, lowres = torch.randn(2, 3, 8, 8), torch.zeros(2), torch.randn(2, 3, 4, 4)
    out = model(x, c, {"lowres": lowres, "aug_level": torch.zeros(2)})
    assert out.shape == (2, 3, 8, 8)
    assert not torch.allclose(out, model(x, c, {"lowres": -lowres, "aug_level": torch.zeros(2)}))
    assert not torch.allclose(out, model(x, c, {"lowres": lowres, "aug_level": torch.full((2,), 0.5)}))
