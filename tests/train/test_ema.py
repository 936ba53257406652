"""EMA of the weights: the averaging weights follow their formulas and the average is the closed form."""

import pytest
import torch
from torch import nn

from polydiff.train.ema import EMA


def test_decay_with_warmup_and_halflife_with_rampup():
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.999)
    assert ema.beta(0) == pytest.approx(1 / 10) and ema.beta(10_000) == pytest.approx(0.999)
    ema = EMA(model, halflife_steps=100, rampup_ratio=0.05)
    assert ema.beta(10_000) == pytest.approx(0.5 ** (1 / 100))  # half-life reached
    assert ema.beta(99) == pytest.approx(0.5 ** (1 / 5))  # ramp-up: half-life 0.05 * 100 steps
    assert EMA(model, decay=0.9, warmup=False).beta(0) == 0.9
    with pytest.raises(ValueError, match="exactly one"):
        EMA(model)


def test_average_matches_the_closed_form_and_buffers_are_copied():
    model = nn.BatchNorm1d(1)  # one parameter vector and running-stat buffers
    ema = EMA(model, decay=0.5, warmup=False)
    start = model.weight.detach().clone()
    for k in range(1, 4):
        with torch.no_grad():
            model.weight.fill_(float(k))
            model.running_mean.fill_(float(10 * k))
        ema.update(model)
    # e_3 = 0.5^3 e_0 + 0.5^3 * 1 + 0.5^2 * 2 + 0.5 * 3
    want = 0.125 * start + 0.125 * 1 + 0.25 * 2 + 0.5 * 3
    torch.testing.assert_close(ema.shadow["weight"], want)
    torch.testing.assert_close(ema.shadow["running_mean"], torch.tensor([30.0]))
    restored = EMA(nn.BatchNorm1d(1), decay=0.5, warmup=False)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == 3 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    sampler = ema.copy_to(nn.BatchNorm1d(1))
    assert torch.equal(sampler.weight, ema.shadow["weight"]) and torch.equal(sampler.running_mean, torch.tensor([30.0]))


def test_loading_an_ema_of_another_model_is_refused():
    ema = EMA(nn.Linear(2, 2), decay=0.9)
    with pytest.raises(KeyError, match="do not match"):
        ema.load_state_dict({"model": {"weight": torch.zeros(2, 2)}, "num_updates": 1})
    with pytest.raises(ValueError, match="shape"):
        ema.load_state_dict({"model": {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, "num_updates": 1})

