"""Data order: a pure function of (seed, step), each epoch's permutation drawn once."""

from polydiff.train import data_order


def test_the_epoch_permutation_is_drawn_once_per_epoch(monkeypatch):
    calls = []
    original = data_order._epoch_permutation
    monkeypatch.setattr(data_order, "_epoch_permutation", lambda n, seed, epoch: calls.append(epoch) or
                        original(n, seed, epoch))
    sampler = iter(data_order.StepBatchSampler(100, 8, seed=0))
    batches = [next(sampler) for _ in range(30)]  # 240 examples: epochs 0, 1, 2
    assert calls == [0, 1, 2]
    assert batches[12] == data_order.global_batch_indices(100, 8, 0, 12)  # across the epoch boundary at 100


def test_a_global_batch_that_does_not_split_over_the_processes_is_a_user_error():
    import pytest

    from polydiff.errors import UserError

    assert data_order.rank_share(16, 1, 2) == slice(8, 16)
    with pytest.raises(UserError, match="data.batch_size = 15 is the global batch: it must split evenly over the 2"):
        data_order.rank_share(15, 0, 2)
