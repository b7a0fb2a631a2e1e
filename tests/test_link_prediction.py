"""Link prediction (issue 15): ForwardGNN's edge split, the forward-learnt and BP link predictors
(they learn, layer by layer), bad input, and every verb through the CLI."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import assert_eval_reproduces_registry, registry_checkpoints, run_zoo
from zoo.data import graphs
from zoo.errors import DataError
from zoo.layers.graph_forward_learning import LinkPredictionTraining, roc_auc
from zoo.models.forwardgnn import ForwardGNNLinkPredictor
from zoo.tasks.link_prediction import LinkDataset, LinkPredictionTask


@pytest.fixture(scope="module")
def small_graph():
    return graphs.citation_sbm(num_nodes=400, num_classes=4, num_features=60, seed=3)


@pytest.fixture(scope="module")
def split(small_graph):
    return graphs.link_split(small_graph, seed=0)


def _edge_set(ei):
    return {(int(a), int(b)) for a, b in ei.t()} | {(int(b), int(a)) for a, b in ei.t()}


# ---- the edge split ----------------------------------------------------------------------------

def test_split_fractions_negatives_and_no_leak(small_graph, split):
    m = small_graph["edge_index"].shape[1] // 2
    n_val = int(split["val_labels"].sum())
    n_test = int(split["test_labels"].sum())
    assert n_val == int(0.16 * m) and n_test == int(0.2 * m)
    assert split["train_pairs"].shape[1] == m - n_val - n_test
    for s in ("val", "test"):                                          # 1:1 negatives
        assert int((split[f"{s}_labels"] == 0).sum()) == int(split[f"{s}_labels"].sum())
    graph = _edge_set(small_graph["edge_index"])
    train_known, test_known = _edge_set(split["train_edge_index"]), _edge_set(split["test_edge_index"])
    test_pos = split["test_pairs"][:, split["test_labels"] == 1]
    val_pos = split["val_pairs"][:, split["val_labels"] == 1]
    assert not _edge_set(test_pos) & test_known                        # a test edge never passes messages
    assert not _edge_set(val_pos) & train_known
    assert torch.equal(split["val_edge_index"], split["train_edge_index"])   # val pairs pass messages on train edges
    assert _edge_set(val_pos) <= test_known                           # val edges are known when testing
    neg = split["test_pairs"][:, split["test_labels"] == 0]
    assert not _edge_set(neg) & graph                                 # negatives are non-edges


def test_split_is_seeded_and_leaves_global_random_state_alone(small_graph, split):
    random.seed(5)
    torch.manual_seed(5)
    before = (random.random(), torch.rand(1))
    random.seed(5)
    torch.manual_seed(5)
    again = graphs.link_split(small_graph, seed=0)
    assert (random.random(), torch.rand(1)) == before
    assert all(torch.equal(again[k], split[k]) for k in split if isinstance(split[k], torch.Tensor))
    other = graphs.link_split(small_graph, seed=1)
    assert not torch.equal(other["test_pairs"], split["test_pairs"])


def test_a_graph_too_small_to_split_is_refused():
    g = {"x": torch.zeros(4, 2), "edge_index": torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), "name": "tiny"}
    with pytest.raises(DataError, match="too few to hold out"):
        graphs.link_split(g)


def test_roc_auc_of_known_rankings():
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert roc_auc(torch.tensor([0.9, 0.8, 0.1, 0.2]), labels) == 1.0
    assert roc_auc(torch.tensor([0.1, 0.2, 0.9, 0.8]), labels) == 0.0
    assert roc_auc(torch.tensor([0.9, 0.3, 0.5, 0.2]), labels) == 0.75   # 3 of 4 (pos, neg) pairs in order


# ---- the procedures ----------------------------------------------------------------------------

def _val_auc(model, g, split="val"):
    model.eval()
    with torch.no_grad():
        return roc_auc(model(g["x"], g[f"{split}_edge_index"], g[f"{split}_pairs"]), g[f"{split}_labels"])


@pytest.mark.parametrize("procedure", ["sf", "bp", "sf-top2input"])
def test_each_link_procedure_learns(split, procedure):
    torch.manual_seed(0)
    m = ForwardGNNLinkPredictor(in_channels=60, hidden=32, layers=2, procedure=procedure)
    module = LinkPredictionTraining(m, {"epochs_per_layer": 40, "patience": 50, "layer_lr": 0.01, "layer_weight_decay": 0.0})
    for _ in range(80 if procedure != "sf-top2input" else 40):      # top-down: every layer every epoch
        module(split)
    auc = _val_auc(m, split, "test")
    assert auc > 0.7, (procedure, auc)                                # chance is 0.5
    if procedure == "sf":
        assert module.phase == 2 and int(m.trained_layers) == 2      # both layers trained, one after the other


def test_cached_validation_is_the_models_own_prediction(split):
    """Layer-wise validation reuses the frozen layers' outputs; it must score as the model does."""
    torch.manual_seed(0)
    m = ForwardGNNLinkPredictor(in_channels=60, hidden=16, layers=3, procedure="sf")
    module = LinkPredictionTraining(m, {"epochs_per_layer": 4, "patience": 50})
    for _ in range(6):
        module(split)
    assert module.phase == 1
    assert module._val_score(split) == pytest.approx(_val_auc(m, split), abs=1e-6)


