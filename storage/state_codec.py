"""Split nested training state into tensors (for safetensors) and a JSON tree, with an exact inverse.

    flatten_state(obj) -> (tensors: dict[str, Tensor], tree: JSON-able)
    unflatten_state(tree, tensors) == obj      (values, types and dict key types all restored)

Handles what ``state_dict()`` of modules, optimizers, LR schedulers and EMA helpers hold, and the RNG
states of ``random`` / ``numpy`` / ``torch``: dicts (any hashable JSON-able keys, e.g. the int parameter
ids of an optimizer's state), lists, tuples, str, bool, None, int (arbitrary size), float (exact: JSON
keeps ``repr``; NaN / inf are tagged), numpy scalars and arrays, and tensors. Plain JSON values stay
plain; the rest becomes a tagged object ``{"__polydiff__": kind, ...}``. Tensors go under readable keys
built from their path, e.g. ``optimizer/state/0/exp_avg``. Anything else raises ``CheckpointError``
naming its path, so an unsaveable object (a lambda, a file handle) fails at save time, not at resume.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .guards import CheckpointError

TAG = "__polydiff__"


def _child(path: str, name: Any) -> str:
    return f"{path}/{name}" if path else str(name)


class _Flattener:
    """One pass over a nested object; collects tensors under unique path keys."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def tensor_key(self, path: str, tensor: torch.Tensor) -> str:
        key, n = path or "tensor", 1
        while key in self.tensors:  # a "/" inside a dict key could make two paths equal
            key, n = f"{path}#{n}", n + 1
        self.tensors[key] = tensor
        return key

    def encode(self, obj: Any, path: str) -> Any:
        if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass
            return self.encode_numpy_scalar(obj, path)
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {TAG: "float", "value": repr(obj)}
        if isinstance(obj, torch.Tensor):
            return {TAG: "tensor", "key": self.tensor_key(path, obj)}
        if isinstance(obj, np.ndarray):
            return self.encode_ndarray(obj, path)
        if isinstance(obj, (list, tuple)):
            items = [self.encode(item, _child(path, i)) for i, item in enumerate(obj)]
            return items if type(obj) is list else {TAG: "tuple", "items": items}
        if isinstance(obj, dict):
            return self.encode_dict(obj, path)
        raise CheckpointError(f"cannot save state at '{path}': unsupported type {type(obj).__name__}")

    def encode_numpy_scalar(self, scalar: np.generic, path: str) -> dict:
        value = scalar.item()
        if isinstance(value, np.generic):  # e.g. longdouble has no exact Python counterpart
            raise CheckpointError(f"cannot save numpy scalar at '{path}' of dtype {scalar.dtype}")
        return {TAG: "numpy_scalar", "dtype": scalar.dtype.str, "value": self.encode(value, path)}

    def encode_ndarray(self, array: np.ndarray, path: str) -> dict:
        try:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        except (TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"cannot save numpy array at '{path}' of dtype {array.dtype}") from err
        return {TAG: "ndarray", "key": self.tensor_key(path, tensor), "dtype": array.dtype.str}

    def encode_dict(self, obj: dict, path: str) -> dict:
        if all(type(k) is str for k in obj) and TAG not in obj:
            return {k: self.encode(v, _child(path, k)) for k, v in obj.items()}
        items = [
            [self.encode(k, _child(path, f"key{i}")), self.encode(v, _child(path, k))]
            for i, (k, v) in enumerate(obj.items())
        ]
        return {TAG: "dict", "items": items}


def flatten_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """``(tensors, tree)``: each tensor / array of ``obj`` by its path key, and a JSON tree naming them."""
    flattener = _Flattener()
    tree = flattener.encode(obj, "")
    return flattener.tensors, tree


def _tensor(tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in tensors:
        raise CheckpointError(f"state refers to tensor '{key}', which the tensor file does not hold")
    return tensors[key]


def _decode_tagged(node: dict, tensors: dict[str, torch.Tensor]) -> Any:
    kind = node[TAG]
    if kind == "tensor":
        return _tensor(tensors, node["key"])
    if kind == "ndarray":
        return _tensor(tensors, node["key"]).numpy().astype(np.dtype(node["dtype"]), copy=False)
    if kind == "numpy_scalar":
        return np.dtype(node["dtype"]).type(unflatten_state(node["value"], tensors))
    if kind == "float":
        return float(node["value"])
    if kind == "tuple":
        return tuple(unflatten_state(item, tensors) for item in node["items"])
    if kind == "dict":
        return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in node["items"]}
    raise CheckpointError(f"unknown state tag {kind!r} (written by a newer polydiff?)")


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten_state``: rebuild the nested object from its tree and tensors."""
    if isinstance(tree, list):
        return [unflatten_state(item, tensors) for item in tree]
    if isinstance(tree, dict):
        if TAG in tree:
            return _decode_tagged(tree, tensors)
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    return tree


def decode_state(tree: Any, tensors: dict[str, torch.Tensor], source: str) -> Any:
    """``unflatten_state`` of a tree read from a file: a tree that is not one this module wrote (hand-edited,
    damaged) is a ``CheckpointError`` naming ``source``, never a traceback from deep inside the decoder."""
    try:
        return unflatten_state(tree, tensors)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as err:
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise CheckpointError(f"{source}: the saved state is damaged ({detail})") from None
