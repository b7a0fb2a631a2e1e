"""Labelled graphs for node classification: readers of the real published formats and a seeded
citation-like generator.

A graph is a plain dict of tensors: ``x`` (N, F) float features, ``edge_index`` (2, E) long,
undirected (both directions present, no self loops), ``y`` (N,) long labels, and the boolean masks
``train_mask``/``val_mask``/``test_mask``; ``name`` says where it came from.

* `citation_sbm` - a degree-corrected stochastic block model with sparse bag-of-words features,
  Cora_ML's size by default (2,995 nodes, 2,879 words, 7 classes). Our generator, seeded.
* `drosophila` - the left mushroom-body connectome of the Drosophila larva (209 neurons, 4 cell
  types), the copy graspologic 3.4.4 ships (MIT), kept in ``zoo/data/drosophila/``. The graph is
  weighted and directed: we make it undirected and unweighted, as the GNN procedures need.
  Features (our interpretation; the connectome has none): log(1 + synapse count) of each neuron's
  outgoing and incoming row, concatenated (418 values).
* `karate` - Zachary's karate club from networkx (34 nodes, 2 factions, identity features).
* `read_planetoid` - the Planetoid files ``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``
  (pickles: read with an unpickler that admits only numpy, scipy.sparse and the dict types, so a
  hostile file cannot run code).
* `read_citationfull` - the CitationFull/gnn-benchmark ``.npz`` (adj_*/attr_*/labels), through
  PyG's own `read_npz` (numpy without pickles).

Splits follow ForwardGNN's node protocol: 5-fold KFold shuffled with seed 101 gives the test fold
(20%), and 20% of the rest is validation, so 64/16/20. The KFold permutation is reproduced with
numpy's RandomState(101) as scikit-learn's KFold(shuffle=True) draws it; how the official code
carves validation out of the rest is not in our notes: we take the first 20% of a RandomState(seed)
permutation of the rest (our interpretation).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from torch.utils.data import Dataset

from zoo.errors import DataError

GRAPH_SPLITS = ("train", "val", "test")


class OneGraph(Dataset):
    """One graph as a dataset of length one; `split` says which part of it evaluation scores
    (a node mask for node classification, a set of held-out pairs for link prediction)."""

    def __init__(self, graph: dict, split: str):
        if split not in GRAPH_SPLITS:
            raise DataError(f"unknown split '{split}'; one of {', '.join(GRAPH_SPLITS)}")
        self.graph, self.split, self.name = graph, split, graph.get("name", "graph")

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return {k: v for k, v in self.graph.items() if isinstance(v, torch.Tensor)}

HERE = Path(__file__).resolve().parent
DROSOPHILA = HERE / "drosophila"
DROSOPHILA_CLASSES = ("K", "P", "O", "I")
PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


# ---- splits ---------------------------------------------------------------------------------

def kfold_split(n: int, fold: int = 0, seed: int = 101, val_fraction: float = 0.2) -> dict[str, torch.Tensor]:
    """ForwardGNN's node split: fold `fold` of a shuffled 5-fold KFold is the test set."""
    if not 0 <= fold < 5:
        raise DataError(f"fold must be 0..4, got {fold}")
    idx = np.arange(n)
    np.random.RandomState(seed).shuffle(idx)
    sizes = np.full(5, n // 5)
    sizes[: n % 5] += 1
    start = int(sizes[:fold].sum())
    test = idx[start:start + sizes[fold]]
    rest = np.concatenate([idx[:start], idx[start + sizes[fold]:]])
    rest = rest[np.random.RandomState(seed + fold).permutation(len(rest))]
    n_val = int(round(val_fraction * len(rest)))
    masks = {}
    for key, part in (("train_mask", rest[n_val:]), ("val_mask", rest[:n_val]), ("test_mask", test)):
        m = torch.zeros(n, dtype=torch.bool)
        m[torch.as_tensor(part, dtype=torch.long)] = True
        masks[key] = m
    return masks


# ---- checks shared by every source ----------------------------------------------------------

def make_graph(x, edge_index, y, name: str, *, fold: int = 0, directed_ok: bool = True) -> dict:
    """Check and normalise a graph: edges inside the node range, undirected without self loops or
    duplicates, row-normalised features (PyG's NormalizeFeatures, as the official loader), splits."""
    from torch_geometric.utils import coalesce, is_undirected, remove_self_loops, to_undirected

    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long).view(-1)
    edge_index = torch.as_tensor(edge_index, dtype=torch.long)
    n = x.shape[0]
    if x.dim() != 2:
        raise DataError(f"{name}: features must be a (nodes, features) matrix, got shape {tuple(x.shape)}")
    if y.numel() != n:
        raise DataError(f"{name}: {y.numel()} labels for {n} nodes")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise DataError(f"{name}: edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= n):
        bad = int(edge_index.max())
        raise DataError(f"{name}: an edge points to node {bad}, past the {n} nodes the features describe")
    edge_index, _ = remove_self_loops(edge_index)
    if not is_undirected(edge_index, num_nodes=n):
        if not directed_ok:
            raise DataError(f"{name}: the graph is directed; the procedures need an undirected graph")
        edge_index = to_undirected(edge_index, num_nodes=n)   # said in the dataset description
    edge_index = coalesce(edge_index, num_nodes=n)
    rows = x.sum(1, keepdim=True)
    x = x / rows.clamp(min=1e-12) if bool((x >= 0).all()) else x
    g = {"x": x, "edge_index": edge_index, "y": y, "name": name, **kfold_split(n, fold)}
    labelled = y >= 0
    g["train_mask"] &= labelled
    g["val_mask"] &= labelled
    g["test_mask"] &= labelled
    if not bool(g["train_mask"].any()):
        raise DataError(f"{name}: no training node has a label")
    return g


def num_classes(g: dict) -> int:
    return int(g["y"].max()) + 1


# ---- a seeded citation-like graph -----------------------------------------------------------

def citation_sbm(num_nodes: int = 2995, num_classes: int = 7, num_features: int = 2879, avg_degree: float = 5.45,
                 homophily: float = 0.75, words_per_node: int = 18, topic_share: float = 0.3, seed: int = 0, fold: int = 0) -> dict:
    """Degree-corrected SBM: power-law degree propensities, an edge stays inside its class with
    probability `homophily`; bag-of-words features mix a class topic (30% of the words) with a
    shared background vocabulary. Defaults give Cora_ML's size (2,995 nodes, ~8.2k edges)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, num_nodes)
    theta = rng.pareto(2.5, num_nodes) + 1.0            # degree propensity, heavy tailed
    members = [np.flatnonzero(y == c) for c in range(num_classes)]
    m = int(num_nodes * avg_degree / 2)
    src = rng.choice(num_nodes, m, p=theta / theta.sum())
    same = rng.random(m) < homophily
    dst_class = np.where(same, y[src], (y[src] + rng.integers(1, num_classes, m)) % num_classes)
    dst = np.empty(m, dtype=np.int64)
    for c in range(num_classes):
        pick = np.flatnonzero(dst_class == c)
        w = theta[members[c]]
        dst[pick] = rng.choice(members[c], len(pick), p=w / w.sum())
    # words: each class prefers its own slice of the vocabulary
    topic = rng.permutation(num_features)
    per_class = num_features // num_classes
    counts = np.maximum(1, rng.poisson(words_per_node, num_nodes))
    x = np.zeros((num_nodes, num_features), dtype=np.float32)
    for i in range(num_nodes):
        k = counts[i]
        own = rng.random(k) < topic_share
        cls_words = topic[y[i] * per_class + rng.integers(0, per_class, own.sum())]
        bg_words = rng.integers(0, num_features, k - own.sum())
        x[i, np.concatenate([cls_words, bg_words])] = 1.0
    edge_index = np.stack([src, dst])
    return make_graph(x, edge_index, y, "citation-sbm", fold=fold)


# ---- real graphs that ship offline ----------------------------------------------------------

def read_drosophila_folder(folder: str | Path, fold: int = 0) -> dict:
    """graspologic's drosophila CSVs (``left_adjacency.csv`` + ``left_cell_labels.csv``)."""
    folder = Path(folder)
    adj_p, lab_p = folder / "left_adjacency.csv", folder / "left_cell_labels.csv"
    for p in (adj_p, lab_p):
        if not p.is_file():
            raise DataError(f"{folder}: {p.name} is missing (graspologic's drosophila layout)")
    try:
        adj = np.loadtxt(adj_p)
    except ValueError as exc:
        raise DataError(f"{adj_p}: not a numeric adjacency matrix ({exc})") from None
    labels = [ln.strip() for ln in lab_p.read_text().splitlines() if ln.strip()]
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise DataError(f"{adj_p}: adjacency must be square, got {adj.shape}")
    if len(labels) != adj.shape[0]:
        raise DataError(f"{lab_p}: {len(labels)} labels for {adj.shape[0]} neurons")
    unknown = sorted(set(labels) - set(DROSOPHILA_CLASSES))
    if unknown:
        raise DataError(f"{lab_p}: unknown cell types {unknown}; expected {DROSOPHILA_CLASSES}")
    y = np.array([DROSOPHILA_CLASSES.index(s) for s in labels])
    x = np.concatenate([np.log1p(adj), np.log1p(adj.T)], axis=1)
    src, dst = np.nonzero(adj)
    return make_graph(x, np.stack([src, dst]), y, "drosophila", fold=fold)


def drosophila(fold: int = 0) -> dict:
    return read_drosophila_folder(DROSOPHILA, fold)


def karate(fold: int = 0) -> dict:
    import networkx as nx
    g = nx.karate_club_graph()
    y = np.array([0 if g.nodes[i]["club"] == "Mr. Hi" else 1 for i in g.nodes])
    edges = np.array(list(g.edges())).T
    return make_graph(np.eye(g.number_of_nodes(), dtype=np.float32), edges, y, "karate", fold=fold)


# ---- Planetoid pickles ----------------------------------------------------------------------

class _SafeUnpickler(pickle.Unpickler):
    """Planetoid files hold numpy arrays, scipy sparse matrices and a (default)dict; nothing else
    may be constructed, so a hostile file cannot run code."""
    ALLOWED = {
        ("collections", "defaultdict"), ("builtins", "dict"), ("builtins", "list"), ("builtins", "set"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),   # py2-compatible byte strings
    }

    def find_class(self, module, name):
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)   # Python 2 pickles
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module.startswith("scipy.sparse") and name in ("csr_matrix", "csc_matrix", "coo_matrix", "lil_matrix",
                                                         "csr_array", "csc_array", "coo_array"):
            import scipy.sparse as sp
            return getattr(sp, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _unpickle(path: Path):
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ModuleNotFoundError) as exc:
        raise DataError(f"{path}: not a Planetoid pickle ({exc})") from None


