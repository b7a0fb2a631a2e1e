"""ForwardGNN's FF with virtual nodes (ff-vn) and SF with top-down signals (sf-top2input, sf-top2loss):
what each layer reads, the official update schedule, how prediction is made, how training updates
the layers, resuming with the top-down states, and reachable from the CLI by -o config."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import run_zoo
from zoo.data import graphs
from zoo.layers.graph_forward_learning import LayerwiseGraphTraining, top_down_step
from zoo.models.forwardgnn import ForwardGNN


@pytest.fixture(scope="module")
def g():
    return graphs.citation_sbm(num_nodes=200, num_classes=3, num_features=24, seed=1)


def _model(procedure, **kw):
    torch.manual_seed(0)
    m = ForwardGNN(in_channels=24, num_classes=3, num_nodes=200, hidden=16, layers=3, procedure=procedure, **kw)
    return m


# ---- the top-down schedule ---------------------------------------------------------------------

@pytest.mark.parametrize("alternating", [True, False])
def test_top_down_step_follows_the_official_schedule(alternating):
    """Alternating: even layers from the previous step, then odd ones on the even layers' new outputs;
    otherwise every layer from the previous step's states."""
    old = ["x", "o0", "o1", "o2", "o3", "top"]
    seen = []

    def layer(j, below, above):
        seen.append((j, below, above))
        return f"n{j}"

    new = top_down_step(old, alternating, layer)
    assert new == ["x", "n0", "n1", "n2", "n3", "top"]
    if alternating:
        assert seen == [(0, "x", "o1"), (2, "o1", "o3"), (1, "n0", "n2"), (3, "n2", "top")]
    else:
        assert seen == [(0, "x", "o1"), (1, "o0", "o2"), (2, "o1", "o3"), (3, "o2", "top")]


# ---- sf-top2input ------------------------------------------------------------------------------

