"""Checkpoints and model folders: exact round trips, exact resume, atomicity under SIGKILL, clear errors."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from polydiff.pipeline.model_folder import write_model_folder
from polydiff.storage.guards import CheckpointError
from polydiff.train import (
    checkpoint_config,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from polydiff.train import checkpoint as checkpoint_module
from polydiff.train.checkpoint import checkpoint_name
from polydiff.train.ema import EMA

from train_helpers import SAMPLING, assert_identical, one_line_naming  # noqa: E402  (tests/train on sys.path)


def make_run(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.3), nn.SiLU(), nn.Linear(16, 3)).double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=20)
    return model, opt, sched, EMA(model, decay=0.9), torch.Generator().manual_seed(seed + 1)


def train_steps(model, opt, sched, ema, gen, steps):
    for _ in range(steps):
        x = torch.randn(8, 3, generator=gen, dtype=torch.float64) * (1 + random.random())
        x = x + torch.from_numpy(np.random.randn(8, 3))
        loss = (model(x) - x.flip(-1)).square().mean()  # dropout draws from the global torch RNG
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)


def test_resume_continues_bit_for_bit(tmp_path):
    random.seed(0)
    np.random.seed(0)
    straight = make_run(0)
    train_steps(*straight, 10)

    random.seed(0)
    np.random.seed(0)
    model, opt, sched, ema, gen = make_run(0)
    train_steps(model, opt, sched, ema, gen, 4)
    path = save_checkpoint(
        tmp_path, 4, model=model, ema=ema, optimizer=opt, lr_scheduler=sched,
        extra_state={"data": {"epoch": 0, "index": 32}}, config={"lr": 1e-2}, generators={"data": gen},
    )  # fmt: skip
    train_steps(model, opt, sched, ema, gen, 3)  # wander off: states differ from the checkpoint now

    resumed = make_run(123)  # fresh objects, different init
    model, opt, sched, ema, gen = resumed
    parts = {"model": model, "ema": ema, "optimizer": opt, "lr_scheduler": sched}
    extra = load_checkpoint(path, **parts, generators={"data": gen})
    assert extra == {"data": {"epoch": 0, "index": 32}}
    assert checkpoint_step(path) == 4 and checkpoint_config(path) == {"lr": 1e-2}
    train_steps(*resumed, 6)
    for a, b in zip(straight[0].parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert_identical(straight[3].state_dict(), ema.state_dict())
    assert_identical(straight[1].state_dict(), opt.state_dict())
    assert_identical(straight[2].state_dict(), sched.state_dict())


# ---------------------------------------------------------------- folder management


def test_keep_last_k_and_never_the_new_one(tmp_path):
    model = nn.Linear(2, 2)
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model=model, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000004", "step_000005"]
    save_checkpoint(tmp_path, 2, model=model, keep_last=2)  # an older step is still kept once written
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [2, 4, 5]
    save_checkpoint(tmp_path, 5, model=model, keep_last=2)  # re-saving a step replaces it
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [4, 5]
    assert sorted(os.listdir(tmp_path)) == ["step_000004", "step_000005"]


def test_latest_ignores_temp_and_unmarked_folders_and_next_save_cleans(tmp_path):
    model = nn.Linear(2, 2)
    assert latest_checkpoint(tmp_path / "nothing") is None
    good = save_checkpoint(tmp_path, 1, model=model)
    half = tmp_path / ".tmp-step_000009~999-deadbeef"
    half.mkdir()
    (half / "tensors.safetensors").write_bytes(b"partial")
    unmarked = tmp_path / "step_000010"
    unmarked.mkdir()
    (unmarked / "state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == good
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(unmarked, model=model)
    one_line_naming(err.value, "step_000010")
    save_checkpoint(tmp_path, 2, model=model)
    assert not half.exists() and unmarked.exists()  # ours cleaned; an unknown folder left alone


def test_old_folder_renamed_aside_is_put_back_by_next_save(tmp_path):
    model = nn.Linear(2, 2)
    old = save_checkpoint(tmp_path, 3, model=model)
    os.rename(old, tmp_path / ".trash-step_000003~1-abc")  # died between the two renames of a re-save
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, 4, model=model)
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [3, 4]


@pytest.mark.parametrize("stage", ["write_tensors", "write_json"])
def test_failed_save_leaves_previous_checkpoint_and_no_debris(tmp_path, monkeypatch, stage):
    model = nn.Linear(2, 2)
    good = save_checkpoint(tmp_path, 1, model=model)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, stage, fail)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, model=model)
    assert latest_checkpoint(tmp_path) == good and os.listdir(tmp_path) == ["step_000001"]


@pytest.mark.parametrize("part", ["model", "ema"])
def test_non_finite_weights_are_refused(tmp_path, part):
    model = nn.Linear(2, 2)
    bad = nn.Linear(2, 2)
    with torch.no_grad():
        bad.bias[1] = float("nan") if part == "model" else float("inf")
    parts = {"model": bad, "ema": model} if part == "model" else {"model": model, "ema": EMA(bad, decay=0.9)}
    name = "bias" if part == "model" else "model.bias"  # nested states are searched too
    with pytest.raises(CheckpointError, match=f"{part} entry '{name}'"):
        save_checkpoint(tmp_path, 1, **parts)
    with pytest.raises(CheckpointError, match="'bias'"):
        write_model_folder(tmp_path / "export", bad.state_dict(), {}, (2,), SAMPLING)
    assert list_checkpoints(tmp_path) == [] and os.listdir(tmp_path) == []


def test_load_checkpoint_errors_name_the_problem(tmp_path):
    path = save_checkpoint(tmp_path / "run", 1, model=nn.Linear(2, 2))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model=nn.Linear(3, 2))
    assert "model does not match" in one_line_naming(err.value, "step_000001")
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1))
    with pytest.raises(CheckpointError, match="is a run folder"):
        load_checkpoint(tmp_path / "run")
    (path / "tensors.safetensors").write_bytes((path / "tensors.safetensors").read_bytes()[:-9])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model=nn.Linear(2, 2))
    assert "truncated" in one_line_naming(err.value, "tensors.safetensors")
    pickle = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(2)}, pickle)
    with pytest.raises(CheckpointError, match="never loads pickles"):
        load_checkpoint(pickle)


# ---------------------------------------------------------------- model folders



class Blob:
    """A state-dict-bearing object that is not an nn.Module."""

    def __init__(self, tensors):
        self.tensors = tensors

    def state_dict(self):
        return self.tensors

    def load_state_dict(self, tensors):
        self.tensors = dict(tensors)


def weights_at(step: int) -> dict[str, torch.Tensor]:
    """What the writer saves at ``step`` (4 MB, so a save takes a while and kills land inside saves)."""
    return {"w": torch.arange(1_000_000, dtype=torch.float32) + step, "b": torch.full((64, 64), float(step))}


def write_forever(run_dir: str) -> None:
    """Resume after the newest checkpoint and save every step until killed."""
    torch.set_num_threads(1)
    zygote_pid = os.getppid()
    latest = latest_checkpoint(run_dir)
    step = checkpoint_step(latest) + 1 if latest else 0
    while os.getppid() == zygote_pid:  # never outlive the zygote
        model, extra, config = Blob(weights_at(step)), {"step": step}, {"step": step}
        save_checkpoint(run_dir, step, model=model, extra_state=extra, config=config, keep_last=2)
        step += 1


def zygote(run_dir: str) -> None:
    """Import torch once, then fork one writer per "fork" line (the zygote itself never computes, so
    forking is safe); a "reap" line waits for the killed writer."""
    child = 0
    for line in sys.stdin:
        if line.strip() == "fork":
            child = os.fork()
            if child == 0:
                write_forever(run_dir)
                os._exit(0)
            print(child, flush=True)
        else:
            os.waitpid(child, 0)
            print("reaped", flush=True)


def ask(process: subprocess.Popen, line: str) -> str:
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def newest_step(run_dir: Path) -> int:
    """Step of the newest complete checkpoint while a writer runs (it may prune what we just listed)."""
    latest = latest_checkpoint(run_dir)
    return int(latest.name.removeprefix("step_")) if latest else -1


def test_sigkill_at_random_moments_leaves_newest_complete_checkpoint_loadable(tmp_path):
    run_dir = tmp_path / "run"
    rng = random.Random(1234)
    command = [sys.executable, __file__, str(run_dir)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    interrupted, steps, writer = 0, [-1], None
    try:
        for _ in range(5):
            writer = int(ask(process, "fork"))
            deadline = time.monotonic() + 60
            while newest_step(run_dir) <= steps[-1]:
                assert time.monotonic() < deadline, "the writer made no progress"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))  # a random moment; saves run back to back, so likely mid-save
            os.kill(writer, signal.SIGKILL)
            assert ask(process, "reap") == "reaped"
            writer = None

            latest = latest_checkpoint(run_dir)
            blob = Blob({})
            extra = load_checkpoint(latest, model=blob, restore_rng=False)
            step = checkpoint_step(latest)
            assert extra == {"step": step} and checkpoint_config(latest) == {"step": step}
            assert_identical(blob.tensors, weights_at(step))
            assert step > steps[-1], (step, steps)
            interrupted += any(entry.name.startswith(".") for entry in run_dir.iterdir())
            steps.append(step)
    finally:
        if writer is not None:  # a failed assertion above: stop this test's writer by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer, signal.SIGKILL)
        process.kill()
        process.wait()
    print(f"newest checkpoint after each kill: {steps[1:]}; kills that left a partial save: {interrupted}/5")
    # Kills between publishing and pruning can leave more than keep_last; the next save catches up.
    save_checkpoint(run_dir, steps[-1] + 1, model=Blob({"w": torch.zeros(1)}), keep_last=2)
    assert sorted(os.listdir(run_dir)) == [checkpoint_name(steps[-1]), checkpoint_name(steps[-1] + 1)]


if __name__ == "__main__":
    zygote(sys.argv[1])

