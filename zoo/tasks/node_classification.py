"""Node classification on one (transductive) graph: accuracy on the test nodes.

A dataset is a single graph (`zoo.data.graphs`: x, edge_index, y and the 64/16/20 masks of one
of ForwardGNN's five folds, `-o fold=`); the whole graph is one batch and one training step is one
epoch. Models implement `GraphNodeClassifier`: they are bound to the graph they were trained on
(`bind`, called by `prepare`) and refuse any other (`check_graph`), because their inference needs
that graph's training labels. Training goes through
`zoo.layers.graph_forward_learning.training_method` (the model's `procedure` picks bp, sf,
sf-top2loss, sf-top2input, ff-la or ff-vn).
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
from zoo.layers.graph_forward_learning import GraphForwardOptions, training_method
from zoo.tasks.base import DatasetEntry, Task, TaskOptions, device_of, to_device

SPLITS = {"train": "train_mask", "val": "val_mask", "test": "test_mask"}


@runtime_checkable
class GraphNodeClassifier(Protocol):
    in_channels: int
    num_classes: int
    num_nodes: int
    procedure: str

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Node features (N, F) and undirected edges (2, E) -> class scores (N, C)."""

    def bind(self, graph: dict) -> None: ...

    def check_graph(self, graph: dict) -> None: ...

    def example_graph(self, seed: int = 0) -> dict: ...


GraphDataset = graphs.OneGraph   # `split` says which node mask evaluation scores


class NodeClassificationOptions(GraphForwardOptions, TaskOptions):
    fold: int = Field(0, description="which of the five 64/16/20 splits (ForwardGNN's KFold, seed 101)")
    nodes: int | None = Field(None, description="citation-sbm: number of nodes (default 2,995, Cora_ML's size)")


def _named(name: str, split: str, model, options: dict) -> GraphDataset:
    fold = int(options.get("fold", 0))
    if name == "citation-sbm":
        g = graphs.citation_sbm(num_nodes=int(options.get("nodes") or 2995), seed=int(options.get("data_seed", 0)),
                                fold=fold)
    elif name == "drosophila":
        g = graphs.drosophila(fold)
    else:
        g = graphs.karate(fold)
    return GraphDataset(g, split)


DATASETS = {
    "citation-sbm": "seeded citation-like graph: degree-corrected SBM, sparse bag-of-words, 2,995 nodes, 2,879 "
                    "words, 7 classes (Cora_ML's size); our generator",
    "drosophila": "Drosophila larva left mushroom-body connectome (graspologic's copy, MIT): 209 neurons, 4 cell "
                  "types; directed weighted edges made undirected",
    "karate": "Zachary's karate club (networkx): 34 members, 2 factions, identity features",
}


class NodeClassificationTask(Task):
    name = "node-classification"
    DATASETS = {n: DatasetEntry(d, partial(_named, n)) for n, d in DATASETS.items()}
    Options = NodeClassificationOptions
    model_protocol = GraphNodeClassifier
    default_batch_size = 1
    default_lr = 1e-3
    default_steps = 4000          # epochs in all; layer-wise procedures stop each layer early
    main_metric = "accuracy"
    lower_is_better = False
    metric_definitions = {
        "accuracy": "percentage of the split's labelled nodes whose highest-scoring class is the true class",
        "nodes": "number of nodes scored",
    }

    # ---- data -------------------------------------------------------------------------
    def read_data(self, path, dataset, split, model, options):
        return GraphDataset(graphs.read_graph_path(path, int(options.get("fold", 0))), split)

    def collate(self, items):
        return items[0]

    def prepare(self, model, dataset, options):
        model.bind(dataset.graph)

    # ---- training ---------------------------------------------------------------------
    def training_module(self, model, options):
        return training_method(model, options)

    def loss(self, model, batch):
        raise DataError("node-classification models train through their procedure's training module")

    def example_batch(self, model, options):
        return to_device(model.example_graph(), device_of(model))

    # ---- inference --------------------------------------------------------------------
    def _scores(self, model, graph: dict) -> torch.Tensor:
        model.check_graph(graph)
        g = to_device(graph, device_of(model))
        model.eval()
        return model(g["x"].to(next(model.parameters()).dtype), g["edge_index"]).float().cpu()

    @torch.no_grad()
    def evaluate(self, model, dataset, options):
        g = dataset.graph
        mask = g[SPLITS[dataset.split]]
        pred = self._scores(model, g).argmax(-1)
        n = int(mask.sum())
        if n == 0:
            raise DataError(f"the {dataset.split} split of {dataset.name} has no labelled node")
        return {"accuracy": 100.0 * float((pred[mask] == g["y"][mask]).float().mean()), "nodes": n}

    @torch.no_grad()
    def predict(self, model, input, dataset, save, options):
        if input:
            raise DataError("node-classification predicts on a whole graph: give --dataset or --data, not INPUT")
        if dataset is None:
            raise DataError("predict needs the graph: give --dataset or --data")
        g = dataset.graph
        pred = self._scores(model, g).argmax(-1)
        mask = g[SPLITS[dataset.split]]
        acc = 100.0 * float((pred[mask] == g["y"][mask]).float().mean()) if bool(mask.any()) else float("nan")
        out = {"graph": dataset.name, "nodes": int(g["x"].shape[0]), "split": dataset.split,
               "accuracy": acc, "predicted_counts": torch.bincount(pred, minlength=model.num_classes).tolist()}
        if save:
            draw_graph(g, pred, mask, Path(save), title=f"{dataset.name}: {dataset.split} accuracy {acc:.1f}%")
        return out

    def example_input(self, model, options):
        g = model.example_graph()
        return (g["x"].to(device_of(model)), g["edge_index"].to(device_of(model)))

    def dynamic_axes(self, args):
        return [{0: "nodes"}, {1: "edges"}]


def draw_graph(g: dict, pred: torch.Tensor, mask: torch.Tensor, path: Path, title: str = "") -> None:
    """The graph (spring layout) twice: nodes coloured by true class, then by predicted class; scored
    nodes that are wrong get a red ring."""
    import networkx as nx
    import numpy as np
    from matplotlib.collections import LineCollection
    plt = pyplot()
    n = g["x"].shape[0]
    G = nx.Graph()
    G.add_nodes_from(range(n))
    G.add_edges_from(g["edge_index"].t().tolist())
    pos = nx.spring_layout(G, seed=0, iterations=50 if n < 1000 else 20)
    xy = np.array([pos[i] for i in range(n)])
    ei = g["edge_index"].numpy()
    size = 30 if n < 500 else 6
    wrong = (mask & (pred != g["y"])).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, colours, name in ((axes[0], g["y"], "true class"), (axes[1], pred, "predicted class")):
        if ei.shape[1] < 60000:
            ax.add_collection(LineCollection(np.stack([xy[ei[0]], xy[ei[1]]], 1), colors="0.85", linewidths=0.3,
                                             zorder=0))
        c = colours.clamp(min=0).numpy() % 10
        ax.scatter(xy[:, 0], xy[:, 1], c=c, cmap="tab10", vmin=0, vmax=9, s=size, zorder=1)
        ax.scatter(xy[wrong, 0], xy[wrong, 1], facecolors="none", edgecolors="red", s=size * 3, linewidths=1,
                   zorder=2, label="wrong (scored split)")
        ax.set_axis_off()
        ax.set_title(name)
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path, dpi=100)
