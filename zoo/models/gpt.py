"""A small decoder-only transformer family (GPT) with optional NOBLE branches and VersatileFFN.

One backbone, three switches:
* plain: pre-norm blocks, causal self-attention (separate Q, K, V and output projections),
  a residual feed-forward sub-block (SwiGLU or GELU MLP);
* `noble={"rank": r, ...}`: every projection inside the blocks -- Q, K, V, attention output and
  both FFN linears -- becomes a `NobleLinear` (the NOBLE paper's LLM setup; embeddings and the LM
  head stay plain);
* `versatile={...}`: the feed-forward sub-block becomes a `VersatileFFN` (width + depth reuse).

Variants
* `gpt-mini`, `noble-gpt-mini`, `versatileffn-mini`: our own character-level configurations,
  sized to train on two CPU cores in minutes (not paper variants). They share everything but the
  switch, so their comparison isolates the branch.
* `versatileffn-354m`, `-720m`, `-1210m`: the VersatileFFN paper's OLMo-style models (15 layers,
  d = 1024/1536/2048, SwiGLU with a 8d -> 4d FFN, RMSNorm, RoPE, no biases, untied 50,304-row
  embeddings, 4096 context). With `versatile=None` they are the paper's dense bases whose counts
  the paper states (354.71M, 720.81M, 1.21B); VersatileFFN adds only the router and the loop
  predictor, d * (8 + 4) per layer. The paper gives 16 heads for the 354M model only; the others
  use 16 as well (the head count does not change the parameter count). The official code fuses
  Q, K, V into one d x 3d matrix; we keep them separate, which has the same parameters.
No weights of the paper sizes are public; they are built, counted and trainable, not pretrained.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError, DataError, UnknownNameError
from zoo.layers.noble import NobleLinear, noble_param_groups
from zoo.layers.versatile_ffn import VersatileFFN


# ---- blocks ---------------------------------------------------------------------------------

def _norm(kind: str, dim: int, eps: float) -> nn.Module:
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise UnknownNameError("norm", kind, ["rmsnorm", "layernorm"])


class LinearFactory:
    """Makes the block projections: `nn.Linear`, or `NobleLinear` when a NOBLE config is given."""

    def __init__(self, bias: bool, noble: dict | None):
        self.bias, self.noble = bias, dict(noble) if noble else None

    def __call__(self, in_features: int, out_features: int) -> nn.Module:
        if self.noble is None:
            return nn.Linear(in_features, out_features, bias=self.bias)
        return NobleLinear(in_features, out_features, bias=self.bias, **self.noble)


class RotaryEmbedding(nn.Module):
    """RoPE on half-split channels (GPT-NeoX / OLMo convention), cached up to the context length."""

    def __init__(self, head_dim: int, context_length: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(context_length, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, heads, T, head_dim)
        t = x.shape[-2]
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
        return x * self.cos[:t].to(x.dtype) + rotated * self.sin[:t].to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, linear: LinearFactory, rope: RotaryEmbedding | None):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (linear(dim, dim) for _ in range(4))
        self.rope = rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class ResidualFFN(nn.Module):
    """x + out(act(proj(norm(x)))): SwiGLU (proj to 2 x hidden: value | gate) or GELU MLP."""

    def __init__(self, dim: int, hidden_dim: int, kind: str, linear: LinearFactory, norm: nn.Module):
        super().__init__()
        if kind not in ("swiglu", "gelu"):
            raise UnknownNameError("ffn", kind, ["swiglu", "gelu"])
        self.kind = kind
        self.norm = norm
        self.proj = linear(dim, 2 * hidden_dim if kind == "swiglu" else hidden_dim)
        self.out = linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.proj(self.norm(x))
        if self.kind == "swiglu":
            value, gate = a.chunk(2, dim=-1)
            a = F.silu(gate) * value
        else:
            a = F.gelu(a)
        return x + self.out(a)


class Block(nn.Module):
    def __init__(self, attn_norm: nn.Module, attn: CausalSelfAttention, ffn: nn.Module):
        super().__init__()
        self.attn_norm, self.attn, self.ffn = attn_norm, attn, ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(x + self.attn(self.attn_norm(x)))


# ---- the model ------------------------------------------------------------------------------

class GPT(nn.Module):
    """Decoder-only LM: token ids (B, T) -> next-token logits (B, T, vocab_size).

    `vocab` (a string of characters) makes it a character-level model; the task encodes text with
    it and the checkpoint's config.json carries it. Paper sizes use `vocab_size` only.
    Implements the language-model task's `LanguageModel` protocol.
    """

    def __init__(self, *, vocab: str | None = None, vocab_size: int | None = None, context_length: int = 128,
                 dim: int = 128, depth: int = 4, heads: int = 4, ffn: str = "swiglu", ffn_hidden: int | None = None,
                 norm: str = "rmsnorm", norm_eps: float = 1e-6, pos: str = "rope", bias: bool = False,
                 tie_embeddings: bool = False, noble: dict | None = None, versatile: dict | None = None,
                 balance_loss_weight: float = 5e-5, init: str = "olmo", init_std: float = 0.02):
        super().__init__()
        if vocab is not None:
            if not isinstance(vocab, str) or not vocab or len(set(vocab)) != len(vocab):
                raise ConfigError("vocab must be a non-empty string of distinct characters")
            if vocab_size is not None and vocab_size != len(vocab):
                raise ConfigError(f"vocab has {len(vocab)} characters but vocab_size is {vocab_size}")
            vocab_size = len(vocab)
        if not vocab_size:
            raise ConfigError("GPT needs `vocab` (a character string) or `vocab_size`")
        for key, value in (("context_length", context_length), ("dim", dim), ("depth", depth), ("heads", heads)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if pos not in ("rope", "learned"):
            raise UnknownNameError("position encoding", pos, ["rope", "learned"])
        if init not in ("olmo", "scaled"):
            raise UnknownNameError("init", init, ["olmo", "scaled"])
        if versatile is not None and ffn != "swiglu":
            raise ConfigError("VersatileFFN slices a SwiGLU FFN; use ffn='swiglu'")
        if noble is not None and versatile is not None:
            raise ConfigError("NOBLE and VersatileFFN together are not a configuration of either paper")
        self.vocab = vocab
        self.vocab_size, self.context_length, self.dim = vocab_size, context_length, dim
        self.balance_loss_weight = balance_loss_weight
        self.init, self.init_std = init, init_std
        ffn_hidden = ffn_hidden or 4 * dim
        linear = LinearFactory(bias, noble)

        self.embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Embedding(context_length, dim) if pos == "learned" else None
        rope = RotaryEmbedding(dim // heads, context_length) if pos == "rope" else None
        blocks = []
        for _ in range(depth):
            if versatile is not None:
                ffn_block = VersatileFFN(dim, ffn_hidden, bias=bias, norm_eps=norm_eps, init_std=init_std,
                                         **versatile)
            else:
                ffn_block = ResidualFFN(dim, ffn_hidden, ffn, linear, _norm(norm, dim, norm_eps))
            blocks.append(Block(_norm(norm, dim, norm_eps), CausalSelfAttention(dim, heads, linear, rope), ffn_block))
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = _norm(norm, dim, norm_eps)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        if tie_embeddings:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Embeddings N(0, 0.02^2). Plain linears: "olmo" = truncated N(0, init_std^2) at 3 sigma (the
        VersatileFFN config); "scaled" = N(0, (0.5/sqrt(fan_in))^2), the init NOBLE's code gives its
        main weights, so a baseline with this init differs from its NOBLE twin only by the branch.
        NOBLE layers and the VersatileFFN router/loop predictor keep their own official inits."""
        if self.embed.weight.is_meta:
            return
        nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed.weight, 0.0, 0.02)
        skip = set()
        for module in self.modules():
            if isinstance(module, NobleLinear):
                skip.update(id(m) for m in module.modules())
            elif isinstance(module, VersatileFFN):
                skip.update((id(module.router), id(module.loop_predictor)))
        for module in self.modules():
            if not isinstance(module, nn.Linear) or id(module) in skip or module.weight is self.embed.weight:
                continue
            if self.init == "scaled":
                nn.init.normal_(module.weight, 0.0, 0.5 / math.sqrt(module.in_features))
            else:
                s = self.init_std
                nn.init.trunc_normal_(module.weight, 0.0, s, -3 * s, 3 * s)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2:
            raise DataError(f"expected token ids of shape (batch, length), got {tuple(tokens.shape)}")
        t = tokens.shape[1]
        if t > self.context_length:
            raise DataError(f"a sequence of {t} tokens is longer than the model's context of {self.context_length}")
        x = self.embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed.weight[:t]
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))

    # ---- training helpers ---------------------------------------------------------------------
    def aux_loss(self) -> torch.Tensor | None:
        """Weighted VersatileFFN load-balancing loss of the last training forward (None without it)."""
        losses = [m.balance_loss for m in self.modules() if isinstance(m, VersatileFFN) and m.balance_loss is not None]
        if not losses:
            return None
        return self.balance_loss_weight * torch.stack(losses).sum()

    def mean_loops(self) -> float | None:
        """VersatileFFN's average loop count per token and layer in the last forward (None without it)."""
        loops = [m.last_mean_loops for m in self.modules() if isinstance(m, VersatileFFN) and m.last_mean_loops is not None]
        return float(torch.stack(loops).mean()) if loops else None

    def token_stats(self) -> dict[str, float]:
        """Per-token statistics of the last forward that the language-model task reports."""
        loops = self.mean_loops()
        return {} if loops is None else {"mean_loops": loops}

    def param_groups(self, lr: float, weight_decay: float | None = None) -> list[dict]:
        """Optimizer groups carrying NOBLE's learning-rate multipliers (plain groups otherwise)."""
        return noble_param_groups(self, lr, weight_decay)


