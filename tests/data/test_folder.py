"""Files read lazily: npy_folder reads on demand, skips and reports unreadable files, refuses empty folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from polydiff.data.examples import SKIPPED, collate
from polydiff.data.folder import NpyFolderOptions, npy_folder
from polydiff.errors import UserError


def make_folder(root: Path, classes: int = 2, per_class: int = 3, shape=(1, 4)) -> Path:
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            np.save(root / f"class_{c}" / f"{i}.npy", np.full(shape, 10 * c + i, dtype=np.float32))
    return root


def test_reads_lazily_with_class_labels_from_sub_folders(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d")
    dataset = npy_folder(NpyFolderOptions(root=str(root), class_folders=True), seed=0)
    assert len(dataset) == 6 and dataset.example_shape == (1, 4)
    reads = []
    original = dataset.read
    monkeypatch.setattr(dataset, "read", lambda path: reads.append(path.name) or original(path))
    item = dataset[4]
    assert reads == ["1.npy"] and item["cond"]["class_labels"].item() == 1 and item["x"][0, 0].item() == 11.0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "nan", "strings", "pickle"])
def test_an_unreadable_file_is_replaced_by_the_next_and_reported(tmp_path, damage):
    root = make_folder(tmp_path / "d", classes=1)
    bad = root / "class_0" / "1.npy"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:60])
    elif damage == "garbage":
        bad.write_bytes(b"not an array at all")
    elif damage == "wrong_shape":
        np.save(bad, np.zeros((2, 4), dtype=np.float32))
    elif damage == "nan":
        np.save(bad, np.full((1, 4), np.nan, dtype=np.float32))
    elif damage == "strings":
        np.save(bad, np.array([["a", "b", "c", "d"]]))
    else:
        np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # never unpickled
    dataset = npy_folder(NpyFolderOptions(root=str(root), class_folders=True), seed=0)
    item = dataset[1]
    assert item["x"][0, 0].item() == 2.0  # the next file
    assert len(item[SKIPPED]) == 1 and "1.npy" in item[SKIPPED][0]
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate, num_workers=1)))
    assert batch["x"].shape == (3, 1, 4) and len(batch[SKIPPED]) == 1  # reported from a worker process too


def test_a_folder_without_readable_files_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        npy_folder(NpyFolderOptions(root=str(tmp_path / "nope")), 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no \.npy files in"):
        npy_folder(NpyFolderOptions(root=str(tmp_path / "empty")), 0)
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"no file under .*bad could be read as a numeric array"):
        npy_folder(NpyFolderOptions(root=str(tmp_path / "bad")), 0)
    (tmp_path / "nan").mkdir()
    for i in range(3):
        np.save(tmp_path / "nan" / f"{i}.npy", np.full(2, np.nan, dtype=np.float32))  # headers fine, values not
    with pytest.raises(UserError, match=r"none of the 3 files under .*nan could be read \(first: .*NaN"):
        npy_folder(NpyFolderOptions(root=str(tmp_path / "nan")), 0)


def test_training_on_a_folder_counts_skipped_files_and_says_so(tmp_path, capsys):
    from polydiff.cli import main

    root = make_folder(tmp_path / "d", classes=1, per_class=8, shape=(2,))
    (root / "class_0" / "3.npy").write_bytes(b"corrupt")
    sets = [f'data.name=npy_folder', f'data.options={{root = "{root.as_posix()}"}}', "data.batch_size=4",
            "data.val_fraction=0", "train.steps=4", "train.sample_every=0", "train.val_every=0",
            "model.options.hidden=8", f'train.out_dir="{tmp_path.as_posix()}"']
    assert main(["train", "toy/swiss_roll", *[a for s in sets for a in ("--set", s)]]) == 0
    err = capsys.readouterr().err
    assert "unreadable example(s)" in err and "3.npy" in err


def test_the_example_shape_is_the_most_common_not_the_first(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "000.npy").write_bytes(b"garbage")
    np.save(root / "001.npy", np.zeros(3, dtype=np.float32))  # an odd one out first
    for i in range(2, 12):
        np.save(root / f"{i:03d}.npy", np.full(2, i, dtype=np.float32))
    dataset = npy_folder(NpyFolderOptions(root=str(root)), 0)
    assert dataset.example_shape == (2,)
    assert dataset[0]["x"].tolist() == [2.0, 2.0] and len(dataset[0][SKIPPED]) == 2


@pytest.mark.parametrize("array", [np.zeros(2, dtype=np.complex64), np.zeros(2, dtype=bool)])
def test_arrays_that_are_not_real_numbers_are_skipped(tmp_path, array):
    root = make_folder(tmp_path / "d", classes=1, shape=(2,))
    np.save(root / "class_0" / "0.npy", array)
    item = npy_folder(NpyFolderOptions(root=str(root), class_folders=True), 0)[0]
    assert "not real numbers" in item[SKIPPED][0]


def test_an_error_in_a_worker_reaches_the_user_as_one_line(tmp_path, capsys, monkeypatch):
    """A user error raised inside a DataLoader worker comes back wrapped in the worker's traceback; the CLI
    still prints the one line that says what is wrong."""
    import os

    from polydiff.cli import main
    from polydiff.data.folder import NpyFolder

    root = make_folder(tmp_path / "d", classes=1, per_class=4, shape=(2,))
    parent, read = os.getpid(), NpyFolder.read

    def read_only_here(self, path):  # every file turns unreadable in the worker processes
        if os.getpid() != parent:
            raise OSError("the disk went away")
        return read(self, path)

    monkeypatch.setattr(NpyFolder, "read", read_only_here)
    sets = ['data.name=npy_folder', f'data.options={{root = "{root.as_posix()}"}}', "data.batch_size=2",
            "data.val_fraction=0", "data.num_workers=1", "train.steps=3", "train.sample_every=0",
            "train.val_every=0", "model.options.hidden=8", f'train.out_dir="{tmp_path.as_posix()}"']
    code = main(["train", "toy/swiss_roll", *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("polydiff: error: none of the 4 files under") and "disk went away" in last
    assert "Traceback" not in err
