"""Contracts every registered component keeps, checked over the registries (a new component is covered by
registering it): backbones, writers, data sets, transforms, commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset

from polydiff import registry
from polydiff.cli import main
from polydiff.core.denoiser import Backbone
from polydiff.core.precond import Precond
from polydiff.data.transforms import example_generators
from polydiff.errors import UserError
from polydiff.media import Audio, Image, Video, save_media
from polydiff.recipes.config import NoOptions


def _build(component, out_factor: int = 1, **values):
    options = (component.options or NoOptions)(**values)
    spec = registry.BackboneSpec(component.info["example_shape"], out_factor)
    torch.manual_seed(0)
    return component.target(options, spec), spec


def _cond(backbone, x: torch.Tensor) -> dict:
    """A real (non-null) value of every droppable condition: 1 everywhere (class 1, a caption of byte 0x00...), and
    of every required one from the backbone's ``example_cond(x)`` (e.g. a vocoder's mel for waveforms x)."""
    droppable = {k: torch.ones(x.shape[0], *torch.as_tensor(null).shape, dtype=torch.as_tensor(null).dtype)
                 for k, null in backbone.null_cond.items()}
    return {**droppable, **(backbone.example_cond(x) if hasattr(backbone, "example_cond") else {})}


def _models(output: str) -> list[str]:
    return [n for n in registry.names("model") if registry.get("model", n).info.get("output", "denoiser") == output]


@pytest.mark.parametrize("name", _models("denoiser"))
def test_backbones_follow_the_protocol(name):
    component = registry.get("model", name)
    backbone, spec = _build(component)
    assert isinstance(backbone, Backbone) and backbone.out_factor == 1
    x = torch.randn(3, *spec.example_shape, requires_grad=True)
    c_noise = torch.tensor([-1.0, 0.0, 1.0])
    out = backbone(x, c_noise, _cond(backbone, x))
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in backbone.parameters() if p.requires_grad)
    doubled, spec2 = _build(component, out_factor=2)
    assert doubled(x.detach(), c_noise, _cond(doubled, x)).shape == (3, 2 * spec.example_shape[0], *spec.example_shape[1:])


@pytest.mark.parametrize("name", _models("logits"))
def test_classifier_backbones_give_logits_with_input_gradients(name):
    """A noise-aware classifier (output="logits") gives (B, K) logits whose gradient reaches every input: classifier
    guidance differentiates log p(y | x_sigma) with respect to x."""
    backbone, spec = _build(registry.get("model", name))
    assert isinstance(backbone, Backbone) and backbone.null_cond == {} and "class_labels" in backbone.required_cond
    x = torch.randn(3, *spec.example_shape, requires_grad=True)
    logits = backbone(x, torch.tensor([-1.0, 0.0, 1.0]), {"class_labels": torch.tensor([0, 1, 0])})
    assert logits.shape == (3, backbone.num_classes) and torch.isfinite(logits).all()
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert (grad.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", _models("denoiser"))
def test_a_conditional_backbone_without_its_condition_uses_the_null_value(name):
    """Precond fills a missing condition with the backbone's null value: the unconditional prediction is the
    trained null path, never an untrained one, and the condition changes the output."""
    component = registry.get("model", name)
    backbone, spec = _build(component, **component.info["conditional"])
    if not component.info["conditional"] and not backbone.null_cond and getattr(backbone, "required_cond", ()):
        pytest.skip(f"every condition of {name!r} is required ({', '.join(backbone.required_cond)}): no null path")
    assert backbone.null_cond, f"register {name!r} with the options that make it conditional (conditional=...)"
    with torch.no_grad():  # the output layers start at zero in some backbones: give every weight a value
        for p in backbone.parameters():
            p.normal_(0, 0.3)
    denoiser = Precond(backbone, "edm", sigma_data=0.5)
    x, sigma = torch.randn(2, *spec.example_shape), torch.tensor([0.5, 2.0])
    nulls = {k: torch.as_tensor(v).expand(2, *torch.as_tensor(v).shape) for k, v in backbone.null_cond.items()}
    torch.testing.assert_close(denoiser(x, sigma), denoiser(x, sigma, nulls), rtol=0, atol=0)
    assert not torch.allclose(denoiser(x, sigma, _cond(backbone, x)), denoiser(x, sigma))


@pytest.mark.parametrize("name", registry.names("writer"))
def test_writers_return_media_that_save(name, tmp_path):
    component = registry.get("writer", name)
    dims = component.info["example_dims"]
    shape = {1: (2,), 2: (1, 64), 3: (3, 8, 8), 4: (3, 4, 8, 8)}[dims]
    samples = torch.rand(4, *shape) * 2 - 1
    media = component.target(samples, registry.WriteContext((-1.0, 1.0)))
    assert isinstance(media, (Image, Video, Audio))
    path = save_media(media, tmp_path / name)
    assert path.is_file() and path.stat().st_size > 0


@pytest.mark.parametrize("name", registry.names("data"))
def test_data_sets_build_from_defaults_or_say_why_in_one_line(name):
    component = registry.get("data", name)
    try:
        dataset = component.target((component.options or NoOptions)(), 0)
    except UserError as err:
        assert "\n" not in str(err) and str(err)
        return
    item = next(iter(dataset)) if isinstance(dataset, IterableDataset) else dataset[0]
    assert isinstance(item["x"], torch.Tensor) and torch.isfinite(item["x"]).all() and isinstance(item["cond"], dict)


@pytest.mark.parametrize("name", registry.names("transform"))
def test_transforms_draw_per_example(name):
    """Example i's result depends only on its own generator: the same in any batch, at any position."""
    component = registry.get("transform", name)
    if component.info.get("at_sampling"):
        pytest.skip("a deterministic conditioning transform (tested with its encoder in tests/data/test_text.py)")
    transform = component.target((component.options or NoOptions)())
    x = torch.randn(6, 2, 5, 5)
    batch = {"x": x, "cond": {}}
    whole = transform(batch, example_generators((1, 2, 3), range(6)))["x"]
    again = transform(batch, example_generators((1, 2, 3), range(6)))["x"]
    torch.testing.assert_close(whole, again, rtol=0, atol=0)
    part = transform({"x": x[2:5], "cond": {}}, example_generators((1, 2, 3), range(2, 5)))["x"]
    torch.testing.assert_close(part, whole[2:5], rtol=0, atol=0)