# ---- variants -------------------------------------------------------------------------------

#: Our character-level minis (ours, not paper variants): context 128, d 128, 4 layers, 4 heads.
MINI = dict(context_length=128, dim=128, depth=4, heads=4, ffn="swiglu", ffn_hidden=512, norm="rmsnorm",
            pos="rope", bias=False, tie_embeddings=False, init="scaled")
NOBLE_MINI = dict(MINI, noble=dict(rank=16))
VERSATILE_MINI = dict(MINI, versatile=dict(num_experts=8, top_k=2, max_loops=4))

#: VersatileFFN paper (arXiv 2512.14531, Sec. 4 + official configs/model_config.yaml).
_OLMO = dict(vocab_size=50304, context_length=4096, depth=15, heads=16, ffn="swiglu", norm="rmsnorm",
             norm_eps=1e-6, pos="rope", bias=False, tie_embeddings=False, init="olmo", init_std=0.02,
             versatile=dict(num_experts=8, top_k=2, max_loops=4))
VERSATILE_354M = dict(_OLMO, dim=1024, ffn_hidden=4096)
VERSATILE_720M = dict(_OLMO, dim=1536, ffn_hidden=6144)
VERSATILE_1210M = dict(_OLMO, dim=2048, ffn_hidden=8192)


def _build(defaults: dict, overrides: dict[str, Any]) -> GPT:
    return GPT(**{**defaults, **overrides})


def gpt(**config) -> GPT:
    """Any configuration, all keyword arguments of `GPT`."""
    return GPT(**config)


def gpt_mini(**overrides) -> GPT:
    return _build(MINI, overrides)


def noble_gpt_mini(**overrides) -> GPT:
    return _build(NOBLE_MINI, overrides)


def versatileffn_mini(**overrides) -> GPT:
    return _build(VERSATILE_MINI, overrides)


def versatileffn_354m(**overrides) -> GPT:
    return _build(VERSATILE_354M, overrides)


def versatileffn_720m(**overrides) -> GPT:
    return _build(VERSATILE_720M, overrides)


def versatileffn_1210m(**overrides) -> GPT:
    return _build(VERSATILE_1210M, overrides)
