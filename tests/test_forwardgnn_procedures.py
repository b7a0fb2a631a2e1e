"""ForwardGNN's FF with virtual nodes (ff-vn) and SF with top-down signals to the input
(sf-top2input): what each layer reads, how prediction is made, how training updates the layers,
and both reachable from the CLI by -o config."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import run_zoo
from zoo.data import graphs
from zoo.layers.graph_forward_learning import LayerwiseGraphTraining
from zoo.models.forwardgnn import ForwardGNN


@pytest.fixture(scope="module")
def g():
    return graphs.citation_sbm(num_nodes=200, num_classes=3, num_features=24, seed=1)


def _model(procedure, **kw):
    torch.manual_seed(0)
    m = ForwardGNN(in_channels=24, num_classes=3, num_nodes=200, hidden=16, layers=3, procedure=procedure, **kw)
    return m


# ---- sf-top2input ------------------------------------------------------------------------------

def test_top2input_layers_read_the_layer_above_too():
    m = _model("sf-top2input")
    assert [c.in_channels for c in m.convs] == [24 + 16, 16 + 16, 16 + 16]
    assert m.virtual_x.shape == (3, 24)


def test_top2input_prediction_runs_test_steps_from_zeros(g):
    m = _model("sf-top2input", test_steps=3)
    m.bind(g)
    m.eval()
    n = g["x"].shape[0]
    with torch.no_grad():
        h0, ei = m.augmented(g["x"], g["edge_index"], m.train_labels)
        state = m.zero_state(h0)
        outs = []
        for _ in range(3):
            state = m.top2input_step(h0, ei, state)
            outs.append(sum(torch.softmax(m.sf_logits(h, n), -1) for h in state))
        got = m(g["x"], g["edge_index"])
    assert torch.allclose(got, outs[-1], atol=1e-6)
    assert not torch.allclose(outs[0], outs[-1])                     # the top-down signal changes the answer


def test_top2input_trains_every_layer_each_epoch_and_keeps_the_state(g):
    m = _model("sf-top2input")
    m.bind(g)
    module = LayerwiseGraphTraining(m, {"epochs_per_layer": 50})
    before = [c.lin.weight.detach().clone() for c in m.convs]
    module(g)
    assert all(not torch.equal(b, c.lin.weight) for b, c in zip(before, m.convs))
    assert module.prev_top is not None and len(module.prev_top) == 3
    assert all(not t.requires_grad for t in module.prev_top)
    assert int(m.trained_layers) == 3                                # validation reads the whole stack


def test_top2input_layer_gradients_come_from_their_own_loss(g):
    """Inputs are detached: layer 0's gradient is the gradient of layer 0's loss alone."""
    m = _model("sf-top2input")
    m.bind(g)
    n = g["x"].shape[0]
    h0, ei = m.augmented(g["x"], g["edge_index"], m.train_labels)
    h0 = F.normalize(h0, dim=-1)
    state = [torch.rand(n + 3, 16) for _ in range(3)]
    outs = m.top2input_step(h0, ei, state, detach_lower=True)
    losses = [F.cross_entropy(m.sf_logits(h, n)[g["train_mask"]], g["y"][g["train_mask"]]) for h in outs]
    sum(losses).backward()
    full = m.convs[0].lin.weight.grad.clone()
    m.zero_grad()
    outs = m.top2input_step(h0, ei, state, detach_lower=True)
    F.cross_entropy(m.sf_logits(outs[0], n)[g["train_mask"]], g["y"][g["train_mask"]]).backward()
    assert torch.allclose(full, m.convs[0].lin.weight.grad)


# ---- ff-vn -------------------------------------------------------------------------------------

def test_ffvn_is_layerwise_and_uses_fixed_virtual_nodes(g):
    m = _model("ff-vn")
    m.bind(g)
    assert [c.in_channels for c in m.convs] == [24, 16, 16]          # the label enters by edges, not features
    assert m.virtual_x.shape == (3, 24) and not any("virtual" in k for k, _ in m.named_parameters())
    module = LayerwiseGraphTraining(m, {"epochs_per_layer": 5})
    second = m.convs[1].lin.weight.detach().clone()
    module(g)
    assert torch.equal(second, m.convs[1].lin.weight) and m.convs[0].lin.weight.grad is not None


def test_ffvn_prediction_wires_unlabelled_nodes_to_each_class_in_turn(g):
    m = _model("ff-vn")
    m.bind(g)
    m.trained_layers.fill_(3)
    m.eval()
    n = g["x"].shape[0]
    known = m.train_labels
    with torch.no_grad():
        scores = m(g["x"], g["edge_index"])
        c = 2
        h, ei = m.augmented(g["x"], g["edge_index"], torch.where(known >= 0, known, torch.full_like(known, c)))
        # the candidate's edges are there: every unlabelled node is wired to class c's node (index n + c)
        unl = torch.nonzero(known < 0).flatten()
        wired = set(zip(ei[0].tolist(), ei[1].tolist()))
        assert all((int(i), n + c) in wired and (n + c, int(i)) in wired for i in unl)
        total = torch.zeros(n)
        for i in range(3):
            h = m.layer(i, h, ei)
            total += h[:n].pow(2).mean(-1) - m.theta
            h = F.normalize(h, dim=-1)
    assert torch.allclose(scores[:, c], total, atol=1e-5)


# ---- reachable from the CLI --------------------------------------------------------------------

@pytest.mark.parametrize("procedure", ["ff-vn", "sf-top2input"])
def test_cli_trains_and_evaluates_by_option(tmp_path, procedure):
    out = tmp_path / "run"
    r = run_zoo("finetune", "forwardgnn-sf-gcn", "--dataset", "karate", "--scratch", "--steps", "8",
                "-o", "epochs_per_layer=2", "-o", json.dumps({"procedure": procedure, "hidden": 16}).join(["config=", ""]),
                "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["config"]["procedure"] == procedure
    r = run_zoo("eval", str(out), "--dataset", "karate", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert 0 <= json.loads(r.stdout)["metrics"]["accuracy"] <= 100
