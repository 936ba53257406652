"""Streaming data: the order is the stream's whatever the number of workers and processes, a resumed run
starts at the right example, unreadable shards are skipped and reported."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from polydiff.data.examples import SKIPPED
from polydiff.data.npy_shards import NpyShardsOptions, npy_shards


def make_shards(root: Path, sizes=(5, 3, 7, 4)) -> Path:
    root.mkdir()
    start = 0
    for s, n in enumerate(sizes):
        np.save(root / f"shard_{s:02d}.npy", np.arange(start, start + n, dtype=np.float32)[:, None])
        start += n
    return root


def values(dataset, workers: int, count: int) -> list[float]:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [item["x"].item() for item in itertools.islice(loader, count)]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_order_is_the_same_with_any_number_of_workers(tmp_path):
    dataset = npy_shards(NpyShardsOptions(root=str(make_shards(tmp_path / "s"))), seed=3)
    dataset.position(0, 4, 0, 1)
    alone = values(dataset, 0, 45)
    assert sorted(alone[:19]) == list(range(19)) and sorted(alone[19:38]) == list(range(19))  # epochs
    assert alone[:19] != alone[19:38]  # a new shard order each epoch
    assert values(dataset, 2, 45) == alone == values(dataset, 3, 45)


def test_processes_take_their_share_of_each_global_batch_and_resume_at_the_right_example(tmp_path):
    root = make_shards(tmp_path / "s")
    stream = values(npy_shards(NpyShardsOptions(root=str(root)), seed=1).position(0, 4, 0, 1), 0, 40)
    ranks = [values(npy_shards(NpyShardsOptions(root=str(root)), seed=1).position(0, 4, r, 2), 1, 20) for r in (0, 1)]
    for k in range(10):  # global batch k = ranks' halves, in order
        assert ranks[0][2 * k : 2 * k + 2] + ranks[1][2 * k : 2 * k + 2] == stream[4 * k : 4 * k + 4]
    resumed = values(npy_shards(NpyShardsOptions(root=str(root)), seed=1).position(3, 4, 0, 1), 2, 20)
    assert resumed == stream[12:32]


def test_an_unreadable_shard_is_skipped_and_reported(tmp_path):
    root = make_shards(tmp_path / "s", sizes=(3, 3))
    (root / "shard_01.npy").write_bytes(b"garbage")
    dataset = npy_shards(NpyShardsOptions(root=str(root), shuffle_shards=False), seed=0).position(0, 1, 0, 1)
    items = list(itertools.islice(DataLoader(dataset, batch_size=None), 4))
    assert [it["x"].item() for it in items] == [0.0, 1.0, 2.0, 0.0]
    assert SKIPPED in items[3] and "shard_01.npy" in items[3][SKIPPED][0]


def test_training_on_a_stream_resumes_exactly(tmp_path, straight_and_resumed):
    root = tmp_path / "s"
    root.mkdir()
    rng = np.random.default_rng(0)
    for s in range(3):
        np.save(root / f"{s}.npy", rng.normal(size=(40, 2)).astype(np.float32))
    a, b, _, _ = straight_and_resumed(["data.name=npy_shards", f'data.options={{root = "{root.as_posix()}"}}',
                                       "data.batch_size=16", "data.num_workers=2", "train.steps=8",
                                       "train.checkpoint_every=4", "train.sample_every=0", "train.val_every=0",
                                       "model.options.hidden=8", "train.ema_halflife_steps=2"], stop=4)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("parts/model", "parts/ema", "parts/optimizer")))


def test_shards_of_another_shape_are_skipped_and_all_unreadable_is_one_error(tmp_path):
    from polydiff.data.examples import example_shape
    from polydiff.errors import UserError

    root = make_shards(tmp_path / "s", sizes=(3, 3, 3))
    np.save(root / "shard_01.npy", np.zeros((3, 5), dtype=np.float32))  # rows of shape (5,), not (1,)
    dataset = npy_shards(NpyShardsOptions(root=str(root), shuffle_shards=False), seed=0).position(0, 1, 0, 1)
    assert example_shape(dataset) == (1,)
    items = list(itertools.islice(DataLoader(dataset, batch_size=None), 7))
    # each bad row is replaced by the next key that loads, the first row of shard 2, and reported
    assert [it["x"].item() for it in items] == [0.0, 1.0, 2.0, 6.0, 6.0, 6.0, 6.0]
    assert [len(it.get(SKIPPED, [])) for it in items] == [0, 0, 0, 3, 2, 1, 0]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no file under .* could be read as a numeric array"):
        npy_shards(NpyShardsOptions(root=str(bad)), seed=0)
