"""DRIFT-Net (Li & Salim, "DRIFT-Net: a spectral-coupled neural operator for PDEs learning",
arXiv 2509.24868, ICLR 2026). Official code: github.com/cruiseresearchgroup/DRIFT-Net (MIT).

What the released code builds (and what this file rebuilds, module for module): Poseidon's scOT
U-Net - patch embedding (patch 4), four encoder stages with patch merging, four decoder stages with
patch "unmerging", ConvNeXt blocks on the first three skip connections, patch recovery - in which
every windowed-attention block is replaced by a spectral gate block:

1. X = rfft2(tokens) (norm "forward"); the low band is the top-left corner [0:kx, 0:ky] of the
   rfft grid, kx = int(sigmoid(theta_x) * h_fft), theta initialised to 0.25;
2. one complex C x C matrix mixes the channels of the low band; the high band (X - X_low) is left
   unmixed;
3. a radial band gate: | |X_high| - |X_low| | averaged over 6 radial bands per channel -> MLP
   6 -> 128 (ReLU) -> 6 (sigmoid) -> alpha, spread back over the bins of each band;
4. alpha * mixed_low + (1 - alpha) * high, inverse rfft2;
5. plus a depthwise 3x3 conv (no bias) and a Linear(C, C) of the tokens; the sum is normalised and
   added to the block input, followed by the usual MLP (ratio 4, GELU) with post-norm residual.
With time conditioning (the official setting for time-dependent data) every LayerNorm is a
conditional LayerNorm whose scale and shift are Linear(1 -> C) of the lead time (t / 20).

Where the code differs from a plain reading of the paper, we follow the code and say so:
- theta_x/theta_y pass through int(), so they receive no gradient: the low-band cut is fixed at
  int(sigmoid(0.25) * h_fft) (about 56 % of each rfft axis);
- rows of the rfft grid are binned as if all were non-negative frequencies (no fold-back);
- each spectral layer still owns the `layernorm_before` of the Swin layer it replaced, and each
  decoder stage owns the two projections of the (disabled) gate distillation (`gate_target_conv`,
  `gate_target_proj`): none of them is used in the forward pass, exactly as in the official module.
  They are kept so that the parameter counts (T 17,524,982; S 33,401,206; B 132,557,446;
  L 528,456,358 for 2 fields at 128^2 with time conditioning) and the state-dict layout equal the
  official model's; `used_parameter_count()` gives the count without them.
- A model built for image_size n resamples any other square input spectrally to n and back.

The complex mixing matrix counts once per entry (torch numel), as the official counts do; in a
state dict it is stored as a real (C, C, 2) tensor (see zoo.layers.spectral.RealPairStateMixin).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ConfigError, DataError
from zoo.layers.field_stats import FieldStats
from zoo.layers.spectral import RealPairStateMixin, fourier_resample, radial_band_ids

#: Poseidon's time scale: the lead time fed to the conditional norms is (t2 - t1) / 20
TIME_SCALE = 20.0

VARIANTS = {
    "t": {"embed_dim": 48, "depths": [4, 4, 4, 4]},
    "s": {"embed_dim": 48, "depths": [8, 8, 8, 8]},
    "b": {"embed_dim": 96, "depths": [8, 8, 8, 8]},
    "l": {"embed_dim": 192, "depths": [8, 8, 8, 8]},
}


class TimeNorm(nn.Module):
    """LayerNorm over the last axis; with `conditional`, scale and shift are affine in the lead time."""

    def __init__(self, dim: int, conditional: bool, eps: float = 1e-5):
        super().__init__()
        self.conditional, self.eps = conditional, eps
        if conditional:
            self.scale = nn.Linear(1, dim)
            self.shift = nn.Linear(1, dim)
        else:
            self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        if not self.conditional:
            return self.norm(x)
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        t = time.reshape(-1, 1).to(x.dtype)
        shape = (t.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
        return self.scale(t).reshape(shape) * x + self.shift(t).reshape(shape)


class DropPath(nn.Module):
    """Stochastic depth on the residual branch (per sample)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