@pytest.mark.parametrize("name", registry.names("command"))
def test_commands_have_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0 and name in capsys.readouterr().out


def test_registering_a_different_component_under_a_taken_name_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_writer("toy", example_dims=1)(lambda samples, context: None)
    with pytest.raises(KeyError, match="unknown backbone 'nope'; known: mlp"):
        registry.get("model", "nope")


def test_random_flip_flips_about_half_along_the_chosen_dim():
    from polydiff.data.transforms import RandomFlip, RandomFlipOptions

    x = torch.arange(2000 * 4, dtype=torch.float32).reshape(2000, 1, 4)
    out = RandomFlip(RandomFlipOptions(dim=-1, p=0.5))({"x": x, "cond": {}}, example_generators((0,), range(2000)))["x"]
    flipped = (out == x.flip(-1)).all(-1).squeeze(1)
    assert ((out == x).all(-1).squeeze(1) | flipped).all()
    assert abs(flipped.float().mean().item() - 0.5) < 0.05  # 2000 draws: SE 0.011
    with pytest.raises(ValueError, match=r"outside examples of shape \(1, 4\)"):
        RandomFlip(RandomFlipOptions(dim=2))({"x": x, "cond": {}}, example_generators((0,), range(2000)))


def test_media_types_refuse_wrong_layouts():
    with pytest.raises(ValueError, match=r"uint8 array \(H, W, C\)"):
        Image(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        Video(np.zeros((2, 4, 4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="positive integer"):
        Audio(np.zeros((10, 1), dtype=np.float32), 0)
