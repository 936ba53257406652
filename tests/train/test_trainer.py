"""The training engine end to end on the toy recipe: outputs, exact resume, the non-finite guard,
model folders, and a 2-process run against a 1-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from polydiff.pipeline import DiffusionModel
from polydiff.recipes.files import load_recipe
from polydiff.train import latest_checkpoint, list_checkpoints
from polydiff.errors import TrainingStopped, UserError
from polydiff.train.trainer import TrainingStep, train

from train_helpers import free_port  # noqa: E402  (tests/train on sys.path)

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy" / "swiss_roll.toml"

SMALL = [
    "data.batch_size=32",
    "data.options.num_samples=640",
    "model.options.hidden=32",
    "model.options.depth=1",
    "model.options.embed_dim=16",
    "train.log_every=5",
    "train.val_every=10",
    "train.sample_every=10",
    "train.checkpoint_every=10",
    "train.ema_halflife_steps=5",
    "sample.num=64",
    "sample.steps=4",
]


def small_recipe(out: Path, steps: int = 20, *extra: str):
    return load_recipe(RECIPE, [*SMALL, f"train.steps={steps}", f'train.out_dir="{out.as_posix()}"', *extra])


def test_a_run_writes_checkpoints_logs_samples_and_a_model(tmp_path):
    result = train(small_recipe(tmp_path), progress=False)
    run = tmp_path / "swiss_roll"
    assert result.steps == 20 and result.nonfinite_skipped == 0 and torch.isfinite(torch.tensor(result.last_loss))
    assert [p.name for p in list_checkpoints(run)] == ["step_000010", "step_000020"]
    for name in ("config.toml", "scalars.csv", "loss_curve.png", "samples/step_000020.png", "model/config.json"):
        assert (run / name).is_file(), name
    rows = (run / "scalars.csv").read_text().splitlines()
    assert rows[0] == "step,name,value" and any(",val/loss," in r for r in rows)
    assert any(p.name.startswith("events") for p in (run / "tensorboard").iterdir())
    # The resolved config re-loads into the same config.
    assert load_recipe(run / "config.toml") == small_recipe(tmp_path)


def test_resume_is_bit_exact(tmp_path):
    straight = train(small_recipe(tmp_path / "a"), progress=False)
    first = train(small_recipe(tmp_path / "b"), stop_at=10, progress=False)
    assert first.steps == 10 and first.model_dir is None
    resumed = train(small_recipe(tmp_path / "b"), resume=True, progress=False)
    assert resumed.steps == 20
    a = load_file(latest_checkpoint(straight.run_dir) / "tensors.safetensors")
    b = load_file(latest_checkpoint(resumed.run_dir) / "tensors.safetensors")
    params = [k for k in a if k.startswith(("parts/model", "parts/ema", "parts/optimizer"))]
    assert len(params) > 10
    for key in params:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_a_changed_recipe_and_a_fresh_run_refuses_to_overwrite(tmp_path):
    train(small_recipe(tmp_path), stop_at=10, progress=False)
    with pytest.raises(UserError, match="--resume"):
        train(small_recipe(tmp_path), progress=False)
    with pytest.raises(UserError, match=r"differs from the one .* in optim.lr; only train.steps, train.out_dir"):
        train(small_recipe(tmp_path, 20, "optim.lr=0.5"), resume=True, progress=False)
    with pytest.raises(UserError, match="no complete checkpoint"):
        train(small_recipe(tmp_path / "empty"), resume=True, progress=False)


def test_resume_accepts_changes_that_do_not_touch_the_math(tmp_path, monkeypatch):
    """The same run folder spelled another way, more workers, other logging: the run continues exactly."""
    straight = train(small_recipe(tmp_path / "a"), progress=False)
    train(small_recipe(tmp_path / "b"), stop_at=10, progress=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_recipe(RECIPE, [*SMALL, "train.steps=20", 'train.out_dir="./b/../b"', "data.num_workers=1",
                               "train.log_every=3", "train.checkpoint_every=7", "sample.steps=9"])
    resumed = train(cfg, resume=True, progress=False)
    a = load_file(latest_checkpoint(straight.run_dir) / "tensors.safetensors")
    b = load_file(latest_checkpoint(resumed.run_dir) / "tensors.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("parts/model"))


def test_resume_past_the_end_says_so(tmp_path):
    train(small_recipe(tmp_path), stop_at=10, progress=False)
    with pytest.raises(UserError, match=r"already at step 10, past train.steps = 5: raise it"):
        train(small_recipe(tmp_path, 5), resume=True, progress=False)
    with pytest.raises(UserError, match=r"already at step 10, past --stop-at 8"):
        train(small_recipe(tmp_path), resume=True, stop_at=8, progress=False)
    finished = train(small_recipe(tmp_path, 10), resume=True, progress=False)  # at the end: writes the model
    assert finished.steps == 10 and finished.model_dir is not None


def poison_steps(monkeypatch, bad_calls: set[int]):
    """Make the loss NaN on the given forward calls (0-based) of TrainingStep."""
    original, calls = TrainingStep.forward, {"n": 0}

    def forward(self, x0, draws, cond):
        loss = original(self, x0, draws, cond)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] - 1 in bad_calls else loss

    monkeypatch.setattr(TrainingStep, "forward", forward)


def test_non_finite_losses_are_skipped_and_counted(tmp_path, monkeypatch):
    poison_steps(monkeypatch, {3, 4, 11})
    result = train(small_recipe(tmp_path), progress=False)
    assert result.nonfinite_skipped == 3 and result.steps == 20
    ckpt = load_file(latest_checkpoint(result.run_dir) / "tensors.safetensors")
    assert all(torch.isfinite(v).all() for k, v in ckpt.items() if v.is_floating_point())


def test_too_many_non_finite_in_a_row_stops_with_advice(tmp_path, monkeypatch):
    poison_steps(monkeypatch, set(range(12, 100)))
    with pytest.raises(TrainingStopped, match=r"step 17: .* 5 times in a row.*optim.lr.*step_000010"):
        train(small_recipe(tmp_path), progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "swiss_roll")] == ["step_000010"]


def test_from_pretrained_round_trip(tmp_path):
    result = train(small_recipe(tmp_path), progress=False)
    model = DiffusionModel.from_pretrained(result.model_dir)
    ema = load_file(latest_checkpoint(result.run_dir) / "tensors.safetensors")
    for name, value in model.denoiser.state_dict().items():
        assert torch.equal(value, ema[f"parts/ema/model/{name}"]), name
    both = model.sample(2, seed=5)
    one_by_one = torch.cat([model.sample(1, seed=5), model.sample(1, seed=6)])
    torch.testing.assert_close(both, one_by_one, rtol=0, atol=1e-6)
    copy = model.save_pretrained(tmp_path / "copy")
    torch.testing.assert_close(DiffusionModel.from_pretrained(copy).sample(2, seed=5), both, rtol=0, atol=0)


def run_cli(*args: str, cwd: Path, env_extra: dict | None = None, launcher: list[str] | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = (launcher or [sys.executable, "-m", "polydiff.cli"]) + list(args)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_match_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) and the same global batch gives the weights of a 1-process run."""
    sets = [a for s in SMALL + ["train.steps=10", "train.sample_every=0", "train.val_every=0"] for a in ("--set", s)]
    one = run_cli("train", str(RECIPE), *sets, "--set", 'train.out_dir="one"', cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                "-m", "polydiff.cli"]
    two = run_cli("train", str(RECIPE), *sets, "--set", 'train.out_dir="two"', cwd=tmp_path, launcher=torchrun)
    assert two.returncode == 0, two.stderr[-2000:]
    assert [p.name for p in list_checkpoints(tmp_path / "two" / "swiss_roll")] == ["step_000010"]
    a = load_file(tmp_path / "one" / "swiss_roll" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "swiss_roll" / "model" / "model.safetensors")
    for key in a:  # only the order of floating-point sums differs (all-reduce of gradients)
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_with_gradient_accumulation_trains(tmp_path, precision):
    cfg = small_recipe(tmp_path, 10, f"train.mixed_precision={precision}", "train.grad_accum=2", "train.sample_every=0")
    if precision == "fp16" and not torch.cuda.is_available():  # accelerate would run fp32 and call it fp16
        with pytest.raises(UserError, match=r"fp16\" needs a CUDA GPU"):
            train(cfg, progress=False)
        return
    result = train(cfg, progress=False)
    assert result.steps == 10 and result.nonfinite_skipped == 0
    assert result.fp16_overflow_skipped < 10  # fp16's loss scaler may skip early steps, never all of them
    first = load_file(result.run_dir / "step_000010" / "tensors.safetensors")
    init = train(small_recipe(tmp_path / "init", 1, "optim.lr=1e-30", "train.sample_every=0"), progress=False)
    start = load_file(init.run_dir / "step_000001" / "tensors.safetensors")
    moved = [k for k in first if k.startswith("parts/model/") and not torch.allclose(first[k], start[k])]
    assert len(moved) > 5  # the optimizer really stepped
    weights = load_file(result.model_dir / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_ctrl_c_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    import os
    import signal

    original, calls = TrainingStep.forward, {"n": 0}

    def forward(self, x0, draws, cond):
        calls["n"] += 1
        if calls["n"] == 7:  # Ctrl-C in the middle of step 7
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x0, draws, cond)

    monkeypatch.setattr(TrainingStep, "forward", forward)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # CI may start us with SIGINT ignored
    try:
        with pytest.raises(KeyboardInterrupt, match="after step 7, checkpoint .*step_000007"):
            train(small_recipe(tmp_path / "b"), progress=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the run's handler is gone
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.setattr(TrainingStep, "forward", original)
    resumed = train(small_recipe(tmp_path / "b"), resume=True, progress=False)
    straight = train(small_recipe(tmp_path / "a"), progress=False)
    a = load_file(latest_checkpoint(straight.run_dir) / "tensors.safetensors")
    b = load_file(latest_checkpoint(resumed.run_dir) / "tensors.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("parts/model", "parts/ema")))


def test_learned_variance_trains_with_the_hybrid_loss_and_samples_with_ddpm(tmp_path):
    cfg = small_recipe(tmp_path, 10, "diffusion.schedule=linear", "diffusion.parameterization=eps",
                       "diffusion.c_noise=discrete", "diffusion.learned_variance=true",
                       'objective.noise_levels={name = "discrete"}', "objective.weighting.name=simple",
                       "objective.hybrid_vlb_weight=0.001", "sample.sampler=ddpm", "sample.spacing=trailing")
    result = train(cfg, progress=False)
    assert result.nonfinite_skipped == 0 and torch.isfinite(torch.tensor(result.last_loss))
    model = DiffusionModel.from_pretrained(result.model_dir)
    assert model.denoiser.learned_variance and model.denoiser.backbone.out[-1].out_features == 4
    x0_hat, v = model.denoiser.denoise_with_variance(torch.zeros(3, 2), torch.ones(3))
    assert x0_hat.shape == v.shape == (3, 2) and torch.isfinite(v).all()
    assert torch.isfinite(model.sample(4, sampler="ddpm", steps=5)).all()
