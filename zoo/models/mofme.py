"""MoFME: mixture of feature-modulation experts for all-weather removal (Zhang et al., AAAI 2024,
arXiv 2312.16610), with the two baselines of its official sweep: the plain FFN-expert MoE and the
ViT without MoE.

Clean-room re-implementation from the facts of the official code (RoyZry98/MoFME-Pytorch @522deb8,
no licence; `models/mowe.py`, `models/moe/{film,complete,baseline}.py`):

* head: conv3x3 3 -> 32 and two EDSR ResBlocks (conv-ReLU-conv + skip, biases on);
* encoder on the 32-channel map: patch embedding conv 8x8/8 -> 384 + LayerNorm, `depth` 2 layers,
  8 heads x 64 (inner 512, qkv without bias), MLP ratio 4, dropout 0.1. A positional embedding is
  allocated (one row per 8x8 patch of the training size) but never added: kept so parameter counts
  and the weight layout match the official model (frozen: it never gets a gradient, and DDP
  would otherwise wait for one);
* the feed-forward part of each layer (after pre-norm attention + residual) is one of
    - ``"ffn"`` (the no-MoE ViT): pre-norm MLP 384 -> 1536 -> 384;
    - ``"moe"`` (gate `complete`): N pre-norm MLP experts of that size, a token router
      Linear(384 -> N), keep the top-k logits, softmax, weighted sum;
    - ``"mofme"`` (gate `film`): LayerNorm, then one *shared* gated expert
      h = GELU(W1 x) * (W2 x) (two 384x384 linears), N feature-wise modulation experts
      e(h) = (A_e h) * h + (B_e h) (two 384x384 linears each), weighted by the same top-k router,
      summed, then a shared adaptor MLP 384 -> 1536 -> 384. Each official FME expert also
      allocates a LayerNorm it never uses; we keep it (counts and layout), frozen, it does no work;
* tail: Linear(384 -> 8*8*128) unfolded to a full-resolution 128-channel map, ResBlock, conv
  128 -> 64, ResBlock, conv 64 -> 3, sigmoid.

**Global residual** (config ``residual``). ``"off"`` (default) is what the released runs train:
both official scripts pass ``--disable-residual``, the output is the tail's sigmoid. Without the
flag the official code (`models/mowe.py`, its default) adds the network's *input* to the sigmoid
output: ``out = sigmoid(tail) + input``. Its data loader normalises the degraded input to [-1, 1]
(mean 0.5, std 0.5) but leaves the clean target in [0, 1], and the test clamps the output to
[0, 1]; so in our [0, 1] convention the code's residual is ``out = sigmoid(tail) + (2 x - 1)``,
which is ``x`` only where the sigmoid learns ``1 - x``: a shifted, doubled skip, not an identity.
``"code"`` reproduces exactly that (the head still sees x in [0, 1], as in every mode here).
``"centred"`` is **our interpretation** of a global residual for [0, 1] images:
``out = x + (2 sigmoid(tail) - 1)``, a correction in (-1, 1) that can darken as well as brighten,
with the last conv zero-initialised so that an untrained network returns its input unchanged
(it starts at the do-nothing PSNR and learns the correction). Parameter counts are the same in
every mode.

**Router: paper vs code.** The paper routes with an *uncertainty-aware* router (UaR) whose exact
formula we could not read. ``router="mc"`` (default, **our interpretation**) samples the router
S=5 times with dropout on its input while training and uses the mean weights (a Monte-Carlo
estimate that damps over-confident routing); in eval it is one deterministic pass. ``router="code"``
reproduces the current official code (2025-01-26): while training it evaluates the deterministic
router 5 times and whitens the deviations from their mean by their covariance; the samples are
identical, so every deviation is zero up to float round-off: the weights are zero, or round-off
noise blown up to unit length by the 1e-5 ridge; the mixture carries no routing information during
training (and the official sample list is not even reset between layers). We document this and
do not recommend it. ``router="plain"`` is the router of the earlier commit 33f3b3f (one pass).

Parameter counts at 240x240 (pinned in tests/test_mofme.py against the spec's counts made by
instantiating the official code): ViT 8.71M; MoE N=4/8/16: 15.81M/25.27M/44.19M; MoFME N=4/8/16:
11.68M/14.05M/18.80M; top-k does not change parameters.

Input: images (B, 3, H, W) in [0, 1], H and W multiples of 8; output: restored images, in [0, 1]
with ``residual="off"``, unbounded with a residual (the task clamps to [0, 1] to score and draw, as
the official test does).
Large images are restored tile by tile (overlapping `tile_size` tiles) by the restoration task.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.drop(self.out(y.transpose(1, 2).reshape(b, n, -1)))


def _mlp(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))


class FFN(nn.Module):
    """The no-MoE feed-forward: pre-norm MLP."""

    def __init__(self, dim, hidden, dropout, **_):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, hidden, dropout)

    def forward(self, x):
        return self.mlp(self.norm(x)), None


class Router(nn.Module):
    """Token router: Linear -> keep top-k logits -> softmax (see the module docstring for modes)."""

    def __init__(self, dim: int, experts: int, top_k: int, mode: str, samples: int = 5, dropout: float = 0.1):
        super().__init__()
        if mode not in ("mc", "code", "plain"):
            raise ValueError(f"router must be 'mc', 'code' or 'plain', not {mode!r}")
        if not 0 < top_k <= experts:
            raise ValueError(f"top_k must be in 1..{experts}, not {top_k}")
        self.proj = nn.Linear(dim, experts)
        self.top_k, self.mode, self.samples, self.p = int(top_k), mode, int(samples), float(dropout)

    def _weights(self, x):
        logits = self.proj(x)
        kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf")).softmax(-1)

    def forward(self, x):
        if not self.training or self.mode == "plain":
            return self._weights(x)
        if self.mode == "mc":
            return torch.stack([self._weights(F.dropout(x, self.p, True)) for _ in range(self.samples)]).mean(0)
        # "code": the official whitening of identical samples (degenerates to zero weights)
        draws = torch.stack([self._weights(x) for _ in range(self.samples)])
        mean = draws.mean(0)
        dev = draws - mean
        cov = torch.einsum("sbni,sbnj->bnij", dev, dev) / (self.samples - 1)
        eye = torch.eye(cov.shape[-1], device=x.device, dtype=x.dtype)
        inv = torch.linalg.inv(cov + 1e-5 * eye)
        white = torch.einsum("sbni,bnij->sbnj", dev, inv)
        return (white / (white.norm(dim=-1, keepdim=True) + 1e-5)).mean(0)


class MoE(nn.Module):
    """The conventional MoE: N full pre-norm MLP experts."""

    def __init__(self, dim, hidden, dropout, experts, top_k, router):
        super().__init__()
        self.router = Router(dim, experts, top_k, router)
        self.experts = nn.ModuleList(FFN(dim, hidden, dropout) for _ in range(experts))

    def forward(self, x):
        w = self.router(x)
        y = sum(w[..., i:i + 1] * e(x)[0] for i, e in enumerate(self.experts))
        return y, w


class FMExpert(nn.Module):
    """Feature-wise linear modulation: h -> (A h) * h + (B h)."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Linear(dim, dim)
        self.shift = nn.Linear(dim, dim)
        self.unused_norm = nn.LayerNorm(dim)   # allocated by the official expert, never applied
        self.unused_norm.requires_grad_(False)  # never in the graph: DDP would wait for its gradient

    def forward(self, h):
        return self.scale(h) * h + self.shift(h)


