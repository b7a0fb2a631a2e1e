"""ForwardGNN's training procedures (Park et al., ICLR 2024) as training modules on a plain GNN stack
(`zoo.models.forwardgnn.ForwardGNN`), the graph counterpart of `local_learning.py`.

The whole (transductive) graph is one batch and one call of the module is one epoch. Layer-wise
procedures train one layer at a time: its input is the detached output of the finished layers
below, it has its own Adam optimiser (lr 1e-3, weight decay 5e-4, the official hard-coded values),
and it stops early: validation accuracy every `val_every` epochs, stop after `patience`
validations without improvement or `epochs_per_layer` epochs, then the layer's best weights are
restored and the next layer starts. The module runs its own backward and optimiser steps
(`runs_backward = True`); the fine-tune loop's own optimiser is handed a single unused anchor
parameter, so it changes nothing. Progress (current layer, epoch, patience, best weights, every
optimiser's state) is the module's extra state, so `zoo finetune --resume` continues mid-layer.

Procedures (the model's `procedure`):
* ``bp`` - end-to-end backpropagation through the whole stack, one Adam, same early stopping.
* ``sf`` - single-forward: per layer, cross-entropy on the training nodes of the logits
  dot(node, class virtual node) / T on the augmented graph (see the model).
* ``sf-top2loss`` - SF with top-down signals to the loss, as the official `gnn_top2loss_sf.py`: the
  states (normalised layer outputs) start from one bottom-up pass; every epoch (time step) every
  layer reads the previous step's state below it and is scored on the mean of its output and the
  previous step's states above it; each layer has its own Adam and its gradient norm is clipped at
  1.0. The official scripts pass `--alternating-update` but this class ignores it, so that is the
  default; the model's ``alternating_update=true`` runs the even layers, then the odd ones on the
  even layers' fresh outputs (below and above): our interpretation. Early stopping is on the whole
  stack.
* ``ff-la`` - forward-forward with label appending: positive input = features + one-hot true label
  for training nodes (uniform for the others), one negative input per wrong class; goodness = sum
  of squared activations minus theta; BCE-with-logits (positive 1, negative 0) on training nodes.
* ``ff-vn`` - forward-forward with virtual nodes: the label enters through edges to the class
  virtual nodes. The positive graph wires every training node to its true class's node; negative
  graph k wires every training node of another class to node k. Same goodness and BCE as ff-la,
  layer by layer.
* ``sf-top2input`` - SF with top-down signals to the input, as the official `gnn_top2input_sf.py`:
  layer l reads [normalised state l-1, normalised state l+1] (the label state above the top
  layer), states start from one bottom-up pass, one epoch is one time step in the official
  alternating schedule (even layers, then odd ones on the even layers' new outputs; the model's
  ``alternating_update``), each layer trains on its own SF loss with its own Adam. Early stopping
  on the whole stack; prediction runs `test_steps` (10) time steps.
The top-down procedures' states are the module's extra state too, so a resumed run continues from
the states it stopped at.
`LinkPredictionTraining` trains the link predictors (`ForwardGNNLinkPredictor`): ``bp`` end to end,
``sf`` layer by layer (FL-CE: BCE-with-logits of the summed elementwise product of the two end
embeddings, positive = training edges, negative = as many non-edges drawn afresh every epoch),
``sf-top2input`` every layer every epoch with the same loss (the official FL-CE-TopDown; its
optimiser has no weight decay: -o layer_weight_decay=0 for that); early stopping on validation
ROC-AUC.

Validation accuracy for early stopping is that of the model's own prediction from the layers
trained so far (our interpretation: the notes do not say which score the official code watches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from zoo.options import Options


TOP_DOWN = ("sf-top2loss", "sf-top2input")


def update_schedule(n_layers: int, alternating: bool) -> list[list[int]]:
    """The order one time step updates the layers in: the official `--alternating-update` does the
    even layers, then the odd ones; without it every layer updates at once."""
    if alternating:
        return [list(range(0, n_layers, 2)), list(range(1, n_layers, 2))]
    return [list(range(n_layers))]


def top_down_step(states: list, alternating: bool, layer_fn) -> list:
    """One time step over `states` = [input, layer 0 .. layer L-1 outputs, state above the top].
    Layer j gets (below, above) = states j and j+2 of the previous step, or, with the alternating
    schedule, this step's where already computed (the odd layers see the even layers' new outputs).
    `layer_fn(j, below, above)` returns layer j's new output; the new states are returned."""
    n = len(states) - 2
    new = [states[0]] + [None] * n + [states[-1]]
    for group in update_schedule(n, alternating):
        for j in group:
            below = new[j] if alternating and new[j] is not None else states[j]
            above = new[j + 2] if alternating and new[j + 2] is not None else states[j + 2]
            new[j + 1] = layer_fn(j, below, above)
    return new