def _dense(a) -> np.ndarray:
    return np.asarray(a.todense() if hasattr(a, "todense") else a, dtype=np.float32)


def read_planetoid(folder: str | Path, fold: int = 0) -> dict:
    """A Planetoid folder (``ind.<name>.*``), assembled as Planetoid/PyG do (test nodes reordered by
    ``test.index``; CiteSeer's isolated test ids get zero rows and no label)."""
    from torch_geometric.io.planetoid import edge_index_from_dict

    folder = Path(folder)
    found = sorted(folder.glob("ind.*.graph")) if folder.is_dir() else []
    if not found:
        raise DataError(f"{folder}: no Planetoid files (ind.<name>.graph) here")
    prefix = found[0].name[len("ind."):-len(".graph")]
    missing = [p for p in PLANETOID_PARTS if not (folder / f"ind.{prefix}.{p}").is_file()]
    if missing:
        raise DataError(f"{folder}: Planetoid file(s) missing: {', '.join(f'ind.{prefix}.{m}' for m in missing)}")
    parts = {p: _unpickle(folder / f"ind.{prefix}.{p}") for p in PLANETOID_PARTS if p != "test.index"}
    try:
        test_index = np.array([int(s) for s in (folder / f"ind.{prefix}.test.index").read_text().split()])
    except ValueError:
        raise DataError(f"{folder}/ind.{prefix}.test.index: expected one node id per line") from None
    tx, ty, allx, ally = (_dense(parts[k]) for k in ("tx", "ty", "allx", "ally"))
    if len(tx) != len(test_index) or len(tx) != len(ty):
        raise DataError(f"{folder}: tx/ty have {len(tx)}/{len(ty)} rows but test.index lists {len(test_index)} nodes")
    lo, hi = int(test_index.min()), int(test_index.max())
    full_tx = np.zeros((hi - lo + 1, tx.shape[1]), dtype=np.float32)
    full_ty = np.zeros((hi - lo + 1, ty.shape[1]), dtype=np.float32)
    full_tx[test_index - lo] = tx
    full_ty[test_index - lo] = ty
    x = np.concatenate([allx, full_tx])
    onehot = np.concatenate([ally, full_ty])
    y = np.where(onehot.sum(1) > 0, onehot.argmax(1), -1)
    graph = parts["graph"]
    if not isinstance(graph, dict):
        raise DataError(f"{folder}/ind.{prefix}.graph: expected a dict of adjacency lists")
    n = x.shape[0]
    edge_index = edge_index_from_dict({int(k): [int(v) for v in vs] for k, vs in graph.items()}, num_nodes=n)
    return make_graph(x, edge_index, y, f"planetoid-{prefix}", fold=fold)


