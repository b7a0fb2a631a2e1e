"""NobleLinear: the branch, CosNet, the official initialisation and the learning-rate multipliers."""

import math

import pytest
import torch
from torch import nn

from zoo.errors import ConfigError, UnknownNameError
from zoo.layers import NobleLinear, noble_param_groups
from zoo.layers.noble import CosNet, LearnableCosine, lr_multipliers, noble_extra_parameters


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_extra_parameters_follow_the_formula():
    # r(in+out) + r^2 + 6r: Down weight+bias, Up weight, the r x r mix with bias, two (freq, phase) pairs
    assert noble_extra_parameters(768, 768, 32) == 32 * 1536 + 32 * 32 + 6 * 32 == 50_368
    for fan_in, fan_out, rank, bias in [(768, 768, 32, True), (768, 3072, 32, False), (64, 16, 8, True)]:
        layer = NobleLinear(fan_in, fan_out, bias=bias, rank=rank)
        plain = fan_in * fan_out + (fan_out if bias else 0)
        assert _count(layer) == plain + noble_extra_parameters(fan_in, fan_out, rank)


def test_official_initialisation():
    torch.manual_seed(0)
    layer = NobleLinear(1024, 1024, rank=64)
    assert layer.linear.weight.std().item() == pytest.approx(0.5 / math.sqrt(1024), rel=0.02)
    assert layer.down.weight.std().item() == pytest.approx(1 / math.sqrt(1024), rel=0.02)
    assert layer.up.weight.std().item() == pytest.approx(0.01 / math.sqrt(64), rel=0.05)
    mix = layer.activation.mix
    assert mix.weight.std().item() == pytest.approx(0.5 / math.sqrt(64), rel=0.05)
    assert torch.count_nonzero(layer.linear.bias) == 0 and torch.count_nonzero(layer.down.bias) == 0
    for cos in (layer.activation.first, layer.activation.second):
        assert 0.8 <= cos.frequency.min() and cos.frequency.max() <= 1.2
        assert cos.phase.std().item() == pytest.approx(0.1, rel=0.4)
    # the two cosines are independent draws
    assert not torch.equal(layer.activation.first.frequency, layer.activation.second.frequency)


def test_branch_starts_small_but_not_zero():
    torch.manual_seed(0)
    layer = NobleLinear(256, 256, rank=32)
    x = torch.randn(64, 256)
    main, branch = layer.linear(x), layer.branch(x)
    ratio = (branch.norm() / main.norm()).item()
    assert 0 < ratio < 0.05
    assert torch.allclose(layer(x), main + branch)


def test_cosnet_computes_two_cosines_around_a_linear():
    torch.manual_seed(0)
    net = CosNet(8)
    z = torch.randn(5, 8)
    first, second = net.first, net.second
    inner = torch.cos(first.frequency * z + first.phase) @ net.mix.weight.T + net.mix.bias
    expected = torch.cos(second.frequency * inner + second.phase)
    assert torch.allclose(net(z), expected, atol=1e-6)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    layer = NobleLinear(32, 48, rank=8)
    layer(torch.randn(4, 7, 32)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_rank_must_fit_the_layer():
    with pytest.raises(ConfigError, match="larger than the layer width"):
        NobleLinear(64, 16, rank=32)
    with pytest.raises(ConfigError, match="positive integer"):
        NobleLinear(64, 64, rank=0)
    with pytest.raises(UnknownNameError):
        NobleLinear(64, 64, rank=8, activation="sine")


def test_learning_rate_multipliers():
    layer = NobleLinear(768, 3072, rank=32)
    mults = layer.lr_multipliers()
    ratio = 768 / 32  # min(in, out) / r
    assert mults["up.weight"] == pytest.approx(ratio ** 0.4)
    assert mults["activation.mix.weight"] == pytest.approx(ratio ** 0.5)
    assert mults["activation.first.frequency"] == 2.0 and mults["activation.second.phase"] == 4.0
    assert "linear.weight" not in mults and "down.weight" not in mults


def test_param_groups_carry_the_multipliers():
    model = nn.Sequential(NobleLinear(64, 128, rank=16), nn.GELU(), nn.Linear(128, 10))
    groups = noble_param_groups(model, lr=1e-3, weight_decay=0.1)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert len(by_param) == sum(1 for _ in model.parameters())  # each parameter in exactly one group
    mults = lr_multipliers(model)
    for name, p in model.named_parameters():
        group = by_param[id(p)]
        assert group["lr"] == pytest.approx(1e-3 * mults.get(name, 1.0))
        assert group["weight_decay"] == (0.1 if p.dim() >= 2 else 0.0)
    assert mults["0.up.weight"] == pytest.approx((64 / 16) ** 0.4)
    opt = torch.optim.AdamW(groups, lr=1e-3)
    model(torch.randn(3, 64)).sum().backward()
    opt.step()


def test_noble_fits_a_nonlinear_map_a_linear_layer_cannot():
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = torch.cos(2 * x[:, :1]) * torch.ones(1, 4)  # a linear map leaves ~0.45 MSE here

    def fit(layer):
        opt = torch.optim.AdamW(noble_param_groups(layer, lr=1e-2), lr=1e-2)
        for _ in range(300):
            opt.zero_grad()
            loss = (layer(x) - y).square().mean()
            loss.backward()
            opt.step()
        return loss.item()

    torch.manual_seed(1)
    linear_loss = fit(nn.Linear(8, 4))
    torch.manual_seed(1)
    noble_loss = fit(NobleLinear(8, 4, rank=4))
    assert linear_loss > 0.4 and noble_loss < 0.01


def test_meta_device_build_counts_without_memory():
    with torch.device("meta"):
        layer = NobleLinear(4096, 4096, rank=64)
    assert layer.linear.weight.is_meta
    assert _count(layer) == 4096 * 4096 + 4096 + noble_extra_parameters(4096, 4096, 64)
    assert isinstance(layer.activation.first, LearnableCosine)


def test_speedup_benchmark_reports_its_measurements():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "noble_speedup.py"
    spec = importlib.util.spec_from_file_location("noble_speedup", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--steps", "4", "--eval-every", "2", "--eval-windows", "4", "--warmup", "1"])
    assert result["params"]["overhead_pct"] == pytest.approx(100 * (1_259_904 / 1_071_232 - 1))
    times = result["step_time_s"]
    assert times["gpt-mini"] > 0 and times["noble-gpt-mini"] > 0
    assert [s for s, _ in result["curves"]["gpt-mini"]] == [0, 2, 4]
    assert result["baseline_final_eval_loss"] == result["curves"]["gpt-mini"][-1][1]
    if result["noble_steps_to_target"] is not None:
        assert result["steps_speedup"] == 4 / result["noble_steps_to_target"]
