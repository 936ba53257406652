"""The trainer when things go wrong: a second process on the same run folder, a full disk, SIGTERM, damaged
checkpoints, fp16 overflow, out of memory; and what makes resume whole: every RNG, batch transforms,
validation split over processes."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from polydiff.cli import main
from polydiff.errors import UserError
from polydiff.recipes.files import load_recipe
from polydiff.train import latest_checkpoint, list_checkpoints
from polydiff.train.interrupt import Interrupted
from polydiff.train.lock import RunLock
from polydiff.train.trainer import TrainingStep, train

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy" / "swiss_roll.toml"
SMALL = ["data.batch_size=32", "data.options.num_samples=640", "model.options.hidden=32", "model.options.depth=1",
         "model.options.embed_dim=16", "train.log_every=5", "train.val_every=0", "train.sample_every=0",
         "train.checkpoint_every=5", "train.keep_last=5", "train.ema_halflife_steps=5", "sample.num=16",
         "sample.steps=3"]


def small(out: Path, steps: int = 10, *extra: str):
    return load_recipe(RECIPE, [*SMALL, f"train.steps={steps}", f'train.out_dir="{out.as_posix()}"', *extra])


def tensors(run_dir: Path) -> dict:
    return load_file(latest_checkpoint(run_dir) / "tensors.safetensors")


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path):
    run_dir = tmp_path / "swiss_roll"
    run_dir.mkdir()
    with RunLock(run_dir):  # another training process holds the folder
        with pytest.raises(UserError, match=r"swiss_roll is in use by process \d+ on .*one training process"):
            train(small(tmp_path), progress=False)
    assert train(small(tmp_path), progress=False).steps == 10  # free again once the holder is gone


def test_a_full_disk_during_a_save_is_one_line_and_the_last_checkpoint_stays(tmp_path, monkeypatch):
    from polydiff.train import checkpoint as checkpoint_module

    train(small(tmp_path, 5), progress=False)
    original = checkpoint_module.write_tensors

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "write_tensors", full)
    with pytest.raises(UserError, match=r"^no space left on /\S* while saving step 10; the last complete checkpoint "
                                        r"is step_000005$"):
        train(small(tmp_path, 10), resume=True, progress=False)
    monkeypatch.setattr(checkpoint_module, "write_tensors", original)
    assert [p.name for p in list_checkpoints(tmp_path / "swiss_roll")] == ["step_000005"]
    assert not [p for p in (tmp_path / "swiss_roll").iterdir() if p.name.startswith(".tmp")]


def kill_self_during_step(monkeypatch, step: int, signum: int):
    original, calls = TrainingStep.forward, {"n": 0}

    def forward(self, x0, draws, cond):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        return original(self, x0, draws, cond)

    monkeypatch.setattr(TrainingStep, "forward", forward)


def test_sigterm_finishes_the_step_checkpoints_and_exits_143(tmp_path, monkeypatch, capsys):
    kill_self_during_step(monkeypatch, 3, signal.SIGTERM)
    sets = [*SMALL, "train.steps=10", f'train.out_dir="{tmp_path.as_posix()}"']
    assert main(["train", str(RECIPE), *[a for s in sets for a in ("--set", s)]]) == 143
    assert "interrupted by SIGTERM after step 3" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(tmp_path / "swiss_roll")] == ["step_000003"]


def damage(ckpt: Path, how: str) -> None:
    if how == "truncated tensors":
        data = (ckpt / "tensors.safetensors").read_bytes()
        (ckpt / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "garbage state":
        (ckpt / "state.json").write_text("{ not json")
    elif how == "wrong structure":
        state = json.loads((ckpt / "state.json").read_text())
        state["state"] = {"parts": [1, 2, 3]}
        (ckpt / "state.json").write_text(json.dumps(state))
    elif how == "tampered rng":
        state = json.loads((ckpt / "state.json").read_text())
        state["state"]["rng"]["python"] = "nonsense"
        (ckpt / "state.json").write_text(json.dumps(state))
    elif how == "non-integer step":
        state = json.loads((ckpt / "state.json").read_text())
        state["step"] = "ten"
        (ckpt / "state.json").write_text(json.dumps(state))
    elif how == "nan weights":
        tensors = load_file(ckpt / "tensors.safetensors")
        key = next(k for k in tensors if k.startswith("parts/model/"))
        tensors[key] = torch.full_like(tensors[key], float("nan"))
        save_file(tensors, ckpt / "tensors.safetensors")


@pytest.mark.parametrize("how", ["truncated tensors", "garbage state", "wrong structure", "tampered rng",
                                 "non-integer step", "nan weights"])
def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, how, capsys):
    straight = train(small(tmp_path / "a"), progress=False)
    train(small(tmp_path / "b"), stop_at=10, progress=False)
    run_dir = tmp_path / "b" / "swiss_roll"
    damage(run_dir / "step_000010", how)
    resumed = train(small(tmp_path / "b"), resume=True, progress=False)
    err = capsys.readouterr().err
    assert "skipped 1 damaged checkpoint(s): step_000010" in err and "resuming from step_000005" in err
    a, b = tensors(straight.run_dir), tensors(resumed.run_dir)
    assert resumed.steps == 10 and all(torch.equal(a[k], b[k]) for k in a if k.startswith("parts/"))


def test_resume_with_no_loadable_checkpoint_says_why_for_each(tmp_path):
    train(small(tmp_path, 5), progress=False)
    damage(tmp_path / "swiss_roll" / "step_000005", "garbage state")
    with pytest.raises(UserError, match=r"no checkpoint in .* loads: step_000005 \(.*not valid JSON"):
        train(small(tmp_path, 10), resume=True, progress=False)


def test_a_resumed_run_ends_with_the_same_checkpoint_random_states_included(tmp_path):
    """Weights, EMA, optimizer, scheduler and every global RNG (torch, numpy, Python) equal, bit for bit."""
    straight = train(small(tmp_path / "a"), progress=False)
    train(small(tmp_path / "b"), stop_at=5, progress=False)
    resumed = train(small(tmp_path / "b"), resume=True, progress=False)
    a, b = tensors(straight.run_dir), tensors(resumed.run_dir)
    assert set(a) == set(b) and any(k.startswith("rng/") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    state = [json.loads((latest_checkpoint(r) / "state.json").read_text())["state"] for r in (straight.run_dir,
                                                                                               resumed.run_dir)]
    assert state[0]["rng"] == state[1]["rng"]


def test_batch_transforms_are_reproduced_by_resume(tmp_path):
    extra = ('data.transforms=[{name = "random_flip", options = {dim = 0, p = 0.5}}]',)
    straight = train(small(tmp_path / "a", 10, *extra), progress=False)
    train(small(tmp_path / "b", 10, *extra), stop_at=5, progress=False)
    resumed = train(small(tmp_path / "b", 10, *extra), resume=True, progress=False)
    plain = train(small(tmp_path / "c"), progress=False)
    a, b, c = tensors(straight.run_dir), tensors(resumed.run_dir), tensors(plain.run_dir)
    params = [k for k in a if k.startswith("parts/model/")]
    assert all(torch.equal(a[k], b[k]) for k in params)
    assert not all(torch.equal(a[k], c[k]) for k in params)  # the transform did change what was trained on


def test_validation_split_over_processes_equals_one_process(tmp_path):
    from polydiff.data.examples import example_shape
    from polydiff.pipeline.build import build_denoiser
    from polydiff.train.build import build_data
    from polydiff.train.periodic import validation_loss

    cfg = small(tmp_path, 10, "data.val_fraction=0.1", "data.batch_size=8")  # 64 examples: 8 batches
    _, val = build_data(cfg)
    model = build_denoiser(cfg, example_shape(val))
    one = validation_loss(model, val, cfg, "cpu")
    for world in (2, 3):
        parts = [None] * world
        for rank in range(world):
            captured = {}

            def keep(totals, rank=rank, captured=captured):
                captured[rank] = totals.clone()
                return totals

            validation_loss(model, val, cfg, "cpu", rank, world, keep)
            parts[rank] = captured[rank]
        total = sum(parts)
        torch.testing.assert_close(float(total[:-1].mean() / total[-1]), one, rtol=1e-12, atol=0)
        assert int(total[-1]) == len(val)


def test_steps_the_loss_scaler_skips_are_counted(tmp_path, monkeypatch):
    """fp16 loss scaling skips steps whose gradients overflow; the run counts them (and the EMA does not move
    on them), so a run that skipped every step cannot pass for one that trained. (The scaler itself exists
    only on a GPU: tests/test_cuda.py trains with it; here the optimizer reports every step skipped.)"""
    import accelerate.optimizer

    monkeypatch.setattr(accelerate.optimizer.AcceleratedOptimizer, "step_was_skipped", property(lambda self: True))
    result = train(small(tmp_path, 6), progress=False)
    assert result.fp16_overflow_skipped == 6
    ema = tensors(result.run_dir)
    weights = [k for k in ema if k.startswith("parts/ema/model/")]
    init = tensors(train(small(tmp_path / "init", 1, "optim.lr=1e-30"), progress=False).run_dir)
    assert all(torch.equal(ema[k], init[k]) for k in weights)  # the EMA never moved


def test_out_of_memory_in_a_step_is_one_line(tmp_path, monkeypatch):
    def oom(self, x0, draws, cond):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 1099511627776 bytes.")

    monkeypatch.setattr(TrainingStep, "forward", oom)
    with pytest.raises(UserError, match=r"^out of memory at step 1 with data.batch_size = 32: lower it"):
        train(small(tmp_path), progress=False)


def test_a_model_too_large_for_memory_is_refused_before_it_is_allocated(tmp_path):
    with pytest.raises(UserError, match=r"model 'mlp' needs \d+\.\d GiB \(\d+\.\d+ GiB of weights x 6\), more than the .* free"):
        train(small(tmp_path, 10, "model.options.hidden=60000", "model.options.depth=1000"), progress=False)


@pytest.mark.parametrize("out_dir, phrase", [("file/below", "lies below .*file, which is a file"),
                                             ("file", "is a file, not a folder")])
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, out_dir, phrase):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=f"^train.out_dir: .*{phrase}"):
        train(small(tmp_path / out_dir), progress=False)


def test_zero_terminal_snr_trains_and_samples_finite_values(tmp_path):
    """T = 1000 linear with zero terminal SNR: the top level's c_noise was 0/0 = NaN before levels stayed apart."""
    from polydiff.pipeline import DiffusionModel

    cfg = small(tmp_path, 6, "diffusion.schedule=linear", "diffusion.zero_terminal_snr=true",
                "diffusion.parameterization=v", "diffusion.c_noise=discrete", 'objective.noise_levels={name = "discrete"}',
                "objective.weighting.name=min_snr", "sample.spacing=trailing", "sample.sampler=ddim")
    result = train(cfg, progress=False)
    assert result.nonfinite_skipped == 0
    samples = DiffusionModel.from_pretrained(result.model_dir).sample(8, steps=10)
    assert torch.isfinite(samples).all()


