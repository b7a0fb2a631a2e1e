"""NOBLE: a linear layer with a permanent nonlinear low-rank branch.

    y = x W + b + Up( sigma( Down x ) )

from "NOBLE: Accelerating Transformers with Nonlinear Low-Rank Branches" (Smith, arXiv 2603.06492,
official code github.com/ethansmith2000/noble, Apache-2.0). The branch is trained from scratch
together with the main weight and never merged into it (a linear branch would collapse into W; the
nonlinearity is what makes it worth its parameters).

The default sigma is CosNet, the paper's best: a per-channel cosine with learnable frequency and
phase, an r x r linear mixing layer, and a second independent cosine. Initialisation follows the
official defaults (see `NobleLinear.reset_parameters`).

Learning-rate multipliers. The official code tags tensors with an `lr_mult` attribute and expects
the optimiser's parameter groups to honour it. We compute the multipliers from the layer shapes
instead (`NobleLinear.lr_multipliers`) and turn them into AdamW parameter groups with
`noble_param_groups`, so they survive copies, `load_state_dict` and meta-device builds.
One deliberate difference: upstream sets the CosNet mixing multiplier (min(in, out)/r)**0.5 on the
*module* object, where a group builder that reads `param.lr_mult` never sees it, so it silently
has no effect there. We apply it to the mixing layer's weight and bias as the code's intent reads;
`mix_lr_mult_power=0.0` reproduces upstream's effective behaviour.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from zoo.errors import ConfigError, UnknownNameError


class LearnableCosine(nn.Module):
    """cos(frequency * z + phase), one frequency and one phase per channel, both trained.

    Frequencies start uniform in [min_freq, max_freq] (upstream's "harmonic_random"), phases
    Normal(0, phase_std^2) wrapped into (-2pi, 2pi)."""

    frequency_lr_mult = 2.0
    phase_lr_mult = 4.0

    def __init__(self, dim: int, min_freq: float = 0.8, max_freq: float = 1.2, phase_std: float = 0.1):
        super().__init__()
        self.min_freq, self.max_freq, self.phase_std = min_freq, max_freq, phase_std
        self.frequency = nn.Parameter(torch.empty(dim))
        self.phase = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.frequency.is_meta:
            return
        self.frequency.uniform_(self.min_freq, self.max_freq)
        self.phase.normal_(0.0, self.phase_std)
        self.phase.copy_(torch.fmod(self.phase, 2 * math.pi))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cos(self.frequency * z + self.phase)


class CosNet(nn.Module):
    """cos(w2 * (M cos(w1 * z + p1) + c) + p2): two learnable cosines around an r x r linear."""

    def __init__(self, rank: int, mix_init_scale: float = 0.5):
        super().__init__()
        self.mix_init_scale = mix_init_scale
        self.first = LearnableCosine(rank)
        self.mix = nn.Linear(rank, rank)
        self.second = LearnableCosine(rank)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.mix.weight.is_meta:
            return
        # the mixing bias keeps PyTorch's default uniform init, as upstream does
        nn.init.normal_(self.mix.weight, 0.0, self.mix_init_scale / math.sqrt(self.mix.in_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.second(self.mix(self.first(z)))


def _branch_activation(name: str, rank: int) -> nn.Module:
    choices = {
        "cosnet": lambda: CosNet(rank),
        "cos": lambda: LearnableCosine(rank),
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
    }
    if name not in choices:
        raise UnknownNameError("NOBLE branch activation", name, choices)
    return choices[name]()


class NobleLinear(nn.Module):
    """Drop-in replacement for `nn.Linear(in_features, out_features, bias)` with a NOBLE branch.

    Submodules: `linear` (the main W, b), `down` (in -> rank, with bias), `activation` (CosNet by
    default), `up` (rank -> out, no bias). Extra parameters per layer with CosNet:
    rank*(in+out) + rank**2 + 6*rank.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rank: int = 32,
                 activation: str = "cosnet", up_lr_mult_power: float = 0.2, mix_lr_mult_power: float = 0.5,
                 up_init_scale: float = 0.01, linear_init_scale: float = 0.5):
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"NOBLE rank must be a positive integer, got {rank!r}")
        if rank > min(in_features, out_features):
            raise ConfigError(f"NOBLE rank {rank} is larger than the layer width "
                              f"min({in_features}, {out_features}) = {min(in_features, out_features)}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.activation_name = activation
        self.up_lr_mult_power, self.mix_lr_mult_power = up_lr_mult_power, mix_lr_mult_power
        self.up_init_scale, self.linear_init_scale = up_init_scale, linear_init_scale
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.down = nn.Linear(in_features, rank, bias=True)
        self.activation = _branch_activation(activation, rank)
        self.up = nn.Linear(rank, out_features, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Official defaults: W ~ N(0, (0.5/sqrt(in))^2), b = 0; Down ~ N(0, 1/in), its bias 0;
        Up ~ N(0, (0.01/sqrt(r))^2), so the branch starts close to (but not exactly) zero."""
        if self.linear.weight.is_meta:
            return
        nn.init.normal_(self.linear.weight, 0.0, self.linear_init_scale / math.sqrt(self.in_features))
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)
        nn.init.normal_(self.down.weight, 0.0, 1.0 / math.sqrt(self.in_features))
        nn.init.zeros_(self.down.bias)
        nn.init.normal_(self.up.weight, 0.0, self.up_init_scale / math.sqrt(self.rank))

    @property
    def weight(self) -> torch.Tensor:
        """The main weight, so code that reads `layer.weight` of an nn.Linear keeps working."""
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.activation(self.down(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.branch(x)

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter name (relative to this module) -> learning-rate multiplier; absent means 1."""
        ratio = min(self.in_features, self.out_features) / self.rank
        mults = {"up.weight": ratio ** (2 * self.up_lr_mult_power)}
        for prefix, sub in self.activation.named_modules(prefix="activation"):
            if isinstance(sub, LearnableCosine):
                mults[f"{prefix}.frequency"] = LearnableCosine.frequency_lr_mult
                mults[f"{prefix}.phase"] = LearnableCosine.phase_lr_mult
        if isinstance(self.activation, CosNet):
            mix = ratio ** self.mix_lr_mult_power
            mults["activation.mix.weight"] = mix
            mults["activation.mix.bias"] = mix
        return mults

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"activation={self.activation_name}")


def noble_extra_parameters(in_features: int, out_features: int, rank: int) -> int:
    """Parameters a CosNet NOBLE branch adds to one linear layer: r(in+out) + r^2 + 6r."""
    return rank * (in_features + out_features) + rank * rank + 6 * rank


def lr_multipliers(model: nn.Module) -> dict[str, float]:
    """Full parameter name -> learning-rate multiplier, for every NOBLE parameter in `model`."""
    out: dict[str, float] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, NobleLinear):
            for name, mult in module.lr_multipliers().items():
                out[f"{prefix}.{name}" if prefix else name] = mult
    return out


def noble_param_groups(model: nn.Module, lr: float, weight_decay: float | None = None,
                       no_decay: Iterable[str] = ()) -> list[dict]:
    """Optimizer parameter groups that carry NOBLE's per-parameter learning-rate multipliers.

    Parameters are grouped by (multiplier, decayed?); each group's `lr` is `lr * multiplier` and it
    also records `lr_mult`, so a scheduler that rescales groups proportionally (LambdaLR, cosine)
    keeps the ratios. Vectors (biases, norms, frequencies, phases) and names listed in `no_decay`
    get `weight_decay = 0`; matrices get `weight_decay` when given, else the optimizer's default.
    A model without NOBLE layers gets the same groups with multiplier 1.
    """
    mults = lr_multipliers(model)
    skip = set(no_decay)
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        decay = param.dim() >= 2 and name not in skip
        groups.setdefault((mults.get(name, 1.0), decay), []).append(param)
    out = []
    for (mult, decay), params in sorted(groups.items(), key=lambda kv: kv[0]):
        group = {"params": params, "lr": lr * mult, "lr_mult": mult}
        if not decay:
            group["weight_decay"] = 0.0
        elif weight_decay is not None:
            group["weight_decay"] = weight_decay
        out.append(group)
    return out