def write_planetoid(g: dict, folder: str | Path, prefix: str, n_train: int = 140, n_test: int = 1000) -> Path:
    """Write a graph in the Planetoid layout (for tests and for users who want the format):
    first `n_train` nodes are x/y, the last `n_test` (shuffled ids) are tx/ty/test.index."""
    import collections

    import scipy.sparse as sp

    from zoo._io import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = g["x"].numpy(), g["y"].numpy()
    n, c = len(y), int(y.max()) + 1
    onehot = np.eye(c, dtype=np.float32)[y]
    n_all = n - n_test
    test_ids = np.arange(n_all, n)
    order = np.random.default_rng(0).permutation(n_test)
    files = {"x": sp.csr_matrix(x[:n_train]), "y": onehot[:n_train], "allx": sp.csr_matrix(x[:n_all]),
             "ally": onehot[:n_all], "tx": sp.csr_matrix(x[test_ids[order]]), "ty": onehot[test_ids[order]]}
    adj = collections.defaultdict(list)
    for s, d in g["edge_index"].t().tolist():
        adj[s].append(d)
    files["graph"] = adj
    for k, v in files.items():
        atomic_write_bytes(folder / f"ind.{prefix}.{k}", pickle.dumps(v, protocol=2))
    atomic_write_text(folder / f"ind.{prefix}.test.index", "\n".join(str(i) for i in test_ids[order]) + "\n")
    return folder