class GraphForwardOptions(Options):
    epochs_per_layer: int = Field(1000, description="most epochs per layer (official 1000)")
    patience: int = Field(100, description="validations without improvement before a layer stops (official 100)")
    val_every: int = Field(2, description="epochs between validations (official 2)")
    layer_lr: float = Field(1e-3, description="Adam learning rate of each layer's optimiser (official 1e-3)")
    layer_weight_decay: float = Field(5e-4, description="Adam weight decay (official 5e-4)")


class LayerwiseGraphTraining(nn.Module):
    runs_backward = True
    #: procedures that train one layer after another (the rest train every layer in every epoch)
    LAYERWISE = ("sf", "ff-la", "ff-vn")

    def __init__(self, model: nn.Module, options: dict | None = None):
        super().__init__()
        o = GraphForwardOptions.model_validate({k: v for k, v in (options or {}).items()
                                                if k in GraphForwardOptions.model_fields})
        self.model = model
        self.o = o
        self.anchor = nn.Parameter(torch.zeros(1))   # the loop's optimiser steps only this (never has a grad)
        proc = model.procedure
        self.layerwise = proc in self.LAYERWISE
        self.top_down = proc in TOP_DOWN
        # one Adam per layer (official), except bp's single end-to-end one
        per_layer = self.layerwise or self.top_down
        groups = [list(c.parameters()) for c in model.convs] if per_layer else [list(model.parameters())]
        self.opts = [torch.optim.Adam(g, lr=o.layer_lr, weight_decay=o.layer_weight_decay) for g in groups]
        self.phases = len(model.convs) if self.layerwise else 1
        self.phase, self.epoch, self.bad, self.best_acc = 0, 0, 0, -1.0
        self.best: dict[str, torch.Tensor] = {}
        # top-down procedures: the layer outputs of the last time step (states 1..L; the input and
        # the label state are rebuilt from the graph). None until the first bottom-up pass
        self.states: list[torch.Tensor] | None = None
        # the prediction used for validation reads the layers trained so far (all, when all train)
        model.trained_layers.fill_(1 if self.layerwise else len(model.convs))

    def param_groups(self, lr: float):
        return [{"params": [self.anchor], "weight_decay": 0.0}]

    # ---- progress, saved with the module's state dict --------------------------------------------
    def get_extra_state(self):
        return {"phase": self.phase, "epoch": self.epoch, "bad": self.bad, "best_acc": self.best_acc,
                "best": self.best, "opts": [o.state_dict() for o in self.opts], "states": self.states}

    def set_extra_state(self, state):
        self.phase, self.epoch, self.bad = int(state["phase"]), int(state["epoch"]), int(state["bad"])
        self.best_acc, self.best = float(state["best_acc"]), dict(state["best"])
        for opt, st in zip(self.opts, state["opts"]):
            opt.load_state_dict(st)
        states = state.get("states")    # runs saved before the states were kept restart from bottom-up
        self.states = None if states is None else list(states)

    @property
    def done(self) -> bool:
        return self.phase >= self.phases

    def _tracked(self) -> dict[str, nn.Parameter]:
        """The parameters the current phase trains (their best values are kept)."""
        prefix = f"convs.{self.phase}." if self.layerwise else ""
        return {k: p for k, p in self.model.named_parameters() if k.startswith(prefix)}

    # ---- one epoch -------------------------------------------------------------------------------
    def forward(self, g):
        if self.done:
            return torch.zeros(()), {"phase": float(self.phase), "done": 1.0}
        model = self.model
        model.train()
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        loss = self._loss(g)
        if model.procedure == "sf-top2loss":          # official: each layer's own gradient norm
            for conv in model.convs:
                torch.nn.utils.clip_grad_norm_(conv.parameters(), 1.0)
        for opt in (self.opts if self.top_down else [self.opts[self.phase]]):
            opt.step()
        self.epoch += 1
        logs = {"loss": float(loss.detach()), "layer": float(self.phase)}
        if self.epoch % self.o.val_every == 0:
            acc = self._val_score(g)
            logs[self.val_name] = acc
            if acc > self.best_acc:
                self.best_acc, self.bad = acc, 0
                self.best = {k: p.detach().clone() for k, p in self._tracked().items()}
            else:
                self.bad += 1
        if self.bad >= self.o.patience or self.epoch >= self.o.epochs_per_layer:
            self._finish_phase()
        return loss.detach(), logs

    def _finish_phase(self) -> None:
        with torch.no_grad():
            for k, p in self._tracked().items():
                if k in self.best:
                    p.copy_(self.best[k])
        self.phase += 1
        self.epoch, self.bad, self.best_acc, self.best = 0, 0, -1.0, {}
        n_layers = len(self.model.convs)
        self.model.trained_layers.fill_(min(self.phase + 1, n_layers) if self.layerwise and not self.done else n_layers)

    def _loss(self, g):
        proc = self.model.procedure
        if proc == "bp":
            return self._bp(g)
        if proc == "sf":
            return self._sf(g, self.phase)
        if proc == "sf-top2loss":
            return self._top2loss(g)
        if proc == "sf-top2input":
            return self._top2input(g)
        if proc == "ff-vn":
            return self._ffvn(g, self.phase)
        return self._ff(g, self.phase)

    val_name = "val_accuracy"

    @torch.no_grad()
    def _val_score(self, g) -> float:
        self.model.eval()
        pred = self.model(g["x"], g["edge_index"]).argmax(-1)
        self.model.train()
        m = g["val_mask"] if bool(g["val_mask"].any()) else g["train_mask"]
        return float((pred[m] == g["y"][m]).float().mean())

    def _sf_input(self, g):
        """SF's first-layer input (augmented, row-normalised) and graph, built once per graph: they are
        constant data, like the features themselves, so no step pays for (or keeps) a copy."""
        key = tuple((t.data_ptr(), tuple(t.shape)) for t in (g["x"], g["edge_index"], g["y"], g["train_mask"]))
        if getattr(self, "_cache_key", None) != key:
            with torch.no_grad():
                h, ei = self.model.augmented(g["x"], g["edge_index"], self._labels(g))
                self._cache = (F.normalize(h, p=2.0, dim=-1), ei)
            self._cache_key = key
        return self._cache

    def _labels(self, g) -> torch.Tensor:
        return torch.where(g["train_mask"], g["y"], torch.full_like(g["y"], -1))

    def _bp(self, g):
        logits = self.model(g["x"], g["edge_index"])
        loss = F.cross_entropy(logits[g["train_mask"]], g["y"][g["train_mask"]])
        loss.backward()
        return loss

    def _sf(self, g, layer: int):
        model, n = self.model, g["x"].shape[0]
        h, ei = self._sf_input(g)
        with torch.no_grad():
            for i in range(layer):
                h = model.layer(i, h, ei, normalized=i == 0)
        h = model.layer(layer, h.detach(), ei, normalized=layer == 0)
        logits = model.sf_logits(h, n)
        loss = F.cross_entropy(logits[g["train_mask"]], g["y"][g["train_mask"]])
        loss.backward()
        return loss

    def _top2loss(self, g):
        model, n = self.model, g["x"].shape[0]
        h0, ei = self._sf_input(g)
        if self.states is None:
            self.states = model.bottom_up(self._sf_raw(g), ei)[1:]
        states = [h0] + [s.to(h0.device) for s in self.states] + [None]
        train, y = g["train_mask"], g["y"][g["train_mask"]]
        total, new_above = 0.0, {}

        def step(j, below, _):
            nonlocal total
            out = model.layer(j, below.detach(), ei, normalized=True)
            # the states above: the previous step's, or (alternating) this step's where computed
            above = [new_above.get(k, states[k]) if model.alternating_update else states[k]
                     for k in range(j + 2, len(states) - 1)]
            loss = F.cross_entropy(model.sf_logits(model.top2loss_mix(out, above), n)[train], y)
            loss.backward()
            total = total + loss.detach()
            new_above[j + 1] = F.normalize(out.detach(), p=2.0, dim=-1)
            return new_above[j + 1]

        self.states = top_down_step(states, model.alternating_update, step)[1:-1]
        return total / len(model.convs)

    def _top2input(self, g):
        model, n = self.model, g["x"].shape[0]
        h, ei = self._sf_raw(g), self._sf_input(g)[1]
        labels = model.label_state(self._labels(g))
        if self.states is None:
            self.states = model.bottom_up(h, ei, self._labels(g))[1:-1]
        states = [h] + [s.to(h.device) for s in self.states] + [labels]
        train, y = g["train_mask"], g["y"][g["train_mask"]]
        total = 0.0

        def step(j, below, above):
            nonlocal total
            out = model.td_layer(j, below.detach(), above.detach(), ei)
            loss = F.cross_entropy(model.sf_logits(out, n)[train], y)
            loss.backward()   # inputs are detached: each layer's gradient comes from its own loss only
            total = total + loss.detach()
            return out.detach()

        self.states = top_down_step(states, model.alternating_update, step)[1:-1]
        return total / len(model.convs)

    def _sf_raw(self, g):
        """The augmented input before row normalisation (the top-down procedures' bottom-up pass and
        sf-top2input's state 0 normalise inside their layers)."""
        with torch.no_grad():
            return self.model.augmented(g["x"], g["edge_index"], self._labels(g))[0]

    def _ffvn(self, g, layer: int):
        model = self.model
        x, ei, y, train = g["x"], g["edge_index"], g["y"], g["train_mask"]
        n = x.shape[0]
        known = torch.where(train, y, torch.full_like(y, -1))

        def run(labels):
            h, aug = model.augmented(x, ei, labels)
            with torch.no_grad():
                for i in range(layer):
                    h = F.normalize(model.layer(i, h, aug), dim=-1)
            out = model.layer(layer, h.detach(), aug)[:n]
            return out.pow(2).sum(-1) - model.theta   # training goodness: sum of squares - theta

        pos = run(known)[train]
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
        negs = []
        for k in range(model.num_classes):
            wrong = train & (y != k)
            if bool(wrong.any()):
                negs.append(run(torch.where(wrong, torch.full_like(y, k), torch.full_like(y, -1)))[wrong])
        if negs:
            neg = torch.cat(negs)
            loss = 0.5 * (loss + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))
        loss.backward()
        return loss

    def _ff(self, g, layer: int):
        model = self.model
        x, ei, y, train = g["x"], g["edge_index"], g["y"], g["train_mask"]
        n, c = x.shape[0], model.num_classes
        uniform = torch.full((n, c), 1.0 / c, device=x.device)

        def run(label_vec):
            h = model.with_label(x, label_vec)
            with torch.no_grad():
                for i in range(layer):
                    h = F.normalize(model.layer(i, h, ei), dim=-1)
            out = model.layer(layer, h.detach(), ei)
            return out.pow(2).sum(-1) - model.theta   # training goodness: sum of squares - theta

        pos_vec = torch.where(train[:, None], F.one_hot(y.clamp(min=0), c).float(), uniform)
        pos = run(pos_vec)[train]
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
        negs = []
        for k in range(c):
            wrong = train & (y != k)
            if not bool(wrong.any()):
                continue
            vec = torch.where(train[:, None], F.one_hot(torch.full_like(y, k), c).float(), uniform)
            negs.append(run(vec)[wrong])
        if negs:
            neg = torch.cat(negs)
            loss = 0.5 * (loss + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))
        loss.backward()
        return loss


