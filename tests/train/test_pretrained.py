"""Model folders: save_pretrained / load_pretrained_files round trips and one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from polydiff.pipeline.model_folder import read_model_folder, write_model_folder
from polydiff.storage.guards import CheckpointError

from train_helpers import SAMPLING, assert_identical, one_line_naming  # noqa: E402  (tests/train on sys.path)


def test_pretrained_round_trip_and_resave_keeps_user_files(tmp_path):
    model = nn.Linear(3, 2)
    model.tied = model.weight  # aliases are stored (as copies) without complaint
    state = {**model.state_dict(), "alias": model.weight.detach()[0]}
    config = {"backbone": "mlp", "channels": [8, 16], "sigma_data": 0.5}
    folder = write_model_folder(tmp_path / "m", state, config, (3,), SAMPLING)
    (folder / "README.md").write_text("my model")
    write_model_folder(folder, state, config, (3,), {**SAMPLING, "steps": 30})
    files = read_model_folder(folder)
    assert_identical(dict(sorted(files.state.items())), {k: state[k].detach() for k in sorted(state)})
    assert files.config == config and files.sampling["steps"] == 30 and files.sampling["sampler"] == "heun"
    assert files.example_shape == (3,)
    assert (folder / "README.md").read_text() == "my model"
    marker = json.loads((folder / "config.json").read_text())
    assert marker["polydiff_format"] == 2 and "polydiff_version" in marker
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_pretrained_refuses_foreign_folder_and_incomplete_sampling(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(CheckpointError, match="not a polydiff model folder"):
        write_model_folder(tmp_path, {"w": torch.zeros(2)}, {}, (2,), SAMPLING)
    assert (tmp_path / "notes.txt").exists()
    with pytest.raises(CheckpointError, match="lacks steps"):
        no_steps = {k: v for k, v in SAMPLING.items() if k != "steps"}
        write_model_folder(tmp_path / "m", {"w": torch.zeros(2)}, {}, (2,), no_steps)


def broken_folders(tmp_path: Path):
    """(path handed to the loader, file the error must name, phrase it must contain) per failure."""
    good = write_model_folder(tmp_path / "good", {"w": torch.arange(1000.0)}, {"a": 1}, (1000,), SAMPLING)
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
        (variant("deep_json", config, b"[" * 100_000 + b"]" * 100_000), config, "nested too deeply"),
        (variant("latin1_json", config, '{"name": "caf\xe9"}'.encode("latin-1")), config, "UTF-8"),
        (variant("truncated", weights, truncated), weights, "truncated"),
        (variant("garbage", weights, bytes(64)), weights, "not valid safetensors"),
        (pickle, "model.pt", "never loads pickles"),
        (hf_style, "pytorch_model.bin", "never loads pickles"),
        (variant("renamed_pickle", weights, pickle.read_bytes()), weights, "never loads pickles"),
    ]


def test_load_pretrained_errors_are_one_line_and_name_the_file(tmp_path):
    for path, name, phrase in broken_folders(tmp_path):
        with pytest.raises(CheckpointError) as err:
            read_model_folder(path)
        assert phrase in one_line_naming(err.value, name), (path, str(err.value))


# ---------------------------------------------------------------- SIGKILL at random moments