def _exporting() -> bool:
    """Inside torch.onnx.export / torch.export / torch.jit tracing: graphs for other runtimes."""
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.jit.is_tracing())


def _dft_matrices(h: int, w: int, dtype=torch.float32, device=None) -> dict:
    """Real matrices of rfft2 / irfft2 (norm "forward") on an (h, w) grid. Forward: X = Hc@Xr1 -
    Hs@Xi1 (+ i ...), with the row transform Xr1 = x @ wc, Xi1 = x @ ws. Inverse: the full inverse
    DFT over rows, then the half-spectrum one over columns, whose DC and Nyquist imaginary parts
    drop out as pocketfft's do. Built from aranges in float64 (phases reduced mod n in integers), so
    an exporter traces a few ops it folds to constants."""
    wf = w // 2 + 1
    f64 = torch.float64

    def phase(a, b, n):
        return (2.0 * math.pi / n) * ((a[:, None] * b[None, :]) % n).to(f64)

    rh, rw, kw = (torch.arange(k, device=device) for k in (h, w, wf))
    pw, ph, pg = phase(rw, kw, w), phase(rh, rh, h), phase(kw, rw, w)
    edge = ((kw == 0) | (kw * 2 == w))[:, None]          # DC and Nyquist: counted once, sine parts dropped
    out = {"wc": torch.cos(pw) / w, "ws": -torch.sin(pw) / w, "hc": torch.cos(ph) / h, "hs": -torch.sin(ph) / h,
           "ic": torch.cos(ph), "is": torch.sin(ph),
           "gc": torch.where(edge, 1.0, 2.0) * torch.cos(pg),
           "gs": torch.where(edge, torch.zeros_like(pg), -2.0 * torch.sin(pg))}
    return {k: v.to(dtype) for k, v in out.items()}


class RadialBandGate(nn.Module):
    """Per-channel gate of each radial frequency band, from the band means of a spectral feature."""

    def __init__(self, h_fft: int, w_fft: int, bands: int = 6, hidden: int = 128):
        super().__init__()
        ids = radial_band_ids(h_fft, w_fft, bands)
        onehot = F.one_hot(ids, bands).float()                      # (bins, bands)
        counts = onehot.sum(0).clamp(min=1.0)
        # band mean = feature @ (onehot / count); spreading back = alpha_band @ onehot^T
        self.register_buffer("pool", onehot / (counts + 1e-6), persistent=False)
        self.register_buffer("spread", onehot.t().contiguous(), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(bands, hidden), nn.ReLU(), nn.Linear(hidden, bands), nn.Sigmoid())

    def forward(self, feature: torch.Tensor) -> torch.Tensor:  # (B, C, bins) -> (B, C, bins)
        return self.mlp(feature @ self.pool) @ self.spread


