"""The state codec and RNG capture: nested training state to safetensors + JSON and back, exactly."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from polydiff.storage.guards import CheckpointError
from polydiff.storage.state_codec import flatten_state, unflatten_state
from polydiff.train import load_checkpoint, save_checkpoint
from polydiff.train.rng import capture_rng_state, restore_rng_state

from train_helpers import assert_identical  # noqa: E402  (tests/train on sys.path)




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


