"""VersatileFFN: one SwiGLU feed-forward network reused in width (virtual experts) and in depth
(recursion), mixed per token by a difficulty-aware gate.

From "VersatileFFN: Achieving Parameter Efficiency in LLMs via Adaptive Wide-and-Deep Reuse"
(Nie et al., arXiv 2512.14531; official code huawei-noah/noah-research/VersatileFFN, Apache-2.0,
`OLMoVersatileBlock`). The module maps the residual stream after attention, H, to the block output:

    F(H)      = H + W_out SwiGLU(W_proj RMSNorm(H))              the shared FFN, residual included
    width:      Y_w = sum_{k in top-k} g_k (H + expert_k(H))      expert_k = a slice of the hidden units
    depth:      H_l = F(H_{l-1}), l = 1..L_max;  Y_d = H_{l*}     l* from a learned loop predictor
    gate:       lambda = (L_max - E[l]) / L_max,   Y = lambda Y_w + (1 - lambda) Y_d

Virtual experts are disjoint slices of the SwiGLU hidden units of the same W_proj/W_out (no new
FFN weights): expert k uses units [floor(k S), floor(k S) + d_e) with S = (d_hidden - d_e)/(N - 1);
the official code uses d_e = d_hidden / N, i.e. a plain partition, which is our default.
The only new weights are the router (d -> N) and the loop predictor (d -> L_max), both bias-free.

Training samples the loop count with hard (straight-through) Gumbel-softmax whose temperature
decays 5.0 -> 0.1 by x0.99984 per training forward, computes all L_max iterates and mixes them by
the one-hot sample; inference takes the argmax loop count and stops after the largest one needed.
`balance_loss` (Switch-style, N * sum_i f_i P_i) is left on the module after each training forward;
the model adds it to the LM loss with weight 5e-5 (the shipped config; the paper text says 1e-5 --
we follow the code).

Implementation note: the width path evaluates every expert's slice for every token and weights
the unrouted ones by zero. Because the slices partition the hidden units this costs one FFN pass
and gives exactly the output of the per-expert dispatch in the official code (a test pins the
equality); a sparse dispatch would only pay off for large models on accelerators. Likewise, tokens
whose gate is 0 (L_max loops predicted) still run through the width path at inference, multiplied
by 0, so the graph has static shapes and exports to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError


def _static_graph() -> bool:
    """True while tracing/exporting, where data-dependent early exits must not appear."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    for probe in ("is_exporting", "is_compiling"):
        fn = getattr(compiler, probe, None)
        if fn is not None and fn():
            return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def expert_slices(hidden_dim: int, num_experts: int, expert_dim: int) -> list[range]:
    """The hidden units each virtual expert owns (paper Sec. 3: stride S = (d_h - d_e)/(N - 1))."""
    if num_experts < 1 or expert_dim < 1 or num_experts * expert_dim > hidden_dim:
        raise ConfigError(f"VersatileFFN needs num_experts * expert_dim <= hidden_dim, got "
                          f"{num_experts} x {expert_dim} > {hidden_dim}")
    if num_experts == 1:
        return [range(0, expert_dim)]
    stride = (hidden_dim - expert_dim) / (num_experts - 1)
    return [range(int(k * stride), int(k * stride) + expert_dim) for k in range(num_experts)]


