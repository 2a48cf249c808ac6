"""Weight EMA for SFT (pure torch, no Ray)."""

import pytest
import torch

from rl_align.sft.ema import WeightEma


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_ema_follows_the_formula_with_warmup():
    net = _net()
    ema = WeightEma(net, decay=0.9)
    w = [net[0].weight.detach().clone()]
    expect = w[0].clone()
    for t in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.9, (1 + t) / (10 + t))
        assert ema.rate() == pytest.approx(d)
        ema.update(net)
        expect = d * expect + (1 - d) * net[0].weight.detach()
    assert torch.allclose(ema.shadow["0.weight"], expect, atol=1e-6)
    assert ema.updates == 30


def test_applied_swaps_in_the_average_and_restores_the_trained_weights():
    net = _net()
    ema = WeightEma(net, decay=0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    ema.update(net)
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 3)
    with ema.applied(net):
        assert torch.equal(net[0].weight, ema.shadow["0.weight"])
        y_avg = net(x)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in trained.items())
    assert not torch.allclose(net(x), y_avg)


def test_applied_restores_even_when_the_body_raises():
    net = _net()
    ema = WeightEma(net, decay=0.5)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    before = net[0].weight.detach().clone()
    with pytest.raises(RuntimeError):
        with ema.applied(net):
            raise RuntimeError("validation failed")
    assert torch.equal(net[0].weight, before)


def test_state_round_trip_and_mismatch_errors():
    net = _net()
    ema = WeightEma(net, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            net[2].bias.add_(1.0)
        ema.update(net)
    fresh = WeightEma(_net(1), decay=0.99)
    fresh.load_state_dict(ema.state_dict())
    assert fresh.updates == 3
    assert all(torch.equal(fresh.shadow[k], ema.shadow[k]) for k in ema.shadow)
    other = WeightEma(torch.nn.Linear(3, 4), decay=0.99)
    with pytest.raises(ValueError, match="does not match the model"):
        other.load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEma(net, decay=1.0)


@pytest.mark.parametrize("sft, msg", [
    ({"ema_decay": 1.0}, "sft.ema_decay: expected a value ≥ 0 and < 1"),
    ({"ema_decay": 0.99, "zero_stage": 3}, "sft.ema_decay: needs the full weights on every worker: use zero_stage ≤ 2"),
    ({"zero_stage": 4}, "sft.zero_stage: expected a value ≥ 0 and ≤ 3"),
    ({"batch_size": 63, "num_workers": 2}, "sft.batch_size: must be a multiple of num_workers"),
])
def test_bad_sft_settings_fail_when_the_config_loads(sft, msg):
    from rl_align.config import ConfigError, RunConfig, from_dict

    with pytest.raises(ConfigError, match=msg):
        from_dict(RunConfig, {"sft": sft}, source="test")