# ---- CitationFull / gnn-benchmark npz -------------------------------------------------------

def read_citationfull(path: str | Path, fold: int = 0) -> dict:
    """A CitationFull ``<name>.npz`` (adj_data/indices/indptr/shape, attr_*, labels) via PyG's reader."""
    from torch_geometric.io import read_npz
    path = Path(path)
    try:
        data = read_npz(str(path), to_undirected=False)
    except KeyError as exc:
        raise DataError(f"{path}: not a CitationFull .npz (missing key {exc})") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc})") from None
    return make_graph(data.x, data.edge_index, data.y, f"citationfull-{path.stem}", fold=fold)


def write_citationfull(g: dict, path: str | Path) -> Path:
    """Write a graph as a CitationFull/gnn-benchmark ``.npz`` (for tests)."""
    import scipy.sparse as sp

    from zoo._io import atomic_write
    n = g["x"].shape[0]
    ei = g["edge_index"].numpy()
    adj = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])), shape=(n, n))
    attr = sp.csr_matrix(g["x"].numpy())
    arrays = {"adj_data": adj.data, "adj_indices": adj.indices, "adj_indptr": adj.indptr, "adj_shape": adj.shape,
              "attr_data": attr.data, "attr_indices": attr.indices, "attr_indptr": attr.indptr,
              "attr_shape": attr.shape, "labels": g["y"].numpy()}

    def write(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return atomic_write(path, write)


def read_graph_path(path: str | Path, fold: int = 0) -> dict:
    """A user's graph: a Planetoid folder, a CitationFull .npz, or a graspologic drosophila folder."""
    p = Path(path)
    if p.is_file() and p.suffix == ".npz":
        return read_citationfull(p, fold)
    if p.is_dir() and any(p.glob("ind.*")):
        return read_planetoid(p, fold)
    if p.is_dir() and (p / "left_adjacency.csv").exists():
        return read_drosophila_folder(p, fold)
    raise DataError(f"{path}: not a graph this task reads (a Planetoid folder with ind.<name>.* files, "
                    f"a CitationFull .npz, or graspologic's drosophila folder)")


# ---- link prediction: ForwardGNN's edge split -------------------------------------------------

def link_split(g: dict, seed: int = 0, val: float = 0.16, test: float = 0.2) -> dict:
    """ForwardGNN's edge protocol through PyG's RandomLinkSplit: 16% of the undirected edges for
    validation, 20% for test, one sampled non-edge per held-out edge (1:1), seeded. Training
    negatives are drawn afresh every epoch by the training module, so none are stored here.

    Keys: ``x``; per split ``<split>_edge_index`` (the edges messages pass along: train edges for
    train and val, train + val edges for test, both directions), ``<split>_pairs`` (2, P) and
    ``<split>_labels`` (P,) float 1/0; ``train_pairs`` holds the training edges once each (all 1)."""
    import torch_geometric.transforms as T
    from torch_geometric.data import Data

    n_edges = g["edge_index"].shape[1] // 2
    if n_edges < 10:
        raise DataError(f"{g.get('name', 'graph')}: {n_edges} edges are too few to hold out 16% + 20% for "
                        f"link prediction")
    split = T.RandomLinkSplit(num_val=val, num_test=test, is_undirected=True, neg_sampling_ratio=1.0,
                              add_negative_train_samples=False, split_labels=False)
    import random
    py_state = random.getstate()   # PyG's negative sampler draws from Python's `random` as well as torch's
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            parts = split(Data(x=g["x"], edge_index=g["edge_index"], num_nodes=g["x"].shape[0]))
    finally:
        random.setstate(py_state)
    out = {"x": g["x"], "edge_index": g["edge_index"], "name": g.get("name", "graph")}
    for key, d in zip(("train", "val", "test"), parts):
        out[f"{key}_edge_index"] = d.edge_index
        out[f"{key}_pairs"] = d.edge_label_index
        out[f"{key}_labels"] = d.edge_label.float()
    return out
