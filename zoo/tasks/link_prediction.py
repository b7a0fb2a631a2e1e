"""Link prediction on one graph: ROC-AUC of held-out edges against as many sampled non-edges.

A dataset is a graph (`zoo.data.graphs`) cut by ForwardGNN's edge protocol (`graphs.link_split`:
PyG's RandomLinkSplit, 16% of the edges for validation, 20% for test, 1:1 negatives, seeded by
`-o data_seed=`). Messages pass along the training edges when scoring the train and val pairs, and
along training + validation edges for the test pairs, so a test edge is never seen. The whole
graph is one batch and one training step is one epoch; training goes through
`zoo.layers.graph_forward_learning.link_training_method` (the model's `procedure`: bp, sf or
sf-top2input, the official code's BP, FL-CE and FL-CE-TopDown; ff-la, ff-vn and sf-top2loss need
node labels or have no official link predictor and are refused with the reason), which draws fresh
negative pairs every epoch.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from pydantic import Field

from zoo._io import pyplot, save_figure
from zoo.data import graphs
from zoo.errors import DataError
from zoo.layers.graph_forward_learning import GraphForwardOptions, link_training_method, roc_auc
from zoo.tasks.base import DatasetEntry, Task, TaskOptions, device_of, to_device

SPLITS = graphs.GRAPH_SPLITS


@runtime_checkable
class LinkPredictor(Protocol):
    in_channels: int
    procedure: str

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Node features (N, F), message-passing edges (2, E), node pairs (2, P) -> scores (P,)."""

    def check_graph(self, graph: dict) -> None: ...

    def example_graph(self, seed: int = 0) -> dict: ...


LinkDataset = graphs.OneGraph   # a split graph; `split` says which pairs evaluation scores


class LinkPredictionOptions(GraphForwardOptions, TaskOptions):
    nodes: int | None = Field(None, description="citation-sbm: number of nodes (default 2,995, Cora_ML's size)")


def _named(name: str, split: str, model, options: dict) -> LinkDataset:
    if name == "citation-sbm":
        g = graphs.citation_sbm(num_nodes=int(options.get("nodes") or 2995))
    elif name == "drosophila":
        g = graphs.drosophila()
    else:
        g = graphs.karate()
    return LinkDataset(graphs.link_split(g, seed=int(options.get("data_seed", 0))), split)


DATASETS = {
    "citation-sbm": "seeded citation-like graph (degree-corrected SBM, 2,995 nodes, ~8.1k edges, 2,879 words, "
                    "Cora_ML's size; our generator), edges split 64/16/20 with 1:1 negatives",
    "drosophila": "Drosophila larva left mushroom-body connectome (graspologic's copy, MIT): 209 neurons, made "
                  "undirected; edges split 64/16/20 with 1:1 negatives",
    "karate": "Zachary's karate club (networkx): 34 members, 78 edges, identity features",
}