class LinkPredictionTraining(LayerwiseGraphTraining):
    """The same schedule for link predictors: batches are `zoo.data.graphs.link_split` dicts."""
    LAYERWISE = ("sf",)
    val_name = "val_roc_auc"

    def _pairs(self, g):
        from torch_geometric.utils import structured_negative_sampling
        pos = g["train_pairs"]
        # fresh non-edges every epoch, outside the training edges: one (u, w) per training edge (u, v).
        # PyG's structured sampler draws from torch's generator alone, so a seeded run repeats
        ei = g["train_edge_index"]
        u, _, w = structured_negative_sampling(ei, num_nodes=g["x"].shape[0], contains_neg_self_loops=False)
        once = ei[0] < ei[1]
        neg = torch.stack([u[once], w[once]])
        labels = torch.cat([torch.ones(pos.shape[1]), torch.zeros(neg.shape[1])]).to(g["x"].device)
        return torch.cat([pos, neg], 1), labels

    def _loss(self, g):
        model = self.model
        pairs, labels = self._pairs(g)
        x, ei = g["x"], g["train_edge_index"]
        if model.procedure == "sf-top2input":
            return self._top_down_links(x, ei, pairs, labels)
        if model.procedure == "bp":
            h = model.embed(x, ei)[-1]
        else:
            lower = self._frozen(g)
            h = model.layer(self.phase, lower[-1] if lower else x, ei)
        loss = F.binary_cross_entropy_with_logits(model.pair_logit(h, pairs), labels)
        loss.backward()
        return loss

    def _top_down_links(self, x, ei, pairs, labels):
        """One time step of the official FL-CE-TopDown: every layer, in the update schedule, trained
        on its own BCE of the pairs' summed elementwise products; states kept for the next step."""
        model = self.model
        if self.states is None:
            self.states = model.bottom_up(x, ei)[1:-1]
        states = [x] + [s.to(x.device) for s in self.states] + [None]
        total = 0.0

        def step(j, below, above):
            nonlocal total
            out = model.td_layer(j, below.detach(), None if above is None else above.detach(), ei)
            loss = F.binary_cross_entropy_with_logits(model.pair_logit(out, pairs), labels)
            loss.backward()
            total = total + loss.detach()
            return out.detach()

        self.states = top_down_step(states, model.alternating_update, step)[1:-1]
        return total / len(model.convs)

    def _frozen(self, g) -> list[torch.Tensor]:
        """Outputs of the finished (frozen) layers on the training edges: constant while the current
        layer trains, so computed once per layer instead of every epoch."""
        key = (self.phase, g["x"].data_ptr(), g["train_edge_index"].data_ptr())
        if getattr(self, "_frozen_key", None) != key:
            with torch.no_grad():
                outs, h = [], g["x"]
                for i in range(self.phase):
                    h = self.model.layer(i, h, g["train_edge_index"])
                    outs.append(h)
            self._frozen_cache, self._frozen_key = outs, key
        return self._frozen_cache

    @torch.no_grad()
    def _val_score(self, g) -> float:
        model = self.model
        model.eval()
        key = "val" if g["val_pairs"].numel() else "train"
        pairs = g[f"{key}_pairs"]
        if model.procedure == "sf" and key == "val":   # val pairs pass messages along the training edges
            hs = self._frozen(g) + [model.layer(self.phase, (self._frozen(g) or [g["x"]])[-1], g["train_edge_index"])]
            score = sum(torch.sigmoid(model.pair_logit(h, pairs)) for h in hs)
        else:
            score = model(g["x"], g[f"{key}_edge_index"], pairs)
        model.train()
        return roc_auc(score, g[f"{key}_labels"])


def roc_auc(score: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC-AUC in [0, 1] (torchmetrics); nan when only one class is present."""
    from torchmetrics.functional.classification import binary_auroc
    labels = labels.long()
    if labels.min() == labels.max():
        return float("nan")
    return float(binary_auroc(score.float().cpu(), labels.cpu()))


def training_method(model: nn.Module, options: dict | None = None) -> nn.Module:
    return LayerwiseGraphTraining(model, options)


def link_training_method(model: nn.Module, options: dict | None = None) -> nn.Module:
    return LinkPredictionTraining(model, options)