class SpectralGateBlock(RealPairStateMixin, nn.Module):
    """The token mixer that replaces windowed attention (steps 1-5 of the module docstring)."""

    _complex_names = ("low_mix",)

    def __init__(self, dim: int, grid: int, conditional: bool, bands: int = 6, gate_hidden: int = 128,
                 eps: float = 1e-5, init_std: float = 0.02, drop_path: float = 0.0):
        super().__init__()
        self.low_mix = nn.Parameter(torch.complex(torch.randn(dim, dim) * init_std, torch.randn(dim, dim) * init_std))
        self.depthwise = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.pointwise = nn.Linear(dim, dim)
        self.norm = TimeNorm(dim, conditional, eps)
        self.drop_path = DropPath(drop_path)
        self.grid = grid
        self.h_fft, self.w_fft = grid, grid // 2 + 1
        self.band_gate = RadialBandGate(self.h_fft, self.w_fft, bands, gate_hidden)
        # the low-band cut; theta gets no gradient through int() (see the module docstring)
        self.theta_x = nn.Parameter(torch.tensor(0.25))
        self.theta_y = nn.Parameter(torch.tensor(0.25))
        self._update_cut()

    def _update_cut(self):
        # python ints (not tensors) so the cut is a constant for tracing and export
        tx = 0.25 if self.theta_x.is_meta else float(self.theta_x.detach())
        ty = 0.25 if self.theta_y.is_meta else float(self.theta_y.detach())
        self.cut = (int(self.h_fft / (1.0 + math.exp(-tx))), int(self.w_fft / (1.0 + math.exp(-ty))))
        # a real 0/1 mask, not a slice + pad: ONNX's complex support covers products, not pads
        mask = torch.zeros(self.h_fft, self.w_fft, device="cpu")
        mask[: self.cut[0], : self.cut[1]] = 1.0
        old = getattr(self, "low_mask", None)
        self.register_buffer("low_mask", mask.to(old.device) if old is not None and not old.is_meta else mask,
                             persistent=False)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._update_cut()

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        b, h, w, c = x.shape
        xc = x.permute(0, 3, 1, 2)
        if _exporting():
            y = self._spectral_matmul(xc.float()).to(x.dtype)
            y = y + self.depthwise(xc)
            y = y.permute(0, 2, 3, 1) + self.pointwise(x)
            return self.drop_path(self.norm(y, time))
        spec = torch.fft.rfft2(xc.float(), norm="forward")                 # (B, C, h, wf)
        low = spec * self.low_mask
        high = spec - low
        mixed = (self.low_mix @ low.flatten(2)).reshape(spec.shape)  # matmul: ONNX's complex ops lack einsum
        feature = (high.abs() - low.abs()).abs().flatten(2)
        alpha = self.band_gate(feature).reshape(spec.shape).to(spec.real.dtype)
        fused = alpha * mixed + (1.0 - alpha) * high
        y = torch.fft.irfft2(fused, s=(h, w), norm="forward").to(x.dtype)
        y = y + self.depthwise(xc)
        y = y.permute(0, 2, 3, 1) + self.pointwise(x)
        return self.drop_path(self.norm(y, time))


    def _spectral_matmul(self, xc: torch.Tensor) -> torch.Tensor:
        """Steps 1-4 for an export graph: the DFTs as matmuls with constant matrices and complex
        numbers as (real, imaginary) pairs. onnxruntime's DFT and complex ops are slow generic
        kernels; these are GEMMs. The same sums as eager, so the outputs agree to fp32 rounding."""
        b, c, h, w = xc.shape
        m = _dft_matrices(h, w, xc.dtype, xc.device)
        r1, i1 = xc @ m["wc"], xc @ m["ws"]                                  # rows: (B, C, h, wf)
        re = m["hc"] @ r1 - m["hs"] @ i1
        im = m["hc"] @ i1 + m["hs"] @ r1
        low_r, low_i = re * self.low_mask, im * self.low_mask
        high_r, high_i = re - low_r, im - low_i
        mix = torch.view_as_real(self.low_mix) if self.low_mix.is_complex() else self.low_mix
        ar, ai = mix[..., 0], mix[..., 1]
        lr, li = low_r.flatten(2), low_i.flatten(2)
        mixed_r = (ar @ lr - ai @ li).reshape(re.shape)
        mixed_i = (ar @ li + ai @ lr).reshape(re.shape)
        feature = ((high_r.square() + high_i.square()).sqrt() - (low_r.square() + low_i.square()).sqrt()).abs()
        alpha = self.band_gate(feature.flatten(2)).reshape(re.shape)
        fr = alpha * mixed_r + (1.0 - alpha) * high_r
        fi = alpha * mixed_i + (1.0 - alpha) * high_i
        zr = m["ic"] @ fr - m["is"] @ fi                                     # inverse over rows
        zi = m["ic"] @ fi + m["is"] @ fr
        return zr @ m["gc"] + zi @ m["gs"]                                   # half spectrum -> (B, C, h, w)


