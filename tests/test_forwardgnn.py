"""ForwardGNN (issue 15): parameter pins, graph readers in the real formats, bad input, the
layer-wise procedures (they learn, resume mid-layer), transductive refusal, and the CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from tests.conftest import run_zoo
from zoo.data import graphs
from zoo.errors import DataError
from zoo.layers.graph_forward_learning import LayerwiseGraphTraining
from zoo.models.forwardgnn import ForwardGNN, conv_params, graph_fingerprint


# ---- parameter counts --------------------------------------------------------------------------

@pytest.mark.parametrize("backbone,procedure,expected", [
    ("gcn", "sf", 418_176),     # 2879*128+128 + 3*(128*128+128): the spec's ~0.42M for SF-GCN 4x128 on Cora_ML
    ("sage", "sf", 835_840),    # mean SAGE: lin_l (bias) + lin_r per layer
    ("gat", "sf", 419_200),     # 4 heads x 32: lin + att_src + att_dst + bias
    ("gcn", "bp", 419_079),     # + the 128->7 linear read-out of the BP baseline
])
def test_parameter_counts_on_cora_ml_size(backbone, procedure, expected):
    m = ForwardGNN(in_channels=2879, num_classes=7, num_nodes=2995, backbone=backbone, procedure=procedure)
    n = sum(p.numel() for p in m.parameters())
    assert n == expected
    formula = conv_params(backbone, 2879, 128) + 3 * conv_params(backbone, 128, 128) + (128 * 7 + 7) * (procedure == "bp")
    assert n == formula


def test_virtual_nodes_are_fixed_buffers_not_parameters():
    m = ForwardGNN(in_channels=16, num_classes=3, num_nodes=10, hidden=8, layers=2)
    names = dict(m.named_parameters())
    assert not any("virtual" in k for k in names)
    assert m.virtual_x.shape == (3, 16) and "virtual_x" in m.state_dict()


# ---- readers of the real formats ---------------------------------------------------------------

@pytest.fixture(scope="module")
def small_graph():
    return graphs.citation_sbm(num_nodes=400, num_classes=4, num_features=60, seed=3)


def test_planetoid_round_trip(small_graph, tmp_path):
    folder = graphs.write_planetoid(small_graph, tmp_path / "cora", "cora", n_train=40, n_test=100)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"ind.cora.{s}" for s in graphs.PLANETOID_PARTS)
    back = graphs.read_planetoid(folder)
    assert torch.equal(back["y"], small_graph["y"])
    assert torch.allclose(back["x"], small_graph["x"], atol=1e-6)
    assert torch.equal(back["edge_index"], small_graph["edge_index"])


def test_planetoid_folder_with_a_file_missing(small_graph, tmp_path):
    folder = graphs.write_planetoid(small_graph, tmp_path / "cora", "cora", n_train=40, n_test=100)
    (folder / "ind.cora.ty").unlink()
    with pytest.raises(DataError, match="missing: ind.cora.ty"):
        graphs.read_planetoid(folder)


def test_planetoid_reader_refuses_a_pickle_that_would_run_code(small_graph, tmp_path):
    folder = graphs.write_planetoid(small_graph, tmp_path / "cora", "cora", n_train=40, n_test=100)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))
    (folder / "ind.cora.x").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match="refused to load builtins.print"):
        graphs.read_planetoid(folder)


def test_citationfull_npz_round_trip(small_graph, tmp_path):
    path = graphs.write_citationfull(small_graph, tmp_path / "cora_ml.npz")
    with np.load(path) as f:
        assert {"adj_data", "adj_indices", "adj_indptr", "adj_shape", "attr_data", "labels"} <= set(f.files)
    back = graphs.read_citationfull(path)
    assert torch.equal(back["y"], small_graph["y"])
    assert torch.equal(back["edge_index"], small_graph["edge_index"])


def test_drosophila_is_the_real_connectome():
    g = graphs.drosophila()
    assert g["x"].shape == (209, 418)
    assert g["y"].bincount().tolist() == [101, 58, 29, 21]      # K, P, O, I as graspologic documents
    assert torch.equal(g["train_mask"] | g["val_mask"] | g["test_mask"], torch.ones(209, dtype=torch.bool))


def test_splits_are_64_16_20_and_disjoint():
    m = graphs.kfold_split(1000, fold=2)
    sizes = [int(m[k].sum()) for k in ("train_mask", "val_mask", "test_mask")]
    assert sizes == [640, 160, 200]
    assert not bool((m["train_mask"] & m["test_mask"]).any() or (m["val_mask"] & m["test_mask"]).any())
    tests = [graphs.kfold_split(1000, fold=f)["test_mask"] for f in range(5)]
    assert torch.stack(tests).sum(0).eq(1).all()                   # the five test folds tile the nodes


# ---- bad input -------------------------------------------------------------------------------

def test_edges_past_the_node_count():
    with pytest.raises(DataError, match="points to node 7, past the 5 nodes"):
        graphs.make_graph(np.eye(5), [[0, 1], [7, 2]], [0, 1, 0, 1, 0], "g")


def test_labels_missing_for_all_training_nodes():
    with pytest.raises(DataError, match="no training node has a label"):
        graphs.make_graph(np.eye(20), [[0, 1], [1, 2]], [-1] * 20, "g")


def test_directed_graph_is_made_undirected_or_refused(small_graph, tmp_path):
    g = graphs.make_graph(np.eye(4), [[0, 1, 2], [1, 2, 3]], [0, 1, 0, 1], "g")
    assert g["edge_index"].shape[1] == 6                            # converted, both directions
    with pytest.raises(DataError, match="directed"):
        graphs.make_graph(np.eye(4), [[0, 1, 2], [1, 2, 3]], [0, 1, 0, 1], "g", directed_ok=False)


def test_feature_width_and_foreign_graph_are_refused(small_graph):
    m = ForwardGNN(in_channels=60, num_classes=4, num_nodes=400, hidden=8, layers=2)
    m.bind(small_graph)
    wide = {**small_graph, "x": torch.zeros(400, 61)}
    with pytest.raises(DataError, match="61 features per node but this model takes 60"):
        m.check_graph(wide)
    other = graphs.citation_sbm(num_nodes=400, num_classes=4, num_features=60, seed=4)
    with pytest.raises(DataError, match="not the graph this model was trained on"):
        m.check_graph(other)
    m.check_graph(small_graph)                                       # its own graph passes
    assert graph_fingerprint(small_graph["edge_index"].flip(1), 400) == int(m.graph_key)   # order-free


# ---- the procedures --------------------------------------------------------------------------

def _train(model, g, epochs, **opts):
    module = LayerwiseGraphTraining(model, {"epochs_per_layer": 60, "patience": 30, **opts})
    for _ in range(epochs):
        module(g)
    return module


def _acc(model, g):
    model.eval()
    with torch.no_grad():
        pred = model(g["x"], g["edge_index"]).argmax(-1)
    m = g["test_mask"]
    return float((pred[m] == g["y"][m]).float().mean())


@pytest.mark.parametrize("backbone,procedure", [("gcn", "sf"), ("sage", "sf"), ("gcn", "bp"),
                                                ("gcn", "sf-top2loss"), ("gcn", "ff-la"), ("gat", "sf"),
                                                ("gcn", "ff-vn"), ("gcn", "sf-top2input")])
def test_each_procedure_learns_the_small_graph(small_graph, backbone, procedure):
    torch.manual_seed(0)
    m = ForwardGNN(in_channels=60, num_classes=4, num_nodes=400, hidden=32, layers=2, backbone=backbone,
                   procedure=procedure)
    m.bind(small_graph)
    before = _acc(m, small_graph)
    # ff scores and the top-down predictions (label-carrying states mixed in) are above chance untrained
    assert before < 0.5 or procedure in ("ff-la", "ff-vn", "sf-top2input", "sf-top2loss")
    # the top-down procedures train the whole stack at once: one 120-epoch phase, not 60 a layer
    module = _train(m, small_graph, 120, **({"epochs_per_layer": 120} if "top2" in procedure else {}))
    assert _acc(m, small_graph) > 0.35, procedure                    # chance is 0.25
    if procedure in ("sf-top2input", "sf-top2loss"):
        assert _acc(m, small_graph) > before + 0.1                  # training, not the propagation, did it
    if procedure in ("sf", "ff-la", "ff-vn"):
        assert module.phase >= 1                                     # layer 0 finished and froze


def test_layerwise_training_trains_only_the_current_layer(small_graph):
    torch.manual_seed(0)
    m = ForwardGNN(in_channels=60, num_classes=4, num_nodes=400, hidden=16, layers=2)
    module = LayerwiseGraphTraining(m, {"epochs_per_layer": 10})
    second = {k: v.clone() for k, v in m.convs[1].state_dict().items()}
    module(small_graph)
    assert all(torch.equal(v, m.convs[1].state_dict()[k]) for k, v in second.items())
    assert m.convs[0].lin.weight.grad is not None and m.convs[1].lin.weight.grad is None


def test_resume_mid_layer_ends_where_an_uninterrupted_run_ends(small_graph, tmp_path):
    def fresh():
        torch.manual_seed(0)
        return ForwardGNN(in_channels=60, num_classes=4, num_nodes=400, hidden=16, layers=2)
    opts = {"epochs_per_layer": 12, "patience": 50}
    a = fresh()
    ma = LayerwiseGraphTraining(a, opts)
    for _ in range(17):
        ma(small_graph)
    b = fresh()
    mb = LayerwiseGraphTraining(b, opts)
    for _ in range(7):                                               # stop in the middle of layer 0
        mb(small_graph)
    torch.save(mb.state_dict(), tmp_path / "state.pt")                # as the fine-tune loop saves it
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    c = fresh()
    mc = LayerwiseGraphTraining(c, opts)
    mc.load_state_dict(state)
    assert mc.phase == 0 and mc.epoch == 7
    for _ in range(10):
        mc(small_graph)
    assert mc.phase == ma.phase == 1
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va, vc), k


# ---- the CLI, as a user runs it ----------------------------------------------------------------

def test_cli_list_and_info():
    r = run_zoo("list", "--task", "node-classification", "--json")
    assert r.returncode == 0, r.stderr
    names = {m["name"] for m in json.loads(r.stdout)}
    assert {"forwardgnn-sf-gcn", "forwardgnn-sf-sage", "gcn"} <= names
    r = run_zoo("info", "forwardgnn-sf-gcn")
    assert r.returncode == 0 and "citation-sbm" in r.stdout


def test_cli_finetune_eval_and_foreign_graph(tmp_path):
    out = tmp_path / "run"
    r = run_zoo("finetune", "forwardgnn-sf-gcn", "--dataset", "karate", "--scratch", "--steps", "20",
                "-o", "epochs_per_layer=5", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_zoo("eval", str(out), "--dataset", "karate", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert 0 <= json.loads(r.stdout)["metrics"]["accuracy"] <= 100
    png = tmp_path / "g.png"
    r = run_zoo("predict", str(out), "--dataset", "karate", "--save", str(png), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert png.read_bytes()[:4] == b"\x89PNG" and sum(json.loads(r.stdout)["predicted_counts"]) == 34
    # the checkpoint's own graph from a user's Planetoid folder with other edges: refused in one line
    g = graphs.karate()
    ei = g["edge_index"]
    g["edge_index"] = ei[:, ~(((ei[0] == 0) & (ei[1] == 1)) | ((ei[0] == 1) & (ei[1] == 0)))]   # one edge fewer
    folder = graphs.write_planetoid(g, tmp_path / "k", "karate", n_train=10, n_test=10)
    r = run_zoo("eval", str(out), "--data", str(folder))
    assert r.returncode != 0 and "not the graph this model was trained on" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _checkpoints():
    import zoo.registry as reg
    return [(n, t) for n, e in reg.load_registry().models.items() if e.family == "forwardgnn" for t in e.checkpoints]


@pytest.mark.slow
@pytest.mark.parametrize("name,tag", _checkpoints())
def test_checkpoint_metrics_match_the_registry(name, tag):
    import zoo.registry as reg
    pinned = reg.load_registry().models[name].checkpoints[tag].metrics
    r = run_zoo("eval", f"{name}.{tag}", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)["metrics"]
    assert got["nodes"] == pinned["nodes"]
    assert got["accuracy"] == pytest.approx(pinned["accuracy"], abs=1e-6)