def test_sf_link_training_touches_only_the_current_layer(split):
    torch.manual_seed(0)
    m = ForwardGNNLinkPredictor(in_channels=60, hidden=16, layers=2, procedure="sf")
    module = LinkPredictionTraining(m, {"epochs_per_layer": 10})
    second = {k: v.clone() for k, v in m.convs[1].state_dict().items()}
    module(split)
    assert all(torch.equal(v, m.convs[1].state_dict()[k]) for k, v in second.items())
    assert m.convs[0].lin.weight.grad is not None and m.convs[1].lin.weight.grad is None


def test_sf_score_sums_the_layers_and_bp_reads_the_last():
    torch.manual_seed(0)
    g = graphs.link_split(ForwardGNNLinkPredictor(in_channels=6).example_graph())
    pairs = g["test_pairs"]
    for proc in ("sf", "bp"):
        m = ForwardGNNLinkPredictor(in_channels=6, hidden=8, layers=3, procedure=proc).eval()
        m.trained_layers.fill_(3)
        s = m(g["x"], g["test_edge_index"], pairs)
        hs = m.embed(g["x"], g["test_edge_index"])
        per_layer = [torch.sigmoid(m.pair_logit(h, pairs)) for h in hs]
        expected = sum(per_layer) if proc == "sf" else per_layer[-1]
        assert torch.allclose(s, expected)
        assert float(s.max()) <= (3 if proc == "sf" else 1)


@pytest.mark.parametrize("procedure,why", [("ff-la", "appends node labels"), ("ff-vn", "class virtual nodes"),
                                           ("sf-top2loss", "no top-to-loss link predictor")])
def test_label_based_and_top2loss_procedures_are_refused_with_the_reason(procedure, why):
    with pytest.raises(ValueError, match=f"link prediction trains with bp, sf, sf-top2input, not '{procedure}': .*{why}"):
        ForwardGNNLinkPredictor(in_channels=4, procedure=procedure)