class SpectralLayer(nn.Module):
    """Spectral gate block, then the MLP with post-norm residual (Swin-V2 layout)."""

    def __init__(self, dim: int, grid: int, conditional: bool, mlp_ratio: float, bands: int, gate_hidden: int,
                 eps: float, drop_path: float):
        super().__init__()
        self.mixer = SpectralGateBlock(dim, grid, conditional, bands, gate_hidden, eps, drop_path=drop_path)
        self.layernorm_before = TimeNorm(dim, conditional, eps)  # kept from the Swin layer; unused
        self.fc1 = nn.Linear(dim, int(mlp_ratio * dim))
        self.fc2 = nn.Linear(int(mlp_ratio * dim), dim)
        self.layernorm_after = TimeNorm(dim, conditional, eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, time):
        x = x + self.mixer(x, time)
        return x + self.drop_path(self.layernorm_after(self.fc2(F.gelu(self.fc1(x))), time))


class ConvNeXtSkip(nn.Module):
    """ConvNeXt block on a skip connection: dw 7x7 -> norm -> 4x MLP (GELU) -> layer scale."""

    def __init__(self, dim: int, conditional: bool, eps: float = 1e-5, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = TimeNorm(dim, conditional, eps)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x, time):  # (B, H, W, C)
        y = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y, time))))
        return x + self.gamma * y


class PatchMerging(nn.Module):
    """2x2 neighbours -> channels (order: (even, even), (odd, even), (even, odd), (odd, odd)) -> 2C."""

    def __init__(self, dim: int, conditional: bool, eps: float):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = TimeNorm(2 * dim, conditional, eps)

    def forward(self, x, time):
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.norm(self.reduction(x), time)