class VersatileFFN(nn.Module):
    """Drop-in FFN sub-block (pre-norm and residual included): (B, T, dim) -> (B, T, dim)."""

    def __init__(self, dim: int, hidden_dim: int, num_experts: int = 8, top_k: int = 2, max_loops: int = 4,
                 expert_dim: int | None = None, bias: bool = False, norm_eps: float = 1e-6,
                 tau_start: float = 5.0, tau_end: float = 0.1, tau_decay: float = 0.99984,
                 init_std: float = 0.02):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ConfigError(f"VersatileFFN top_k must be in 1..num_experts={num_experts}, got {top_k}")
        if max_loops < 1:
            raise ConfigError(f"VersatileFFN max_loops must be >= 1, got {max_loops}")
        expert_dim = expert_dim or hidden_dim // num_experts
        slices = expert_slices(hidden_dim, num_experts, expert_dim)
        self.dim, self.hidden_dim = dim, hidden_dim
        self.num_experts, self.top_k, self.max_loops, self.expert_dim = num_experts, top_k, max_loops, expert_dim
        self.tau_start, self.tau_end, self.tau_decay = tau_start, tau_end, tau_decay
        self.init_std = init_std

        self.norm = nn.RMSNorm(dim, eps=norm_eps)
        self.proj = nn.Linear(dim, 2 * hidden_dim, bias=bias)   # [value | gate] halves, SwiGLU
        self.out = nn.Linear(hidden_dim, dim, bias=bias)
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.loop_predictor = nn.Linear(dim, max_loops, bias=False)

        units = [u for s in slices for u in s]
        self._is_partition = units == list(range(hidden_dim))
        self.register_buffer("expert_units", torch.tensor(units, dtype=torch.long), persistent=False)
        # the annealing clock is state: a resumed run continues at the same temperature
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self.balance_loss: torch.Tensor | None = None
        self.last_mean_loops: torch.Tensor | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """OLMo "normal" init of the official config: truncated N(0, 0.02^2), cut at 3 sigma."""
        if self.proj.weight.is_meta:
            return
        std = self.init_std
        for layer in (self.proj, self.out, self.router, self.loop_predictor):
            nn.init.trunc_normal_(layer.weight, 0.0, std, -3 * std, 3 * std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    # ---- the shared FFN -------------------------------------------------------------------
    @staticmethod
    def _swiglu(a: torch.Tensor) -> torch.Tensor:
        value, gate = a.chunk(2, dim=-1)
        return F.silu(gate) * value

    def ffn(self, h: torch.Tensor) -> torch.Tensor:
        """One full pass of the shared FFN with its residual: F(H)."""
        return h + self.out(self._swiglu(self.proj(self.norm(h))))

    def temperature(self) -> float:
        return max(self.tau_start * self.tau_decay ** int(self.train_steps), self.tau_end)

    # ---- width path -----------------------------------------------------------------------
    def route(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (dense expert weights (..., N) with k non-zeros summing to 1, top-k ids, router logits)."""
        logits = self.router(h)
        top_logits, top_ids = torch.topk(logits, self.top_k, dim=-1)
        weights = torch.zeros_like(logits).scatter(-1, top_ids, torch.softmax(top_logits, dim=-1))
        return weights, top_ids, logits

    def width(self, h: torch.Tensor, expert_weights: torch.Tensor) -> torch.Tensor:
        """sum_k g_k (H + expert_k(H)); experts that are not routed get g_k = 0."""
        z = self.norm(h)
        if self._is_partition:
            a = self._swiglu(self.proj(z))
            out_weight, out_bias = self.out.weight, self.out.bias
        else:
            units = self.expert_units
            rows = torch.cat([units, units + self.hidden_dim])
            bias = None if self.proj.bias is None else self.proj.bias[rows]
            a = self._swiglu(F.linear(z, self.proj.weight[rows], bias))
            out_weight, out_bias = self.out.weight[:, units], self.out.bias
        a = (a.unflatten(-1, (self.num_experts, self.expert_dim)) * expert_weights.unsqueeze(-1)).flatten(-2)
        # the weights of the routed experts sum to 1, so the residual and W_out's bias appear once
        return h + F.linear(a, out_weight, out_bias)

    def balance(self, logits: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
        """Switch-Transformer load-balancing loss N * sum_i f_i P_i (1.0 when perfectly balanced)."""
        probs = torch.softmax(logits.flatten(0, -2).float(), dim=-1).mean(0)
        counts = F.one_hot(top_ids.flatten(0, -2), self.num_experts).sum(dim=(0, 1)).float()
        fraction = counts / counts.sum()
        return self.num_experts * (fraction * probs).sum()

    # ---- forward --------------------------------------------------------------------------
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        loop_logits = self.loop_predictor(h)
        loop_ids = torch.arange(1, self.max_loops + 1, device=h.device, dtype=h.dtype)
        if self.training:
            tau = self.temperature()
            with torch.no_grad():
                self.train_steps += 1
            loop_probs = F.gumbel_softmax(loop_logits.float(), tau=tau, hard=True, dim=-1).to(h.dtype)
            loops_to_run = self.max_loops
        else:
            choice = loop_logits.argmax(dim=-1)
            loop_probs = F.one_hot(choice, self.max_loops).to(h.dtype)
            loops_to_run = self.max_loops if _static_graph() else int(choice.max()) + 1

        depth = torch.zeros_like(h)
        current = h
        for step in range(loops_to_run):
            current = self.ffn(current)
            depth = depth + loop_probs[..., step:step + 1] * current

        expected_loops = (loop_probs * loop_ids).sum(dim=-1, keepdim=True)
        lam = (self.max_loops - expected_loops) / self.max_loops
        expert_weights, top_ids, router_logits = self.route(h)
        self.balance_loss = self.balance(router_logits, top_ids) if self.training else None
        self.last_mean_loops = expected_loops.detach().mean()
        if not self.training and not _static_graph() and not bool((lam > 0).any()):
            return depth  # every token chose L_max loops: the width path has weight 0
        return lam * self.width(h, expert_weights) + (1 - lam) * depth

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden_dim={self.hidden_dim}, experts={self.num_experts} (top-{self.top_k}, "
                f"width {self.expert_dim}), max_loops={self.max_loops}")
