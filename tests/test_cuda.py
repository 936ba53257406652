"""The CUDA paths: run where a GPU is present, skipped elsewhere (CI has none). Device placement of the EMA,
the sampling generators, batch transforms and mixed precision (bf16, fp16 with loss scaling)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polydiff.core.utils import randn_like, seeded_generators

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "swiss_roll.toml"


def test_noise_from_cpu_and_cuda_generators_lands_on_the_batch_device():
    x = torch.empty(3, 4, device="cuda")
    cpu = randn_like(x, seeded_generators([1, 2, 3]))
    cuda = randn_like(x, seeded_generators([1, 2, 3], device="cuda"))
    assert cpu.device.type == cuda.device.type == "cuda"
    torch.testing.assert_close(cpu.cpu(), randn_like(torch.empty(3, 4), seeded_generators([1, 2, 3])))


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
def test_training_on_the_gpu_with_each_precision(tmp_path, precision):
    from polydiff.pipeline import DiffusionModel
    from polydiff.recipes.files import load_recipe
    from polydiff.train.trainer import train

    cfg = load_recipe(RECIPE, ["train.steps=20", "data.batch_size=64", "data.options.num_samples=1000",
                               "train.sample_every=10", "train.val_every=10", "train.checkpoint_every=10",
                               "train.ema_halflife_steps=5", f"train.mixed_precision={precision}",
                               'data.transforms=[{name = "random_flip", options = {dim = 0}}]',
                               f'train.out_dir="{tmp_path.as_posix()}"'])
    result = train(cfg, progress=False)
    assert result.nonfinite_skipped == 0 and result.fp16_overflow_skipped < 20
    model = DiffusionModel.from_pretrained(result.model_dir, device="cuda")
    samples = model.sample(8, steps=4, seed=3)
    assert samples.device.type == "cuda" and torch.isfinite(samples).all()
    torch.testing.assert_close(samples[1:2], model.sample(1, steps=4, seed=4), rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", ["no", "fp16"])
def test_resume_on_the_gpu_continues_the_run(straight_and_resumed, precision):
    import json

    from polydiff.train import latest_checkpoint

    a, b, straight, resumed = straight_and_resumed(
        ["train.steps=10", "data.batch_size=64", "data.options.num_samples=1000", "train.sample_every=0",
         "train.val_every=0", "train.checkpoint_every=5", "train.ema_halflife_steps=5",
         f"train.mixed_precision={precision}"], stop=5)
    for key in (k for k in a if k.startswith(("parts/model", "parts/ema"))):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)  # cuBLAS may reorder sums
    if precision == "fp16":  # the loss scale and its growth tracker travel with the checkpoint
        states = [json.loads((latest_checkpoint(r.run_dir) / "state.json").read_text())["state"]["parts"]["scaler"]
                  for r in (straight, resumed)]
        assert states[0] == states[1]
