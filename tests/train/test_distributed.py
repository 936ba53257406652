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

from train_helpers import free_port  # noqa: E402  (tests/train on sys.path)

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy" / "swiss_roll.toml"
SETS = ["data.batch_size=32", "data.options.num_samples=640", "model.options.hidden=32", "model.options.depth=2",
        "model.options.embed_dim=16", "train.steps=10", "train.checkpoint_every=5", "train.ema_halflife_steps=5",
        "train.sample_every=5", "train.val_every=5", "sample.num=16", "sample.steps=3"]


def train_cli(cwd: Path, out: str, processes: int, sets: list[str], flags: list[str] = ()):
    args = [a for s in [*SETS, f'train.out_dir="{out}"', *sets] for a in ("--set", s)]
    launcher = [sys.executable, "-m", "polydiff.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={free_port()}",
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

    train_cli(tmp_path, "fsdp_resumed", 2, ["train.fsdp=true"], ["--stop-at", "5"])
    train_cli(tmp_path, "fsdp_resumed", 2, ["train.fsdp=true"], ["--resume"])
    resumed = checkpoint(tmp_path / "fsdp_resumed")
    parts = [k for k in sharded if k.startswith("parts/")]
    assert any(k.startswith("parts/optimizer/") for k in parts)
    assert all(torch.equal(sharded[k], resumed[k]) for k in parts), [k for k in parts
                                                                     if not torch.equal(sharded[k], resumed[k])]


def test_sigterm_to_one_process_stops_every_process_after_the_same_step(tmp_path):
    """The processes agree each step on whether any was asked to stop, so they write one checkpoint together."""
    import signal
    import time

    sets = [a for s in [*SETS, "train.steps=100000", "train.checkpoint_every=100000", "train.sample_every=0",
                        "train.val_every=0", 'train.out_dir="run"'] for a in ("--set", s)]
    first, second = free_port(), free_port()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={first}",
                "-m", "polydiff.cli", "train", str(RECIPE), *sets]
    process = subprocess.Popen(launcher, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "swiss_roll" / "scalars.csv"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.stat().st_size > 100):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-f", "--", "-m polydiff.cli train"], capture_output=True, text=True)
    ranks = sorted(int(p) for p in workers.stdout.split() if int(p) != process.pid)
    os.kill(ranks[-1], signal.SIGTERM)  # one rank only
    _, err = process.communicate(timeout=120)
    checkpoints = sorted((tmp_path / "run" / "swiss_roll").glob("step_*"))
    assert len(checkpoints) == 1 and "interrupted by SIGTERM" in err, err[-3000:]
    again = [arg.replace(f"--master_port={first}", f"--master_port={second}") for arg in launcher]
    steps = int(checkpoints[0].name.removeprefix("step_")) + 2
    resumed = subprocess.run([*again, "--set", f"train.steps={steps}", "--resume"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
