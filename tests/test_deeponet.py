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