class PatchUnmerging(nn.Module):
    """C -> 2C channels redistributed over a 2x2 neighbourhood (C/2 each), norm, then a C/2 mix."""

    def __init__(self, dim: int, conditional: bool, eps: float):
        super().__init__()
        self.upsample = nn.Linear(dim, 2 * dim, bias=False)
        self.mixup = nn.Linear(dim // 2, dim // 2, bias=False)
        self.norm = TimeNorm(dim // 2, conditional, eps)

    def forward(self, x, time):
        b, h, w, c = x.shape
        x = self.upsample(x).reshape(b, h, w, 2, 2, c // 2).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, 2 * h, 2 * w, c // 2)
        return self.mixup(self.norm(x, time))


class EncoderStage(nn.Module):
    def __init__(self, dim, grid, depth, conditional, mlp_ratio, bands, gate_hidden, eps, drop_paths, merge):
        super().__init__()
        self.layers = nn.ModuleList([SpectralLayer(dim, grid, conditional, mlp_ratio, bands, gate_hidden, eps, dp)
                                     for dp in drop_paths[:depth]])
        self.merge = PatchMerging(dim, conditional, eps) if merge else None

    def forward(self, x, time):
        out = x
        for layer in self.layers:
            out = layer(out, time)
        # the stage adds its input before merging (scOT); the skip is the stage output alone
        down = self.merge(out + x, time) if self.merge is not None else out
        return down, out


class DecoderStage(nn.Module):
    def __init__(self, dim, grid, depth, conditional, mlp_ratio, bands, gate_hidden, eps, drop_paths, unmerge,
                 out_channels):
        super().__init__()
        # the gate-distillation projections of the official decoder stage (unused, see docstring)
        self.gate_target_conv = nn.Conv2d(out_channels, dim, 1)
        self.gate_target_proj = nn.Linear(out_channels, dim)
        self.layers = nn.ModuleList([SpectralLayer(dim, grid, conditional, mlp_ratio, bands, gate_hidden, eps, dp)
                                     for dp in drop_paths[:depth]])
        self.unmerge = PatchUnmerging(dim, conditional, eps) if unmerge else None

    def forward(self, x, time):
        for layer in self.layers:
            x = layer(x, time)
        return self.unmerge(x, time) if self.unmerge is not None else x


class DriftNet(FieldStats):
    """DRIFT-Net for one-step prediction of C fields on a square periodic grid.

    forward(x, time=None): x (B, in_channels, H, W) in physical units, time the lead time
    (t / 20, Poseidon's scale; default `lead_time`) of shape (B,) -> (B, out_channels, H, W).
    Fields are standardised with `field_mean`/`field_std` inside the model, as the official data
    pipeline does before the network."""

    time_history = 1

    def __init__(self, image_size: int = 128, in_channels: int | None = None, out_channels: int | None = None,
                 embed_dim: int = 48,
                 depths=(4, 4, 4, 4), patch_size: int = 4, mlp_ratio: float = 4.0, skip_blocks=(2, 2, 2, 0),
                 bands: int = 6, gate_hidden: int = 128, time_conditioning: bool = True,
                 lead_time: float = 1 / TIME_SCALE,
                 drop_path_rate: float = 0.0, layer_norm_eps: float = 1e-5, init_std: float = 0.02,
                 field_mean=None, field_std=None, fields=("u", "v")):
        super().__init__()
        fields = list(fields)
        in_channels = len(fields) if in_channels is None else in_channels
        out_channels = len(fields) if out_channels is None else out_channels
        depths, skip_blocks = list(depths), list(skip_blocks)
        stages = len(depths)
        grid = image_size // patch_size
        if image_size % patch_size or grid % (2 ** (stages - 1)):
            raise ConfigError(f"image_size {image_size} must be a multiple of patch_size * 2^{stages - 1} "
                              f"= {patch_size * 2 ** (stages - 1)}")
        if len(skip_blocks) != stages:
            raise ConfigError(f"skip_blocks needs {stages} entries, got {len(skip_blocks)}")
        self.image_size, self.patch_size, self.grid = image_size, patch_size, grid
        self.in_channels, self.out_channels = in_channels, out_channels
        self.fields = fields if len(fields) == out_channels else [f"field{i}" for i in range(out_channels)]
        self.conditional = time_conditioning
        self.lead_time = float(lead_time)
        cond, eps = time_conditioning, layer_norm_eps

        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.embed_norm = TimeNorm(embed_dim, cond, 1e-5)
        n_layers = 2 * sum(depths)
        rates = [drop_path_rate * i / max(n_layers - 1, 1) for i in range(n_layers)]
        enc_rates, dec_rates = rates[: sum(depths)], rates[sum(depths):]
        dims = [embed_dim * 2**i for i in range(stages)]
        grids = [grid // 2**i for i in range(stages)]
        self.encoder = nn.ModuleList([
            EncoderStage(dims[i], grids[i], depths[i], cond, mlp_ratio, bands, gate_hidden, eps,
                         enc_rates[sum(depths[:i]):sum(depths[:i + 1])], merge=i < stages - 1)
            for i in range(stages)])
        self.skips = nn.ModuleList([nn.ModuleList([ConvNeXtSkip(dims[i], cond, eps) for _ in range(n)])
                                    for i, n in enumerate(skip_blocks)])
        # decoder stages run from the coarsest level up; each level i uses the reversed drop rates
        self.decoder = nn.ModuleList([
            DecoderStage(dims[i], grids[i], depths[i], cond, mlp_ratio, bands, gate_hidden, eps,
                         dec_rates[sum(depths[i + 1:]):sum(depths[i:])][::-1], unmerge=i > 0,
                         out_channels=out_channels)
            for i in reversed(range(stages))])
        self.patch_recovery = nn.ConvTranspose2d(embed_dim, out_channels, patch_size, stride=patch_size)
        self.recovery_mix = nn.Conv2d(out_channels, out_channels, 5, padding=2, bias=False)

        self.init_field_stats(in_channels, field_mean, field_std, ndim=4, axis=1)
        self._init_weights(init_std)

    @torch.no_grad()
    def _init_weights(self, std: float):
        # the Hugging Face Swin-V2 initialisation the official model inherits
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and not m.weight.is_meta:
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm) and not m.weight.is_meta:
                m.weight.fill_(1.0)
                m.bias.zero_()

    # ---- helpers used by the rollout task ---------------------------------------------------
    def used_parameter_count(self) -> int:
        """Parameters that take part in the forward pass (the official count minus the kept-but-
        unused Swin norms, distillation projections and the int()-cut thetas)."""
        dead = ("layernorm_before", "gate_target_", "theta_")
        return sum(p.numel() for n, p in self.named_parameters() if not any(d in n for d in dead))

    @property
    def native_grid(self) -> int:
        return self.image_size

    def check_grid(self, n: int, source: str) -> None:
        """Any even square grid: it is resampled spectrally to image_size and back."""
        if n % 2:
            raise DataError(f"{source}: the grid is {n}x{n}; spectral resampling needs an even size")

    def step(self, history: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) frames -> next frame (B, C, H, W); DRIFT-Net reads the last frame only.
        The lead time is passed, not left to forward's default: an inference backend runs the graph
        of the example input, which takes both."""
        x = history[:, -1]
        return self(x, torch.full((x.shape[0],), self.lead_time, device=x.device, dtype=x.dtype))

    def example_input(self, batch: int = 2, resolution: int | None = None):
        n = resolution or self.image_size
        return torch.randn(batch, self.in_channels, n, n), torch.full((batch,), self.lead_time)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, hf_lambda: float = 0.3, hf_alpha: float = 1.5):
        """The official training loss on standardised fields: the relative L1 per field
        (mean |err| / mean |y|, averaged over fields) + hf_lambda * mean(|rfft2(err)|^2 w), with w the
        normalised radius of each bin to the power hf_alpha."""
        pred, target = self.normalize(pred), self.normalize(target)
        rel = torch.stack([(pred[:, i] - target[:, i]).abs().mean() / (target[:, i].abs().mean() + 1e-10)
                           for i in range(pred.shape[1])]).mean()
        err = pred - target
        h, w = err.shape[-2:]
        spec = torch.fft.rfft2(err, norm="forward")
        fy = torch.fft.fftfreq(h, device=err.device).abs()
        fx = torch.fft.rfftfreq(w, device=err.device).abs()
        r = torch.sqrt((fy / (fy.max() + 1e-8))[:, None] ** 2 + (fx / (fx.max() + 1e-8))[None, :] ** 2)
        weight = (r / (r.max() + 1e-8)) ** hf_alpha
        hf = ((spec.real**2 + spec.imag**2) * weight).mean()
        return rel + hf_lambda * hf, {"rel_l1": float(rel.detach()), "hf": float(hf.detach())}

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DRIFT-Net expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if time is None:
            time = torch.full((x.shape[0],), self.lead_time, device=x.device, dtype=x.dtype)
        time = torch.as_tensor(time, device=x.device, dtype=x.dtype).reshape(-1)
        if time.numel() == 1 and x.shape[0] > 1:
            time = time.expand(x.shape[0])
        size = x.shape[-1]
        x = self.normalize(x)
        if size != self.image_size:
            x = fourier_resample(x, self.image_size)

        h = self.patch_embed(x).permute(0, 2, 3, 1)                      # (B, g, g, E)
        h = self.embed_norm(h, time)
        skips = []
        for stage in self.encoder:
            h, skip = stage(h, time)
            skips.append(skip)
        for i, blocks in enumerate(self.skips):
            for block in blocks:
                skips[i] = block(skips[i], time)
        h = skips[-1]
        for j, stage in enumerate(self.decoder):
            if j > 0:
                h = h + skips[len(skips) - 1 - j]
            h = stage(h, time)
        y = self.recovery_mix(self.patch_recovery(h.permute(0, 3, 1, 2)))

        if size != self.image_size:
            y = fourier_resample(y, size)
        mean = self.field_mean[:, : self.out_channels]
        std = self.field_std[:, : self.out_channels]
        return y * std + mean


def drift_net(variant: str | None = None, **config) -> DriftNet:
    """Builder. `variant` in t/s/b/l picks the official embed_dim and depths; other keys are
    DriftNet arguments (image_size, in_channels, out_channels, time_conditioning, ...)."""
    if variant is not None:
        key = str(variant).lower()
        if key not in VARIANTS:
            from zoo.errors import UnknownNameError
            raise UnknownNameError("DRIFT-Net variant", variant, list(VARIANTS))
        config = {**VARIANTS[key], **config}
    try:
        return DriftNet(**config)
    except TypeError as exc:
        raise ConfigError(f"drift_net: {exc}") from None


__all__ = ["DriftNet", "drift_net", "VARIANTS", "TIME_SCALE"]