class MoFME(nn.Module):
    """Shared gated expert, N modulation experts under a top-k router, shared adaptor."""

    def __init__(self, dim, hidden, dropout, experts, top_k, router):
        super().__init__()
        self.router = Router(dim, experts, top_k, router)
        self.norm = nn.LayerNorm(dim)
        self.shared_gate = nn.Linear(dim, dim)
        self.shared_value = nn.Linear(dim, dim)
        self.experts = nn.ModuleList(FMExpert(dim) for _ in range(experts))
        self.adaptor = _mlp(dim, hidden, dropout)

    def forward(self, x):
        w = self.router(x)
        h = self.norm(x)
        h = F.gelu(self.shared_gate(h)) * self.shared_value(h)
        y = sum(w[..., i:i + 1] * e(h) for i, e in enumerate(self.experts))
        return self.adaptor(y), w


_FF = {"ffn": FFN, "moe": MoE, "mofme": MoFME}
_RESIDUAL = ("off", "code", "centred")


class Layer(nn.Module):
    def __init__(self, dim, heads, dim_head, hidden, dropout, ff, experts, top_k, router):
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.ff = _FF[ff](dim, hidden, dropout, experts=experts, top_k=top_k, router=router) if ff != "ffn" \
            else FFN(dim, hidden, dropout)

    def forward(self, x):
        x = x + self.attn(x)
        y, w = self.ff(x)
        return x + y, w


