"""Assertions shared by the train tests."""

from __future__ import annotations

import math

import numpy as np
import torch

from polydiff.storage.guards import CheckpointError

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


def free_port() -> int:
    """A TCP port nobody listens on now, for torchrun's rendezvous (fixed ports collide between runs)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_line_naming(err: CheckpointError, name: str) -> str:
    message = str(err)
    assert "\n" not in message and name in message, message
    return message


# ---------------------------------------------------------------- state codec