def test_interrupted_carries_its_signal():
    assert Interrupted("x", signal.SIGTERM).signum == signal.SIGTERM and isinstance(Interrupted("x"), KeyboardInterrupt)


def test_a_real_full_disk_is_one_line(tmp_path):
    """A tiny tmpfs as the output folder: the safetensors library reports ENOSPC in its own exception type."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    try:
        with pytest.raises(UserError, match=rf"^no space left on {mount} while "):
            train(small(mount, 10, "model.options.hidden=64"), progress=False)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_safetensors_disk_errors_become_os_errors(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from polydiff.storage import files

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No "
                              "space left on device\" }) (os error 28)")

    monkeypatch.setattr(files, "save_file", full)
    with pytest.raises(OSError) as err:
        files.write_tensors(tmp_path / "t.safetensors", {"a": torch.zeros(2)}, {})
    assert err.value.errno == errno.ENOSPC


def test_sigterm_to_the_whole_process_group_with_loader_workers(tmp_path):
    """What SLURM's scancel and timeout(1) do: the workers leave the signal to the main process, which finishes
    the step, writes a checkpoint and exits 143."""
    import subprocess
    import sys
    import time

    sets = [*SMALL, "train.steps=100000", "data.num_workers=2", "train.checkpoint_every=100000",
            f'train.out_dir="{tmp_path.as_posix()}"']
    process = subprocess.Popen([sys.executable, "-m", "polydiff.cli", "train", str(RECIPE),
                                *[a for s in sets for a in ("--set", s)]], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (tmp_path / "swiss_roll" / "scalars.csv").exists() or (tmp_path / "swiss_roll" / "scalars.csv"
                                                                     ).stat().st_size < 100:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "interrupted by SIGTERM after step" in err and "Traceback" not in err
    assert len(list_checkpoints(tmp_path / "swiss_roll")) == 1


@pytest.mark.parametrize("tamper, value", [("lr", "x"), ("betas", [0.9]), ("eps", None)])
def test_tampered_optimizer_hyperparameters_fall_back(tmp_path, tamper, value, capsys):
    train(small(tmp_path), stop_at=10, progress=False)
    ckpt = tmp_path / "swiss_roll" / "step_000010"
    state = json.loads((ckpt / "state.json").read_text())
    group = state["state"]["parts"]["optimizer"]["param_groups"][0]
    group[tamper] = value
    (ckpt / "state.json").write_text(json.dumps(state))
    train(small(tmp_path), resume=True, progress=False)
    assert "skipped 1 damaged checkpoint(s): step_000010" in capsys.readouterr().err


def test_tampered_scheduler_state_falls_back(tmp_path, capsys):
    train(small(tmp_path), stop_at=10, progress=False)
    ckpt = tmp_path / "swiss_roll" / "step_000010"
    state = json.loads((ckpt / "state.json").read_text())
    state["state"]["parts"]["lr_scheduler"]["last_epoch"] = "x"
    (ckpt / "state.json").write_text(json.dumps(state))
    train(small(tmp_path), resume=True, progress=False)
    assert "lr_scheduler.last_epoch should be a number" in capsys.readouterr().err


def test_checks_before_the_first_step(tmp_path):
    from polydiff.data.folder import NpyFolderOptions  # noqa: F401  (the data set used below)

    with pytest.raises(UserError, match=r"data.transforms\[0\]: random_flip: dim 3 is outside examples of shape"):
        train(small(tmp_path, 10, 'data.transforms=[{name = "random_flip", options = {dim = 3}}]'), progress=False)
    with pytest.raises(UserError, match=r"model 'mlp' takes the condition 'class_labels' .* gives none"):
        train(small(tmp_path, 10, "model.options.num_classes=3"), progress=False)


def test_class_labels_past_the_model_s_classes_are_refused(tmp_path):
    import numpy as np

    root = tmp_path / "data"
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(4):
            np.save(root / f"c{c}" / f"{i}.npy", np.full(2, c, dtype=np.float32))
    sets = ["data.name=npy_folder", f'data.options={{root = "{root.as_posix()}", class_folders = true}}',
            "data.batch_size=8"]
    with pytest.raises(UserError, match=r"has 4 classes, more than model.options.num_classes = 3"):
        train(small(tmp_path, 2, *sets, "model.options.num_classes=3"), progress=False)
    assert train(small(tmp_path / "ok", 2, *sets, "model.options.num_classes=4"), progress=False).steps == 2


def test_fsdp_on_one_process_trains_unsharded_with_the_same_checkpoint_format(tmp_path):
    straight = train(small(tmp_path / "a", 10, "train.fsdp=true"), progress=False)
    train(small(tmp_path / "b", 10, "train.fsdp=true"), stop_at=5, progress=False)
    resumed = train(small(tmp_path / "b", 10, "train.fsdp=true"), resume=True, progress=False)
    a, b = tensors(straight.run_dir), tensors(resumed.run_dir)
    assert any(k.startswith("parts/optimizer/state/backbone.") for k in a)  # moments keyed by parameter name
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("parts/"))
