"""ForwardGNN (Park et al., ICLR 2024, arXiv 2403.11004): plain GNN stacks that forward-learning
procedures train layer by layer (the procedures live in `zoo/layers/graph_forward_learning.py`).

Backbones, as the official `gnn_conv.py` builds them (facts only; the code is CC BY-NC): PyG
GCNConv, SAGEConv (mean aggregation) or GATConv (4 heads, hidden/4 per head, concatenated), each
followed by ReLU; hidden 128, 4 layers.

What the model holds depends on its procedure:

* ``bp`` - the backpropagation baseline: the conv stack and a linear classifier on the last layer
  (our interpretation: the notes do not say how the official BP script reads out classes).
* ``sf`` (single-forward) - one virtual node per class with fixed random features (drawn N(0, 1)
  as a fresh nn.Embedding is, never trained). Every training node is wired both ways to its
  class's virtual node. Each layer L2-normalises its input rows, applies its conv and ReLU; its
  class logits are dot(node, virtual node of the class) / temperature. The prediction sums the
  per-layer softmax over the layers trained so far and takes the argmax.
* ``sf-top2loss`` - SF whose layer l is scored on the mean of its own output and the (normalised)
  outputs of the layers above. The prediction, as the official `eval_model`: one bottom-up pass
  (raw outputs passed on, normalised copies kept as the states), then layer l applied to state l
  and averaged with states l+2.. above it; softmax summed over the layers.
* ``sf-top2input`` - SF whose layer l reads [normalised state of layer l-1, normalised state of
  layer l+1]; above the top layer sits the label state (one-hot for training nodes, uniform for
  the others, one-hot for each class's virtual node), so the top layer is hidden + classes wide.
  States start from one bottom-up pass with zeros as the top-down half. One time step updates
  the layers in the official schedule (`alternating_update`: the even layers from the previous
  step's states, then the odd ones from the even layers' new outputs; otherwise every layer from
  the previous step's states). The prediction runs `test_steps` (10) time steps and sums the
  softmax of every layer at every step from the third on (the official `storable_time_steps`).
* ``ff-vn`` (forward-forward with virtual nodes) - the class virtual nodes (fixed random features,
  as SF's) carry the label through edges: candidate class c wires a node to c's virtual node. The
  prediction keeps the training nodes wired to their own class, wires every other node to each
  class in turn and takes the class with the highest goodness (mean of squares minus theta, summed
  over the layers; between layers only the direction passes on, as in FF).
* ``ff-la`` (forward-forward with label appending) - the input is the features with a label
  vector appended (one-hot for training nodes, uniform for the others); goodness of a layer is the
  mean of squared activations minus theta (2.0) at prediction; prediction appends each candidate
  label in turn and takes the label whose summed goodness is highest.

Inference is transductive: the buffers hold the training labels (-1 where a node has none), the
node count and a fingerprint of the graph the model was trained on; `check_graph` refuses any other
graph with one line.

`ForwardGNNLinkPredictor` is the same stack for link prediction (``bp``, ``sf`` or
``sf-top2input``, the three the official scripts run: BP, FL-CE and FL-CE-TopDown; the code's
goodness-based FF link predictor, which no official script runs, is not built): the score of a pair
(u, v) at a layer is sigmoid(sum(h_u * h_v)); ``sf`` sums it over the layers, the BP baseline
reads the last layer only, ``sf-top2input`` (layer l reads [normalised layer l-1, normalised layer
l+1], nothing above the top layer; same time steps and schedule as for node classification)
averages it over the layers and the time steps from the third on. ``ff-la``, ``ff-vn`` and
``sf-top2loss`` are refused: the first two carry node labels (appended, or through class virtual
nodes) and link prediction has none; the official code has no top-to-loss link predictor. It
binds to no graph (nothing about a graph is stored), so it scores pairs of any graph with its
feature width.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.graph_forward_learning import TOP_DOWN, top_down_step

PROCEDURES = ("bp", "sf", "sf-top2loss", "sf-top2input", "ff-la", "ff-vn")
LINK_PROCEDURES = ("bp", "sf", "sf-top2input")
#: why a node-classification procedure has no link-prediction counterpart (the official code's facts)
LINK_REFUSED = {
    "ff-la": "it appends node labels to the features and link prediction has no node labels",
    "ff-vn": "it wires nodes to class virtual nodes and link prediction has no node labels",
    "sf-top2loss": "the official code has no top-to-loss link predictor (its top-down one is sf-top2input)",
}
BACKBONES = ("gcn", "sage", "gat")
def make_conv(backbone: str, c_in: int, c_out: int, heads: int = 4) -> nn.Module:
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv
    if backbone == "gcn":
        return GCNConv(c_in, c_out)
    if backbone == "sage":
        return SAGEConv(c_in, c_out, aggr="mean")
    if backbone == "gat":
        if c_out % heads:
            raise ValueError(f"GAT width {c_out} is not divisible by {heads} heads")
        return GATConv(c_in, c_out // heads, heads=heads, concat=True)
    raise ValueError(f"unknown backbone '{backbone}'; one of {BACKBONES}")


def graph_fingerprint(edge_index: torch.Tensor, num_nodes: int) -> int:
    """A 62-bit fingerprint of a graph's structure (node count + sorted edge list)."""
    import numpy as np
    ei = edge_index.detach().cpu().to(torch.int64)
    key = ei[0] * (num_nodes + 1) + ei[1]
    key, _ = torch.sort(key)
    digest = hashlib.sha256(np.int64(num_nodes).tobytes() + key.numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


class ForwardGNN(nn.Module):
    def __init__(self, in_channels: int = 2879, num_classes: int = 7, num_nodes: int = 2995, hidden: int = 128,
                 layers: int = 4, backbone: str = "gcn", procedure: str = "sf", heads: int = 4,
                 temperature: float = 1.0, theta: float = 2.0, seed: int = 0, test_steps: int = 10,
                 alternating_update: bool | None = None):
        super().__init__()
        if procedure not in PROCEDURES:
            raise ValueError(f"unknown procedure '{procedure}'; one of {PROCEDURES}")
        self.in_channels, self.num_classes, self.num_nodes = in_channels, num_classes, num_nodes
        self.hidden, self.backbone, self.procedure = hidden, backbone, procedure
        self.temperature, self.theta, self.test_steps = temperature, theta, test_steps
        # the official scripts pass --alternating-update to both top-down procedures, but only the
        # top2input class reads it: top2loss updates every layer from the previous step's states.
        # Alternating top2loss (even layers, then odd ones on their fresh outputs) is our
        # interpretation, reachable with alternating_update=true
        self.alternating_update = (procedure == "sf-top2input") if alternating_update is None else alternating_update
        c_in = in_channels + (num_classes if procedure == "ff-la" else 0)
        widths = [c_in] + [hidden] * layers
        # sf-top2input: layer l also reads the state above it (the next layer's output; the label
        # state, num_classes wide, above the top layer)
        above = [hidden] * (layers - 1) + [num_classes] if procedure == "sf-top2input" else [0] * layers
        self.convs = nn.ModuleList(make_conv(backbone, a + t, b, heads)
                                   for a, b, t in zip(widths[:-1], widths[1:], above))
        self.classifier = nn.Linear(hidden, num_classes) if procedure == "bp" else None
        g = torch.Generator().manual_seed(seed)
        # fixed random virtual-node features (never trained), part of the checkpoint
        self.register_buffer("virtual_x", torch.randn(num_classes, in_channels, generator=g)
                             if procedure.startswith("sf") or procedure == "ff-vn" else torch.zeros(0, in_channels))
        self.register_buffer("train_labels", torch.full((num_nodes,), -1, dtype=torch.long))
        self.register_buffer("graph_key", torch.zeros(1, dtype=torch.long))
        # how many layers the layer-wise procedure has finished (bp: all of them at once)
        self.register_buffer("trained_layers", torch.full((1,), layers if procedure == "bp" else 0, dtype=torch.long))

    # ---- the graph the model is bound to ---------------------------------------------------------
    def bind(self, graph: dict) -> None:
        """Remember the training graph: its fingerprint and the labels of its training nodes."""
        self.check_shapes(graph)
        labels = torch.where(graph["train_mask"], graph["y"], torch.full_like(graph["y"], -1))
        self.train_labels.copy_(labels.to(self.train_labels.device))
        self.graph_key.fill_(graph_fingerprint(graph["edge_index"], graph["x"].shape[0]))

    def check_shapes(self, graph: dict) -> None:
        from zoo.errors import DataError
        n, f = graph["x"].shape
        if f != self.in_channels:
            raise DataError(f"the graph has {f} features per node but this model takes {self.in_channels}; "
                            f"train one for it with -o config='{{\"in_channels\": {f}, \"num_nodes\": {n}, "
                            f"\"num_classes\": {int(graph['y'].max()) + 1}}}'")
        if n != self.num_nodes:
            raise DataError(f"the graph has {n} nodes but this model was built for {self.num_nodes}: inference is "
                            f"transductive; train one for this graph (-o config='{{\"num_nodes\": {n}}}')")
        if int(graph["y"].max()) >= self.num_classes:
            raise DataError(f"the graph has {int(graph['y'].max()) + 1} classes but this model predicts "
                            f"{self.num_classes}")

    def check_graph(self, graph: dict) -> None:
        """Refuse a graph this (transductive) model was not trained on."""
        from zoo.errors import DataError
        self.check_shapes(graph)
        key = int(self.graph_key.item())
        if key == 0:
            raise DataError("this model has not been trained on any graph yet (no checkpoint): "
                            "run zoo finetune first")
        if key != graph_fingerprint(graph["edge_index"], graph["x"].shape[0]):
            raise DataError(f"{graph.get('name', 'this graph')} is not the graph this model was trained on; "
                            f"inference is transductive: train one on it with zoo finetune")

    # ---- layers ----------------------------------------------------------------------------------
    def augmented(self, x: torch.Tensor, edge_index: torch.Tensor, labels: torch.Tensor):
        """SF's graph: class virtual nodes appended after the real ones, each wired both ways to the
        nodes whose (training) label is its class."""
        n = x.shape[0]
        idx = torch.arange(n, device=x.device)
        has = labels >= 0
        src = idx[has]
        vn = labels[has] + n
        extra = torch.stack([torch.cat([src, vn]), torch.cat([vn, src])])
        return torch.cat([x, self.virtual_x.to(x.dtype)], 0), torch.cat([edge_index, extra], 1)

    def layer(self, i: int, h: torch.Tensor, edge_index: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        if self.procedure.startswith("sf") and not normalized:
            h = F.normalize(h, p=2.0, dim=-1)
        return F.relu(self.convs[i](h, edge_index))

    def sf_logits(self, h: torch.Tensor, n: int) -> torch.Tensor:
        """Class logits of the real nodes from one SF layer's output on the augmented graph."""
        return h[:n] @ h[n:].t() / self.temperature

    # ---- top-down procedures: states over time steps ---------------------------------------------
    def label_state(self, labels: torch.Tensor) -> torch.Tensor:
        """sf-top2input's state above the top layer, one row per node of the augmented graph: the
        one-hot label of a training node, uniform for the others, one-hot for each virtual node."""
        c = self.num_classes
        real = torch.where((labels >= 0)[:, None], F.one_hot(labels.clamp(min=0), c).to(self.virtual_x.dtype),
                           torch.full((labels.shape[0], c), 1.0 / c, dtype=self.virtual_x.dtype, device=labels.device))
        return torch.cat([real, torch.eye(c, dtype=real.dtype, device=real.device)], 0)

    def td_layer(self, i: int, below: torch.Tensor, above: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """sf-top2input's layer i: conv + ReLU of [normalised state below, normalised state above]."""
        inp = torch.cat([F.normalize(below, p=2.0, dim=-1), F.normalize(above.to(below.dtype), p=2.0, dim=-1)], -1)
        return F.relu(self.convs[i](inp, edge_index))

    @torch.no_grad()
    def bottom_up(self, h: torch.Tensor, edge_index: torch.Tensor, labels: torch.Tensor | None = None) -> list:
        """The states a top-down procedure starts from: one bottom-up pass over the augmented input
        `h` (raw). sf-top2input: [h, layer outputs with zeros as their top-down half, label state];
        sf-top2loss: [normalised h, normalised layer outputs] (the raw outputs are passed on)."""
        if self.procedure == "sf-top2input":
            states, x = [h], h
            for i, conv in enumerate(self.convs):
                zeros = h.new_zeros(h.shape[0], conv.in_channels - x.shape[1])
                x = self.td_layer(i, x, zeros, edge_index)
                states.append(x)
            return states + [self.label_state(labels)]
        states, x = [F.normalize(h, p=2.0, dim=-1)], h
        for i in range(len(self.convs)):
            x = self.layer(i, x, edge_index, normalized=True)
            states.append(F.normalize(x, p=2.0, dim=-1))
        return states

    def top2loss_mix(self, out: torch.Tensor, above: list) -> torch.Tensor:
        """sf-top2loss: what layer l is scored on, the mean of its output and the states above it."""
        return torch.stack([out, *above]).mean(0) if above else out

    def stored_steps(self) -> list[int]:
        """The time steps whose probabilities the prediction sums (official: all but the first two)."""
        return list(range(2, self.test_steps)) if self.test_steps > 2 else [self.test_steps - 1]

    def with_label(self, x: torch.Tensor, label_vec: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, label_vec.to(x.dtype)], 1)

    def goodness(self, h: torch.Tensor) -> torch.Tensor:
        return h.pow(2).mean(-1) - self.theta

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Class scores (N, C) of every node of the bound graph."""
        n = x.shape[0]
        depth = len(self.convs) if self.procedure == "bp" else max(1, int(self.trained_layers.item()))
        if self.procedure == "bp":
            h = x
            for i in range(len(self.convs)):
                h = self.layer(i, h, edge_index)
            return self.classifier(h)
        if self.procedure == "sf-top2input":
            h0, ei = self.augmented(x, edge_index, self.train_labels[:n])
            states, keep, score = self.bottom_up(h0, ei, self.train_labels[:n]), self.stored_steps(), 0

            def step(j, below, above):
                nonlocal score
                out = self.td_layer(j, below, above, ei)
                if t in keep:
                    score = score + torch.softmax(self.sf_logits(out, n), -1)
                return out

            for t in range(self.test_steps):
                states = top_down_step(states, self.alternating_update, step)
            return score
        if self.procedure == "sf-top2loss":
            h0, ei = self.augmented(x, edge_index, self.train_labels[:n])
            states = self.bottom_up(h0, ei)
            score = x.new_zeros(n, self.num_classes)
            for i in range(len(self.convs)):
                out = self.layer(i, states[i], ei, normalized=True)
                score = score + torch.softmax(self.sf_logits(self.top2loss_mix(out, states[i + 2:]), n), -1)
            return score
        if self.procedure.startswith("sf"):
            h, ei = self.augmented(x, edge_index, self.train_labels[:n])
            score = x.new_zeros(n, self.num_classes)
            for i in range(depth):
                h = self.layer(i, h, ei)
                score = score + torch.softmax(self.sf_logits(h, n), -1)
            return score
        known = self.train_labels[:n]
        if self.procedure == "ff-vn":
            scores = []
            for c in range(self.num_classes):
                # training nodes stay wired to their own class (the positive graph), the rest to c
                h, ei = self.augmented(x, edge_index, torch.where(known >= 0, known, torch.full_like(known, c)))
                total = x.new_zeros(n)
                for i in range(depth):
                    h = self.layer(i, h, ei)
                    total = total + self.goodness(h[:n])
                    h = F.normalize(h, dim=-1)
                scores.append(total)
            return torch.stack(scores, 1)
        # ff-la: goodness of each candidate label, summed over layers
        scores = []
        for c in range(self.num_classes):
            # training nodes keep their own label (as in the positive graph), the rest get candidate c
            lab = torch.where(known >= 0, known, torch.full_like(known, c))
            h = self.with_label(x, F.one_hot(lab, self.num_classes))
            total = x.new_zeros(n)
            for i in range(depth):
                h = self.layer(i, h, edge_index)
                total = total + self.goodness(h)
                h = F.normalize(h, dim=-1)   # FF: only the direction passes on
            scores.append(total)
        return torch.stack(scores, 1)

    def example_graph(self, seed: int = 0) -> dict:
        """A random graph of the bound size (export, bench and the contract test)."""
        g = torch.Generator().manual_seed(seed)
        n = self.num_nodes
        m = max(n * 2, 4)
        src = torch.randint(0, n, (m,), generator=g)
        dst = torch.randint(0, n, (m,), generator=g)
        keep = src != dst
        ei = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
        x = torch.rand(n, self.in_channels, generator=g)
        y = torch.arange(n) % self.num_classes
        perm = torch.randperm(n, generator=g)
        masks = {k: torch.zeros(n, dtype=torch.bool) for k in ("train_mask", "val_mask", "test_mask")}
        cut = [int(n * 0.64), int(n * 0.8)]
        masks["train_mask"][perm[:cut[0]]] = True
        masks["val_mask"][perm[cut[0]:cut[1]]] = True
        masks["test_mask"][perm[cut[1]:]] = True
        return {"x": x, "edge_index": ei, "y": y, **masks}


def forwardgnn(**config) -> ForwardGNN:
    return ForwardGNN(**config)


class ForwardGNNLinkPredictor(nn.Module):
    def __init__(self, in_channels: int = 2879, hidden: int = 128, layers: int = 4, backbone: str = "gcn",
                 procedure: str = "sf", heads: int = 4, test_steps: int = 10, alternating_update: bool = True):
        super().__init__()
        if procedure not in LINK_PROCEDURES:
            why = f": {LINK_REFUSED[procedure]}" if procedure in LINK_REFUSED else ""
            raise ValueError(f"link prediction trains with {', '.join(LINK_PROCEDURES)}, not '{procedure}'{why}")
        self.in_channels, self.hidden, self.backbone, self.procedure = in_channels, hidden, backbone, procedure
        # sf-top2input: as the official script runs it (--alternating-update), 10 test-time steps
        self.test_steps, self.alternating_update = test_steps, alternating_update
        widths = [in_channels] + [hidden] * layers
        # sf-top2input: layer l also reads layer l+1's output (nothing above the top layer)
        above = [hidden] * (layers - 1) + [0] if procedure == "sf-top2input" else [0] * layers
        self.convs = nn.ModuleList(make_conv(backbone, a + t, b, heads)
                                   for a, b, t in zip(widths[:-1], widths[1:], above))
        layerwise = procedure == "sf"
        self.register_buffer("trained_layers", torch.full((1,), 0 if layerwise else layers, dtype=torch.long))

    # ---- sf-top2input (the official FL-CE-TopDown) -----------------------------------------------
    def td_layer(self, i: int, below: torch.Tensor, above: torch.Tensor | None, edge_index: torch.Tensor):
        h = F.normalize(below, p=2.0, dim=-1)
        if above is not None:
            h = torch.cat([h, F.normalize(above.to(h.dtype), p=2.0, dim=-1)], -1)
        return F.relu(self.convs[i](h, edge_index))

    @torch.no_grad()
    def bottom_up(self, x: torch.Tensor, edge_index: torch.Tensor) -> list:
        """[x, layer outputs with zeros as their top-down half, None (nothing above the top)]."""
        states, h = [x], x
        for i, conv in enumerate(self.convs):
            top = conv.in_channels - h.shape[1]
            h = self.td_layer(i, h, h.new_zeros(h.shape[0], top) if top else None, edge_index)
            states.append(h)
        return states + [None]

    def check_graph(self, graph: dict) -> None:
        from zoo.errors import DataError
        f = graph["x"].shape[1]
        if f != self.in_channels:
            raise DataError(f"the graph has {f} features per node but this model takes {self.in_channels}; "
                            f"train one for it with -o config='{{\"in_channels\": {f}}}'")

    def layer(self, i: int, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        if self.procedure == "sf":   # forward learning: each layer sees only the direction of its input
            h = F.normalize(h, p=2.0, dim=-1)
        return F.relu(self.convs[i](h, edge_index))

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> list[torch.Tensor]:
        """Every trained layer's node embeddings (bp: all layers)."""
        depth = len(self.convs) if self.procedure == "bp" else max(1, int(self.trained_layers.item()))
        outs, h = [], x
        for i in range(depth):
            h = self.layer(i, h, edge_index)
            outs.append(h)
        return outs

    @staticmethod
    def pair_logit(h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return (h[pairs[0]] * h[pairs[1]]).sum(-1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Node features (N, F), the edges messages pass along (2, E) and node pairs (2, P) -> a score
        per pair (higher = more likely an edge)."""
        if self.procedure == "sf-top2input":
            return self.top_down_scores(x, edge_index, pairs)
        hs = self.embed(x, edge_index)
        if self.procedure == "bp":
            return torch.sigmoid(self.pair_logit(hs[-1], pairs))
        return sum(torch.sigmoid(self.pair_logit(h, pairs)) for h in hs)

    def top_down_scores(self, x: torch.Tensor, edge_index: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """sf-top2input: `test_steps` time steps from the bottom-up states; the pair's sigmoid score
        averaged over every layer of every step from the third on (the official eval)."""
        keep = range(2, self.test_steps) if self.test_steps > 2 else [self.test_steps - 1]
        scores = []

        def step(j, below, above):
            out = self.td_layer(j, below, above, edge_index)
            if t in keep:
                scores.append(torch.sigmoid(self.pair_logit(out, pairs)))
            return out

        states = self.bottom_up(x, edge_index)
        for t in range(self.test_steps):
            states = top_down_step(states, self.alternating_update, step)
        return torch.stack(scores).mean(0)

    def example_graph(self, seed: int = 0, num_nodes: int = 60) -> dict:
        """A seeded random undirected graph with this model's feature width."""
        g = torch.Generator().manual_seed(seed)
        n = num_nodes
        src = torch.randint(0, n, (n * 3,), generator=g)
        dst = torch.randint(0, n, (n * 3,), generator=g)
        keep = src != dst
        ei = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
        ei = torch.unique(ei, dim=1)
        return {"x": torch.rand(n, self.in_channels, generator=g), "edge_index": ei, "name": "example"}


def forwardgnn_lp(**config) -> ForwardGNNLinkPredictor:
    return ForwardGNNLinkPredictor(**config)


def conv_params(backbone: str, c_in: int, c_out: int, heads: int = 4) -> int:
    """Parameter count of one conv layer by formula (pinned against the built modules in tests)."""
    if backbone == "gcn":
        return c_in * c_out + c_out
    if backbone == "sage":
        return 2 * c_in * c_out + c_out           # lin_l (with bias) and lin_r (no bias)
    if backbone == "gat":
        return c_in * c_out + 3 * c_out           # shared lin, att_src, att_dst, bias
    raise ValueError(backbone)