class LinkPredictionTask(Task):
    name = "link-prediction"
    DATASETS = {n: DatasetEntry(d, partial(_named, n)) for n, d in DATASETS.items()}
    Options = LinkPredictionOptions
    model_protocol = LinkPredictor
    default_batch_size = 1
    default_lr = 1e-3
    default_steps = 4000          # epochs in all; layer-wise procedures stop each layer early
    main_metric = "roc_auc"
    lower_is_better = False
    data_splits = SPLITS
    metric_definitions = {
        "roc_auc": "area under the ROC curve (x100) of the split's held-out edges against as many sampled "
                   "non-edges, scored with messages passing along the edges known before that split",
        "pairs": "number of node pairs scored (half of them edges)",
    }

    # ---- data -------------------------------------------------------------------------
    def read_data(self, path, dataset, split, model, options):
        g = graphs.read_graph_path(path)
        return LinkDataset(graphs.link_split(g, seed=int(options.get("data_seed", 0))), split)

    def collate(self, items):
        return items[0]

    def prepare(self, model, dataset, options):
        model.check_graph(dataset.graph)

    # ---- training ---------------------------------------------------------------------
    def training_module(self, model, options):
        return link_training_method(model, options)

    def loss(self, model, batch):
        raise DataError("link-prediction models train through their procedure's training module")

    def example_batch(self, model, options):
        return to_device(graphs.link_split(model.example_graph()), device_of(model))

    # ---- inference --------------------------------------------------------------------
    def _scores(self, model, graph: dict, split: str) -> torch.Tensor:
        model.check_graph(graph)
        g = to_device(graph, device_of(model))
        model.eval()
        x = g["x"].to(next(model.parameters()).dtype)
        return model(x, g[f"{split}_edge_index"], g[f"{split}_pairs"]).float().cpu()

    @torch.no_grad()
    def evaluate(self, model, dataset, options):
        g, split = dataset.graph, dataset.split
        labels = g[f"{split}_labels"]
        if labels.numel() == 0 or labels.min() == labels.max():
            raise DataError(f"the {split} split of {dataset.name} needs both edges and non-edges to score")
        score = self._scores(model, g, split)
        return {"roc_auc": 100.0 * roc_auc(score, labels), "pairs": int(labels.numel())}

    @torch.no_grad()
    def predict(self, model, input, dataset, save, options):
        if input:
            raise DataError("link-prediction scores pairs of a whole graph: give --dataset or --data, not INPUT")
        if dataset is None:
            raise DataError("predict needs the graph: give --dataset or --data")
        g, split = dataset.graph, dataset.split
        labels = g[f"{split}_labels"]
        score = self._scores(model, g, split)
        # call the top-k pairs edges, k = the number of true edges among them (no threshold to tune)
        k = int(labels.sum())
        predicted = torch.zeros_like(labels, dtype=torch.bool)
        predicted[torch.topk(score, k).indices] = True
        truth = labels.bool()
        auc = 100.0 * roc_auc(score, labels) if 0 < k < labels.numel() else float("nan")
        out = {"graph": dataset.name, "split": split, "pairs": int(labels.numel()), "edges": k, "roc_auc": auc,
               "precision_at_k": 100.0 * float((predicted & truth).sum()) / max(k, 1)}
        if save:
            draw_links(g, split, predicted, truth, Path(save),
                       title=f"{dataset.name}: {split} pairs, ROC-AUC {auc:.1f}")
        return out

    def example_input(self, model, options):
        g = graphs.link_split(model.example_graph())
        dev = device_of(model)
        return (g["x"].to(dev), g["test_edge_index"].to(dev), g["test_pairs"].to(dev))

    def dynamic_axes(self, args):
        return [{0: "nodes"}, {1: "edges"}, {1: "pairs"}]


def draw_links(g: dict, split: str, predicted: torch.Tensor, truth: torch.Tensor, path: Path, title: str = "") -> None:
    """The graph's known edges in grey (spring layout), then the split's true edges (left) and the
    predicted edges (right: green where right, red where the pair is no edge)."""
    import networkx as nx
    import numpy as np
    from matplotlib.collections import LineCollection
    plt = pyplot()
    n = g["x"].shape[0]
    known = g[f"{split}_edge_index"].numpy()
    G = nx.Graph()
    G.add_nodes_from(range(n))
    G.add_edges_from(known.T.tolist())
    pos = nx.spring_layout(G, seed=0, iterations=50 if n < 1000 else 20)
    xy = np.array([pos[i] for i in range(n)])
    pairs = g[f"{split}_pairs"].numpy()

    def lines(ax, sel, colour, width, label):
        p = pairs[:, sel.numpy()]
        if p.shape[1]:
            ax.add_collection(LineCollection(np.stack([xy[p[0]], xy[p[1]]], 1), colors=colour, linewidths=width,
                                             label=label, zorder=1))

    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax in axes:
        if known.shape[1] < 60000:
            ax.add_collection(LineCollection(np.stack([xy[known[0]], xy[known[1]]], 1), colors="0.88",
                                             linewidths=0.3, zorder=0))
        ax.scatter(xy[:, 0], xy[:, 1], s=20 if n < 500 else 3, c="0.4", zorder=2)
        ax.set_axis_off()
    lines(axes[0], truth, "tab:blue", 0.8, "true edge")
    lines(axes[1], predicted & truth, "tab:green", 0.8, "predicted, an edge")
    lines(axes[1], predicted & ~truth, "tab:red", 0.8, "predicted, no edge")
    axes[0].set_title(f"true {split} edges ({int(truth.sum())})")
    axes[1].set_title(f"top-{int(truth.sum())} predicted pairs")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path, dpi=100)
