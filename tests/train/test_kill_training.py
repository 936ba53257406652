"""SIGKILL a real ``polydiff train`` at random moments (many of them inside a checkpoint save), resume after
each kill, and end with the same final checkpoint as a run that was never interrupted, bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from polydiff.train import latest_checkpoint

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy" / "swiss_roll.toml"
SETS = ["train.steps=300", "train.checkpoint_every=2", "train.keep_last=2", "data.batch_size=64",
        "data.options.num_samples=2000", "model.options.hidden=64", "train.sample_every=0", "train.val_every=100",
        "train.log_every=10"]


def command(out: Path, resume: bool) -> list[str]:
    sets = [*SETS, f'train.out_dir="{out.as_posix()}"']
    return [sys.executable, "-m", "polydiff.cli", "train", str(RECIPE), *[a for s in sets for a in ("--set", s)],
            *(["--resume"] if resume else [])]


def _training(run_dir: Path) -> bool:
    """The run has taken steps: its log has rows beyond those of a resumed checkpoint, or a new checkpoint."""
    log = run_dir / "scalars.csv"
    return log.exists() and log.stat().st_mtime > time.time() - 1.0


@pytest.mark.slow
def test_random_kills_during_training_leave_a_bit_identical_final_checkpoint(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.run(command(tmp_path / "a", False), env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]

    rng, kills, run_dir = random.Random(7), 0, tmp_path / "b" / "swiss_roll"
    for attempt in range(40):
        resume = latest_checkpoint(run_dir) is not None
        process = subprocess.Popen(command(tmp_path / "b", resume), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        if kills < 10:
            started = time.monotonic()
            while process.poll() is None and not _training(run_dir) and time.monotonic() - started < 60:
                time.sleep(0.02)  # start-up: imports, data, model
            time.sleep(rng.uniform(0.0, 1.0))  # a random moment of training, often inside a save (every 2 steps)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
        _, err = process.communicate(timeout=600)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, err[-2000:]
    assert kills >= 5 and process.returncode == 0
    a = load_file(latest_checkpoint(tmp_path / "a" / "swiss_roll") / "tensors.safetensors")
    b = load_file(latest_checkpoint(run_dir) / "tensors.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    final_a = load_file(tmp_path / "a" / "swiss_roll" / "model" / "model.safetensors")
    final_b = load_file(run_dir / "model" / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
