"""Checkpoints and model folders: exact round trips, exact resume, atomicity under SIGKILL, clear errors."""

from __future__ import annotations

import contextlib
import json
import math
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

from polydiff.train import (
    CheckpointError,
    capture_rng_state,
    checkpoint_config,
    checkpoint_step,
    flatten_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_pretrained_files,
    restore_rng_state,
    save_checkpoint,
    save_pretrained,
    unflatten_state,
)
from polydiff.train import checkpoint as checkpoint_module
from polydiff.train.checkpoint import checkpoint_name

SAMPLING = {"schedule": {"name": "edm"}, "parameterization": "edm", "sampler": "heun", "steps": 18}


def assert_identical(a, b, path="root"):
    """Equal values *and* types, recursively; tensors / arrays bit for bit (NaN == NaN)."""
    assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            assert_identical(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def one_line_naming(err: CheckpointError, name: str) -> str:
    message = str(err)
    assert "\n" not in message and name in message, message
    return message


# ---------------------------------------------------------------- state codec


def test_codec_round_trips_nested_state_exactly(tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = {
        "ints": {0: 1, 7: 2**80, -3: -5},
        "floats": [0.1, 1e-300, float("nan"), float("inf"), -float("inf"), -0.0],
        "tuple_key": {(1, "a"): (2, [3, None, True])},
        "__polydiff__": "a user key equal to the tag",
        "numpy": (np.float64(0.1), np.int32(-7), np.bool_(True), np.arange(5, dtype=np.uint32)),
        "tensors": [
            torch.randn(3, 4, generator=gen, dtype=torch.float64),
            torch.randn(2, generator=gen).to(torch.bfloat16),
            torch.tensor(3.5),
            torch.arange(6).view(2, 3).t(),  # non-contiguous view
            torch.zeros(0, 4),
            torch.tensor([True, False]),
        ],
        "text": "step/with/slashes",
    }
    state["tensors"].append(state["tensors"][0][1])  # aliases storage of another entry
    tensors, tree = flatten_state(state)
    json.dumps(tree, allow_nan=False)  # strict JSON, no NaN literals
    assert_identical(unflatten_state(json.loads(json.dumps(tree)), tensors), state)
    path = save_checkpoint(tmp_path, 0, extra_state=state)  # and through the files on disk
    assert_identical(load_checkpoint(path, restore_rng=False), state)


def test_codec_names_the_path_of_an_unsupported_value():
    with pytest.raises(CheckpointError, match="extra/schedule_fn"):
        flatten_state({"extra": {"schedule_fn": lambda t: t}})


def test_python_and_numpy_rng_states_survive_json_exactly():
    random.gauss(0, 1)  # python caches the second Box-Muller value
    np.random.randn(1)  # numpy too (has_gauss = 1)
    state = {"python": random.getstate(), "numpy": np.random.get_state()}
    tensors, tree = flatten_state(state)
    restored = unflatten_state(json.loads(json.dumps(tree)), tensors)
    assert_identical(restored, state)
    expected = (random.gauss(0, 1), np.random.randn(3))
    random.setstate(restored["python"])
    np.random.set_state(restored["numpy"])
    assert (random.gauss(0, 1), *np.random.randn(3)) == (expected[0], *expected[1])


# ---------------------------------------------------------------- RNG and exact resume


def draws(gen: torch.Generator):
    return (torch.randn(4), random.random(), np.random.rand(2).tolist(), torch.rand(3, generator=gen))


def test_rng_states_restore_through_a_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(3)
    random.gauss(0, 1)
    torch.randn(5, generator=gen)
    path = save_checkpoint(tmp_path, 0, generators={"noise": gen})
    expected = draws(gen)
    draws(gen)  # move every generator on
    load_checkpoint(path, generators={"noise": gen})
    got = draws(gen)
    assert got[1:3] == expected[1:3]
    assert torch.equal(got[0], expected[0]) and torch.equal(got[3], expected[3])


def test_capture_restore_in_memory_and_unknown_generator():
    state = capture_rng_state()
    first = torch.randn(3)
    restore_rng_state(state)
    assert torch.equal(torch.randn(3), first)
    with pytest.raises(CheckpointError, match="'data'"):
        restore_rng_state(state, {"data": torch.Generator()})


class EMA:
    """Exponential moving average of parameters, with a state_dict (decay and update count included)."""

    def __init__(self, model: nn.Module, decay: float = 0.9):
        self.decay, self.updates = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model: nn.Module) -> None:
        self.updates += 1
        for k, v in model.state_dict().items():
            self.shadow[k].lerp_(v, 1 - self.decay)

    def state_dict(self):
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state):
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


