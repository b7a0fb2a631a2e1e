import torch

import zoo
from zoo.models.deeponet import deeponet


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_antiderivative_net_has_the_papers_7401_parameters():
    m = deeponet()
    assert n_params(m) == 7_401
    out = m(torch.randn(5, 100), torch.rand(7, 1))
    assert out.shape == (5, 7)
    assert m(torch.randn(5, 100), torch.rand(5, 7, 1)).shape == (5, 7)


def test_darcy_net_has_682753_parameters():
    m = zoo.create_model("deeponet", branch="cnn", branch_layers=[128, 128], trunk_layers=[128] * 4,
                         coord_dim=2, grid=29)
    assert n_params(m) == 682_753
    out = m(torch.rand(3, 1, 29, 29), torch.rand(3, 841, 2))
    assert out.shape == (3, 841)


def test_trunk_last_layer_is_activated_and_branch_last_is_linear():
    m = deeponet()
    assert isinstance(m.trunk[-1], torch.nn.ReLU)
    assert isinstance(m.branch[-1], torch.nn.Linear)


def test_pretrained_darcy_reproduces_the_registry_metric():
    """The number in registry.yaml is what our own eval measures on the pinned weights."""
    import pytest
    from zoo import registry

    ck = registry.load_registry().models["deeponet"].checkpoints["darcy"]
    res = zoo.evaluate("deeponet", dataset="darcy")
    assert res["model"] == "deeponet.darcy"
    assert res["metrics"]["rel_l2"] == pytest.approx(ck.metrics["rel_l2"], rel=1e-4)
    assert res["metrics"]["rel_l2"] < 0.08


def test_create_model_pretrained_loads_pinned_weights():
    m = zoo.create_model("deeponet.antiderivative", pretrained=True)
    x = torch.linspace(0, 1, 100)[None]
    # u = 1 everywhere: s(y) = y
    y = torch.tensor([[0.25], [0.5], [0.75]])
    out = m(torch.ones(1, 100), y)[0]
    assert torch.allclose(out, y[:, 0], atol=0.02)
    del x
