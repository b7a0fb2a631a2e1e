"""VersatileFFN: expert slices, width path vs a per-expert dispatch, depth loops, gate, balance loss."""

import pytest
import torch
import torch.nn.functional as F

import zoo.layers.versatile_ffn as vffn
from zoo.errors import ConfigError
from zoo.layers import VersatileFFN
from zoo.layers.versatile_ffn import expert_slices


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _reference_width(layer: VersatileFFN, h: torch.Tensor) -> torch.Tensor:
    """Per-token, per-expert dispatch written from the paper: sum_k g_k (H + W_out[:, S_k] SwiGLU(W_proj[S_k] z))."""
    flat = h.reshape(-1, layer.dim)
    out = torch.zeros_like(flat)
    logits = layer.router(flat)
    top, ids = torch.topk(logits, layer.top_k, dim=-1)
    gates = torch.softmax(top, dim=-1)
    slices = expert_slices(layer.hidden_dim, layer.num_experts, layer.expert_dim)
    for t in range(flat.shape[0]):
        z = layer.norm(flat[t])
        for slot in range(layer.top_k):
            units = torch.tensor(list(slices[int(ids[t, slot])]))
            value = layer.proj.weight[units] @ z
            gate = layer.proj.weight[units + layer.hidden_dim] @ z
            expert = layer.out.weight[:, units] @ (F.silu(gate) * value)
            out[t] += gates[t, slot] * (flat[t] + expert)
    return out.reshape(h.shape)


def test_parameters_are_the_dense_ffn_plus_router_and_loop_predictor():
    dim, hidden, n, loops = 64, 256, 8, 4
    layer = VersatileFFN(dim, hidden, num_experts=n, max_loops=loops)
    dense = dim + dim * 2 * hidden + hidden * dim  # RMSNorm weight, W_proj (value|gate), W_out
    assert _count(layer) == dense + dim * n + dim * loops


def test_expert_slices():
    # the official partition: d_e = d_hidden / N, stride d_e
    assert expert_slices(4096, 8, 512) == [range(512 * k, 512 * (k + 1)) for k in range(8)]
    # the paper's general stride S = (d_h - d_e)/(N - 1): disjoint, first at 0, last ending at d_h
    s = expert_slices(100, 4, 20)
    assert s[0].start == 0 and s[-1].stop == 100
    assert all(a.stop <= b.start for a, b in zip(s, s[1:]))
    with pytest.raises(ConfigError):
        expert_slices(100, 8, 20)


@pytest.mark.parametrize("expert_dim", [None, 20])
def test_width_path_equals_per_expert_dispatch(expert_dim):
    torch.manual_seed(0)
    layer = VersatileFFN(16, 192, num_experts=8, top_k=2, expert_dim=expert_dim)
    h = torch.randn(2, 5, 16)
    weights, _, _ = layer.route(h)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 5))
    assert ((weights > 0).sum(-1) == 2).all()
    assert torch.allclose(layer.width(h, weights), _reference_width(layer, h), atol=1e-5)


def test_one_predicted_loop_mixes_three_quarters_width_and_one_ffn_pass():
    torch.manual_seed(0)
    layer = VersatileFFN(16, 64).eval()
    torch.nn.init.zeros_(layer.loop_predictor.weight)  # all logits equal -> argmax picks 1 loop
    h = torch.randn(3, 4, 16)
    expected = 0.75 * _reference_width(layer, h) + 0.25 * layer.ffn(h)
    assert torch.allclose(layer(h), expected, atol=1e-5)


def test_max_predicted_loops_is_pure_depth():
    torch.manual_seed(0)
    layer = VersatileFFN(16, 64, max_loops=4).eval()
    with torch.no_grad():
        layer.loop_predictor.weight.zero_()
        layer.loop_predictor.weight[3] = 1.0
    h = torch.randn(2, 3, 16).abs() + 0.1  # positive sums -> the 4th logit wins everywhere
    expected = layer.ffn(layer.ffn(layer.ffn(layer.ffn(h))))
    assert torch.allclose(layer(h), expected, atol=1e-5)


def test_early_exit_equals_the_static_export_graph(monkeypatch):
    torch.manual_seed(0)
    layer = VersatileFFN(16, 64).eval()
    h = torch.randn(4, 6, 16)
    early = layer(h)
    monkeypatch.setattr(vffn, "_static_graph", lambda: True)
    assert torch.allclose(early, layer(h), atol=1e-6)


def test_training_gate_is_straight_through_and_reaches_router_and_predictor():
    torch.manual_seed(0)
    layer = VersatileFFN(16, 64).train()
    h = torch.randn(2, 8, 16)
    y = layer(h)
    (y.square().mean() + layer.balance_loss).backward()
    for name in ("router", "loop_predictor", "proj", "out"):
        assert getattr(layer, name).weight.grad.abs().sum() > 0, name
    # lambda in [0, 1): with hard one-hot samples it takes the values (L - l)/L, l = 1..L
    assert 1 <= float(layer.last_mean_loops) <= 4


def test_balance_loss_is_switch_style():
    layer = VersatileFFN(8, 32, num_experts=4, top_k=1)
    logits = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 2.0]])
    ids = logits.argmax(-1, keepdim=True)
    p = torch.softmax(logits, -1).mean(0)  # uniform mean prob 1/4, each expert gets 1/4 of tokens
    assert layer.balance(logits, ids).item() == pytest.approx(4 * (0.25 * p).sum().item())
    assert layer.balance(logits, ids).item() == pytest.approx(1.0)
    skewed = torch.tensor([[3.0, 0, 0, 0]] * 4)
    assert layer.balance(skewed, skewed.argmax(-1, keepdim=True)).item() > 2.0


def test_temperature_anneals_per_training_forward_and_is_saved():
    layer = VersatileFFN(8, 32).train()
    assert layer.temperature() == pytest.approx(5.0)
    for _ in range(3):
        layer(torch.randn(1, 2, 8))
    assert layer.temperature() == pytest.approx(5.0 * 0.99984 ** 3)
    assert int(layer.state_dict()["train_steps"]) == 3
    layer.train_steps.fill_(10 ** 6)
    assert layer.temperature() == pytest.approx(0.1)
    layer.eval()(torch.randn(1, 2, 8))
    assert int(layer.train_steps) == 10 ** 6


def test_bad_configs():
    with pytest.raises(ConfigError):
        VersatileFFN(8, 32, num_experts=4, top_k=5)
    with pytest.raises(ConfigError):
        VersatileFFN(8, 32, max_loops=0)
    with pytest.raises(ConfigError):
        VersatileFFN(8, 32, num_experts=8, expert_dim=8)

