"""Two CPU processes over gloo: FSDP2 (sharded parameters, gradients, optimizer state and EMA) follows a
one-process run with the same global batch, its checkpoints hold whole tensors, and it resumes exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from polydiff.train import latest_checkpoint

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy" / "swiss_roll.toml"
SETS = ["data.batch_size=32", "data.options.num_samples=640", "model.options.hidden=32", "model.options.depth=2",
        "model.options.embed_dim=16", "train.steps=10", "train.checkpoint_every=5", "train.ema_halflife_steps=5",
        "train.sample_every=5", "train.val_every=5", "sample.num=16", "sample.steps=3"]


def train_cli(cwd: Path, out: str, processes: int, sets: list[str], flags: list[str] = (), port: int = 29541):
    args = [a for s in [*SETS, f'train.out_dir="{out}"', *sets] for a in ("--set", s)]
    launcher = [sys.executable, "-m", "polydiff.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={port}",
        "-m", "polydiff.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "train", str(RECIPE), *args, *flags], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def checkpoint(run: Path) -> dict:
    return load_file(latest_checkpoint(run / "swiss_roll") / "tensors.safetensors")


def test_fsdp_on_two_processes_follows_one_process_and_resumes_exactly(tmp_path):
    train_cli(tmp_path, "one", 1, [])
    done = train_cli(tmp_path, "fsdp", 2, ["train.fsdp=true"])
    assert done.stdout.count("trained 10 steps") == 1  # only the main process reports
    one, sharded = checkpoint(tmp_path / "one"), checkpoint(tmp_path / "fsdp")
    weights = [k for k in one if k.startswith(("parts/model/", "parts/ema/model/"))]
    assert len(weights) > 10
    for key in weights:
        assert sharded[key].shape == one[key].shape, key  # whole tensors, not one process's shard
        torch.testing.assert_close(sharded[key], one[key], rtol=1e-4, atol=1e-5)  # up to the order of sums
    a = load_file(tmp_path / "one" / "swiss_roll" / "model" / "model.safetensors")
    b = load_file(tmp_path / "fsdp" / "swiss_roll" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    assert (tmp_path / "fsdp" / "swiss_roll" / "samples" / "step_000010.png").is_file()

    train_cli(tmp_path, "fsdp_resumed", 2, ["train.fsdp=true"], ["--stop-at", "5"], port=29542)
    train_cli(tmp_path, "fsdp_resumed", 2, ["train.fsdp=true"], ["--resume"], port=29543)
    resumed = checkpoint(tmp_path / "fsdp_resumed")
    parts = [k for k in sharded if k.startswith("parts/")]
    assert any(k.startswith("parts/optimizer/") for k in parts)
    assert all(torch.equal(sharded[k], resumed[k]) for k in parts), [k for k in parts
                                                                     if not torch.equal(sharded[k], resumed[k])]