def make_run(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.3), nn.SiLU(), nn.Linear(16, 3)).double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=20)
    return model, opt, sched, EMA(model), torch.Generator().manual_seed(seed + 1)


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
    parts = {"model": bad, "ema": model} if part == "model" else {"model": model, "ema": EMA(bad)}
    name = "bias" if part == "model" else "shadow.bias"  # nested states are searched too
    with pytest.raises(CheckpointError, match=f"{part} entry '{name}'"):
        save_checkpoint(tmp_path, 1, **parts)
    with pytest.raises(CheckpointError, match="'bias'"):
        save_pretrained(tmp_path / "export", bad.state_dict(), {}, SAMPLING)
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


def test_pretrained_round_trip_and_resave_keeps_user_files(tmp_path):
    model = nn.Linear(3, 2)
    model.tied = model.weight  # aliases are stored (as copies) without complaint
    state = {**model.state_dict(), "alias": model.weight.detach()[0]}
    config = {"backbone": "mlp", "channels": [8, 16], "sigma_data": 0.5}
    folder = save_pretrained(tmp_path / "m", state, config, SAMPLING)
    (folder / "README.md").write_text("my model")
    save_pretrained(folder, state, config, {**SAMPLING, "steps": 30})
    loaded, cfg, sampling = load_pretrained_files(folder)
    assert_identical(dict(sorted(loaded.items())), {k: state[k].detach() for k in sorted(state)})
    assert cfg == config and sampling["steps"] == 30 and sampling["sampler"] == "heun"
    assert (folder / "README.md").read_text() == "my model"
    marker = json.loads((folder / "config.json").read_text())
    assert marker["polydiff_format"] == 1 and "polydiff_version" in marker
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_pretrained_refuses_foreign_folder_and_incomplete_sampling(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(CheckpointError, match="not a polydiff model folder"):
        save_pretrained(tmp_path, {"w": torch.zeros(2)}, {}, SAMPLING)
    assert (tmp_path / "notes.txt").exists()
    with pytest.raises(CheckpointError, match="lacks steps"):
        no_steps = {k: v for k, v in SAMPLING.items() if k != "steps"}
        save_pretrained(tmp_path / "m", {"w": torch.zeros(2)}, {}, no_steps)


def broken_folders(tmp_path: Path):
    """(path handed to the loader, file the error must name, phrase it must contain) per failure."""
    good = save_pretrained(tmp_path / "good", {"w": torch.arange(1000.0)}, {"a": 1}, SAMPLING)
    pickle = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle)
    config, weights = "config.json", "model.safetensors"

    def variant(name, file, content=None):
        """A copy of the good folder with ``file`` replaced by ``content`` (bytes) or deleted (None)."""
        folder = tmp_path / name
        folder.mkdir()
        for entry in good.iterdir():
            (folder / entry.name).write_bytes(entry.read_bytes())
        (folder / file).unlink()
        if content is not None:
            (folder / file).write_bytes(content)
        return folder

    hf_style = variant("hf_style", weights)
    (hf_style / "pytorch_model.bin").write_bytes(pickle.read_bytes())
    truncated = (good / weights).read_bytes()[:-100]
    return [
        (tmp_path / "missing", "missing", "does not exist"),
        (variant("no_config", config), config, "is missing"),
        (variant("no_weights", weights), weights, "is missing"),
        (variant("unmarked", config, b'{"a": 1}'), "unmarked", "not a polydiff model folder"),
        (variant("bad_json", config, b'{"polydiff_format": 1,'), config, "not valid JSON"),
        (variant("truncated", weights, truncated), weights, "truncated"),
        (variant("garbage", weights, bytes(64)), weights, "not valid safetensors"),
        (pickle, "model.pt", "never loads pickles"),
        (hf_style, "pytorch_model.bin", "never loads pickles"),
        (variant("renamed_pickle", weights, pickle.read_bytes()), weights, "never loads pickles"),
    ]


def test_load_pretrained_errors_are_one_line_and_name_the_file(tmp_path):
    for path, name, phrase in broken_folders(tmp_path):
        with pytest.raises(CheckpointError) as err:
            load_pretrained_files(path)
        assert phrase in one_line_naming(err.value, name), (path, str(err.value))


# ---------------------------------------------------------------- SIGKILL at random moments


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