def test_top2input_layers_read_the_state_above_and_labels_sit_on_top():
    m = _model("sf-top2input")
    assert [c.in_channels for c in m.convs] == [24 + 16, 16 + 16, 16 + 3]   # the top layer reads the labels
    assert m.virtual_x.shape == (3, 24) and m.alternating_update            # the official script's schedule
    y = m.label_state(torch.tensor([2, -1, 0]))
    assert torch.allclose(y, torch.tensor([[0, 0, 1], [1 / 3, 1 / 3, 1 / 3], [1, 0, 0],
                                           [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]))


def test_top2input_prediction_is_the_official_time_stepped_eval(g):
    """Bottom-up states (zeros on top), then test_steps alternating steps (layers 0 and 2, then 1);
    the softmax of every layer summed over the steps from the third on."""
    m = _model("sf-top2input", test_steps=4)
    m.bind(g)
    m.eval()
    n = g["x"].shape[0]
    with torch.no_grad():
        h, ei = m.augmented(g["x"], g["edge_index"], m.train_labels)
        lay = lambda j, a, b: F.relu(m.convs[j](torch.cat([F.normalize(a, dim=-1), F.normalize(b, dim=-1)], -1), ei))
        z = torch.zeros(n + 3, 16)
        s1 = lay(0, h, z)
        s2 = lay(1, s1, z)
        s3 = lay(2, s2, torch.zeros(n + 3, 3))
        top = m.label_state(m.train_labels)
        want = 0
        for t in range(4):
            n1, n3 = lay(0, h, s2), lay(2, s2, top)
            n2 = lay(1, n1, n3)
            s1, s2, s3 = n1, n2, n3
            if t >= 2:
                want = want + sum(torch.softmax(m.sf_logits(o, n), -1) for o in (n1, n3, n2))
        got = m(g["x"], g["edge_index"])
    assert torch.allclose(got, want, atol=1e-5)


def test_top2input_trains_every_layer_each_epoch_and_keeps_the_states(g):
    m = _model("sf-top2input")
    m.bind(g)
    module = LayerwiseGraphTraining(m, {"epochs_per_layer": 50})
    before = [c.lin.weight.detach().clone() for c in m.convs]
    module(g)
    assert all(not torch.equal(b, c.lin.weight) for b, c in zip(before, m.convs))
    assert len(module.opts) == 3                                     # one Adam per layer
    assert module.states is not None and [s.shape[1] for s in module.states] == [16, 16, 16]
    assert all(not t.requires_grad for t in module.states)
    assert int(m.trained_layers) == 3                                # validation reads the whole stack


def test_top2input_layer_gradients_come_from_their_own_loss(g):
    """Inputs are detached: layer 0's gradient is the gradient of layer 0's loss alone."""
    m = _model("sf-top2input")
    m.bind(g)
    module = LayerwiseGraphTraining(m, {"epochs_per_layer": 50})
    n = g["x"].shape[0]
    h, ei = m.augmented(g["x"], g["edge_index"], m.train_labels)
    states = m.bottom_up(h, ei, m.train_labels)
    module._top2input(g)
    full = m.convs[0].lin.weight.grad.clone()
    m.zero_grad()
    out = m.td_layer(0, h, states[2], ei)                            # layer 0 reads x and layer 1's old state
    F.cross_entropy(m.sf_logits(out, n)[g["train_mask"]], g["y"][g["train_mask"]]).backward()
    assert torch.allclose(full, m.convs[0].lin.weight.grad, atol=1e-6)


# ---- sf-top2loss -------------------------------------------------------------------------------

def test_top2loss_prediction_mixes_the_bottom_up_states_above(g):
    m = _model("sf-top2loss")
    m.bind(g)
    m.eval()
    n = g["x"].shape[0]
    with torch.no_grad():
        h, ei = m.augmented(g["x"], g["edge_index"], m.train_labels)
        raw, states = h, [F.normalize(h, dim=-1)]
        for conv in m.convs:                                         # raw outputs passed on, normalised kept
            raw = F.relu(conv(raw, ei))
            states.append(F.normalize(raw, dim=-1))
        want = 0
        for l, conv in enumerate(m.convs):
            out = F.relu(conv(states[l], ei))
            mixed = torch.stack([out, *states[l + 2:]]).mean(0)
            want = want + torch.softmax(m.sf_logits(mixed, n), -1)
        got = m(g["x"], g["edge_index"])
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("alternating", [False, True])
def test_top2loss_epoch_reads_the_previous_states_or_alternates(g, alternating):
    """Official (the default): every layer reads the previous step's state below it. Alternating (our
    interpretation): the odd layer 1 reads layer 0's state of this step."""
    m = _model("sf-top2loss", alternating_update=alternating)
    assert m.alternating_update is alternating
    m.bind(g)
    module = LayerwiseGraphTraining(m, {"epochs_per_layer": 50})
    module(g)                                                        # states from bottom-up, one step
    old = [s.clone() for s in module.states]
    weights = {k: v.clone() for k, v in m.state_dict().items()}
    h, ei = m.augmented(g["x"], g["edge_index"], m.train_labels)
    module(g)
    trained = {k: v.clone() for k, v in m.state_dict().items()}
    m.load_state_dict(weights)                                       # the outputs come before each update
    with torch.no_grad():
        s1 = F.normalize(m.layer(0, F.normalize(h, dim=-1), ei, normalized=True), dim=-1)
        s2 = F.normalize(m.layer(1, s1 if alternating else old[0], ei, normalized=True), dim=-1)
    assert torch.allclose(module.states[0], s1, atol=1e-5) and torch.allclose(module.states[1], s2, atol=1e-5)
    m.load_state_dict(trained)


@pytest.mark.parametrize("procedure,alternating", [("sf-top2loss", False), ("sf-top2loss", True),
                                                   ("sf-top2input", True)])
def test_top_down_resume_ends_where_an_uninterrupted_run_ends(g, tmp_path, procedure, alternating):
    """The top-down states are saved with the module: resuming mid-run continues from them."""
    opts = {"epochs_per_layer": 20, "patience": 50}

    def run(epochs, module=None):
        m = _model(procedure, alternating_update=alternating)
        m.bind(g)
        mod = LayerwiseGraphTraining(m, opts)
        if module is not None:
            mod.load_state_dict(module)
        for _ in range(epochs):
            mod(g)
        return m, mod

    a, _ = run(9)
    _, mb = run(4)
    torch.save(mb.state_dict(), tmp_path / "state.pt")                # as the fine-tune loop saves it
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert len(state["_extra_state"]["states"]) == 3
    c, mc = run(5, state)
    assert mc.epoch == 9
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.allclose(va, vc, atol=1e-6), k
    _, md = run(5, {k: v for k, v in state.items()} | {"_extra_state": {**state["_extra_state"], "states": None}})
    assert not all(torch.allclose(va, vd, atol=1e-6) for va, vd in zip(a.state_dict().values(),
                                                                       md.model.state_dict().values()))


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