class DeweatherNet(nn.Module):
    """The MoWE restoration network of the official code with a choice of feed-forward (see above).
    Implements the restoration task's `RestorationModel` protocol."""

    def __init__(self, ff: str = "mofme", num_experts: int = 8, top_k: int = 2, router: str = "mc",
                 img_size: int = 240, patch_size: int = 8, embed_dim: int = 384, depth: int = 2, heads: int = 8,
                 dim_head: int = 64, mlp_ratio: float = 4.0, dropout: float = 0.1, head_channels: int = 32,
                 tail_scale: int = 4, in_chans: int = 3, residual: str = "off"):
        super().__init__()
        if residual not in _RESIDUAL:
            raise ValueError(f"residual must be one of {', '.join(_RESIDUAL)}, not {residual!r}")
        if ff not in _FF:
            raise ValueError(f"ff must be one of {', '.join(_FF)}, not {ff!r}")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {patch_size}")
        self.in_chans, self.patch_size, self.tile_size = int(in_chans), int(patch_size), int(img_size)
        self.ff_kind, self.num_experts, self.top_k = ff, int(num_experts), int(top_k)
        c, hidden = int(head_channels), int(embed_dim * mlp_ratio)
        self.head = nn.Sequential(nn.Conv2d(in_chans, c, 3, padding=1), ResBlock(c), ResBlock(c))
        self.patch = nn.Conv2d(c, embed_dim, patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        # unused, as official; frozen so DDP does not wait for a gradient that never comes
        self.pos_embedding = nn.Parameter(torch.randn(1, (img_size // patch_size) ** 2, embed_dim), requires_grad=False)
        self.layers = nn.ModuleList(Layer(embed_dim, heads, dim_head, hidden, dropout, ff, num_experts, top_k, router)
                                    for _ in range(depth))
        ct = c * tail_scale
        self.tail_channels = ct
        self.unpatch = nn.Linear(embed_dim, patch_size * patch_size * ct)
        self.tail = nn.Sequential(ResBlock(ct), nn.Conv2d(ct, ct // 2, 3, padding=1), ResBlock(ct // 2),
                                  nn.Conv2d(ct // 2, in_chans, 3, padding=1), nn.Sigmoid())
        self.residual = residual
        if residual == "centred":   # our interpretation: start as the identity (correction 2*sigmoid(0)-1 = 0)
            nn.init.zeros_(self.tail[-2].weight)
            nn.init.zeros_(self.tail[-2].bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Degraded images (B, 3, H, W) in [0, 1] -> restored images, same shape."""
        b, _, h, w = images.shape
        p = self.patch_size
        x = self.patch(self.head(images))
        gh, gw = x.shape[2], x.shape[3]
        x = self.patch_norm(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            x, _ = layer(x)
        x = self.unpatch(x).reshape(b, gh, gw, p, p, self.tail_channels)
        x = x.permute(0, 5, 1, 3, 2, 4).reshape(b, self.tail_channels, gh * p, gw * p)
        y = self.tail(x)
        if self.residual == "code":      # official: sigmoid + the [-1, 1]-normalised input
            return y + (2 * images - 1)
        if self.residual == "centred":   # ours: signed correction around the input
            return images + (2 * y - 1)
        return y

    @torch.no_grad()
    def routing(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Router weights per layer (B, tokens, N) for one batch (empty for the no-MoE ViT)."""
        x = self.patch_norm(self.patch(self.head(images)).flatten(2).transpose(1, 2))
        out = []
        for layer in self.layers:
            x, w = layer(x)
            if w is not None:
                out.append(w)
        return out


def mofme(**config) -> DeweatherNet:
    """MoFME (feature-modulation experts)."""
    return DeweatherNet(**{"ff": "mofme", **config})


def moe(**config) -> DeweatherNet:
    """The conventional FFN-expert MoE baseline of the MoFME sweep."""
    return DeweatherNet(**{"ff": "moe", **config})


def vit(**config) -> DeweatherNet:
    """The no-MoE ViT baseline of the MoFME sweep."""
    return DeweatherNet(**{"ff": "ffn", **config})