@pytest.mark.parametrize("alternating", [True, False])
def test_top2input_link_score_is_the_official_time_stepped_eval(alternating):
    """Bottom-up (zeros above), then the schedule (alternating: layer 0, then 1 on its new output);
    the pair's sigmoid averaged over both layers of the steps from the third on."""
    torch.manual_seed(0)
    m = ForwardGNNLinkPredictor(in_channels=6, hidden=8, layers=2, procedure="sf-top2input", test_steps=4,
                                alternating_update=alternating).eval()
    assert [c.in_channels for c in m.convs] == [6 + 8, 8]              # nothing above the top layer
    g = graphs.link_split(m.example_graph())
    x, ei, pairs = g["x"], g["test_edge_index"], g["test_pairs"]
    with torch.no_grad():
        lay0 = lambda a, b: torch.relu(m.convs[0](torch.cat([F.normalize(a, dim=-1), F.normalize(b, dim=-1)], -1), ei))
        lay1 = lambda a: torch.relu(m.convs[1](F.normalize(a, dim=-1), ei))
        s1 = lay0(x, torch.zeros(x.shape[0], 8))
        s2 = lay1(s1)
        kept = []
        for t in range(4):
            n1 = lay0(x, s2)
            n2 = lay1(n1 if alternating else s1)
            s1, s2 = n1, n2
            if t >= 2:
                kept += [torch.sigmoid(m.pair_logit(h, pairs)) for h in (n1, n2)]
        got = m(x, ei, pairs)
    assert torch.allclose(got, torch.stack(kept).mean(0), atol=1e-6)


def test_top2input_link_training_keeps_the_states_for_resume(split):
    torch.manual_seed(0)
    m = ForwardGNNLinkPredictor(in_channels=60, hidden=16, layers=2, procedure="sf-top2input")
    module = LinkPredictionTraining(m, {"epochs_per_layer": 10})
    before = [c.lin.weight.detach().clone() for c in m.convs]
    module(split)
    assert all(not torch.equal(b, c.lin.weight) for b, c in zip(before, m.convs))   # every layer, every epoch
    assert [tuple(s.shape) for s in module.states] == [(400, 16), (400, 16)]        # layer outputs, no grad
    assert all(not s.requires_grad for s in module.states)
    assert module.state_dict()["_extra_state"]["states"] is module.states


def test_wrong_feature_width_is_refused_in_one_line(split):
    task = LinkPredictionTask()
    m = ForwardGNNLinkPredictor(in_channels=61, hidden=8, layers=1)
    with pytest.raises(DataError, match="60 features per node but this model takes 61"):
        task.evaluate(m, LinkDataset(split, "test"), {})


def test_a_split_without_negatives_cannot_be_scored(split):
    task = LinkPredictionTask()
    m = ForwardGNNLinkPredictor(in_channels=60, hidden=8, layers=1)
    only_pos = {**split, "test_labels": torch.ones_like(split["test_labels"])}
    with pytest.raises(DataError, match="needs both edges and non-edges"):
        task.evaluate(m, LinkDataset(only_pos, "test"), {})


# ---- the CLI, as a user runs it ----------------------------------------------------------------

def test_cli_every_verb(tmp_path):
    out = tmp_path / "run"
    r = run_zoo("finetune", "forwardgnn-sf-gcn-lp", "--dataset", "drosophila", "--scratch", "--steps", "12",
                "-o", "epochs_per_layer=3", "-o", 'config={"hidden": 16, "layers": 2}', "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_zoo("eval", str(out), "--dataset", "drosophila", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)["metrics"]
    assert 0 <= res["roc_auc"] <= 100 and res["pairs"] == 2 * int(0.2 * (graphs.drosophila()["edge_index"].shape[1] // 2))
    png = tmp_path / "links.png"
    r = run_zoo("predict", str(out), "--dataset", "drosophila", "--save", str(png), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    pred = json.loads(r.stdout)
    assert png.read_bytes()[:4] == b"\x89PNG" and pred["edges"] * 2 == pred["pairs"]
    r = run_zoo("export", str(out), "--format", "onnx", "--out", str(tmp_path / "lp.onnx"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "lp.onnx").stat().st_size > 0
    r = run_zoo("eval", str(out), "--dataset", "karate")                # 34 features, not 418
    assert r.returncode != 0 and "features per node" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("full", registry_checkpoints("forwardgnn-lp"))
def test_checkpoint_metrics_match_the_registry(full):
    assert_eval_reproduces_registry(full)
