"""Data statistics that models carry as buffers, so that a checkpoint works on raw physical values.

- `FieldStats`: per-field mean/std of PDE states (DRIFT-Net, SineNet standardise inside the model).
- `OutputStats`: one scalar mean/std that de-standardises an operator network's output (DeepONet,
  MT-DeepONet), so the trunk can be queried at any point.

Both are mixins for an nn.Module; the buffer names (`field_mean`/`field_std`, `out_mean`/`out_std`)
are part of the published state dicts and must not change.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.errors import ConfigError


class FieldStats(nn.Module):
    """Mixin: `field_mean`/`field_std` buffers of shape `view` with the field count at `axis`."""

    def init_field_stats(self, count: int, mean=None, std=None, *, ndim: int = 4, axis: int = 1) -> None:
        m = torch.zeros(count) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        s = torch.ones(count) if std is None else torch.as_tensor(std, dtype=torch.float32)
        if m.numel() != count or s.numel() != count:
            raise ConfigError(f"field_mean/field_std need {count} values each")
        shape = [1] * ndim
        shape[axis] = count
        self.register_buffer("field_mean", m.reshape(shape))
        self.register_buffer("field_std", s.reshape(shape))
        # without statistics in the config, the training data provides them (fit_field_stats)
        self.stats_from_data = mean is None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.field_mean) / self.field_std

    @torch.no_grad()
    def fit_field_stats(self, frames: torch.Tensor) -> None:
        """Mean and std per field of trajectories (N, T, C, H, W)."""
        dims = (0, 1, 3, 4)
        self.field_mean.copy_(frames.mean(dim=dims).reshape(self.field_mean.shape))
        self.field_std.copy_(frames.std(dim=dims).clamp_min(1e-6).reshape(self.field_std.shape))


class OutputStats(nn.Module):
    """Mixin: scalar `out_mean`/`out_std` buffers; `destandardize(y) = y * std + mean`."""

    def init_output_stats(self) -> None:
        self.register_buffer("out_mean", torch.zeros(()))
        self.register_buffer("out_std", torch.ones(()))

    def destandardize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.out_std + self.out_mean

    @torch.no_grad()
    def fit_output_stats(self, values: torch.Tensor) -> None:
        """Fit on the training targets (any shape)."""
        self.out_mean.fill_(float(values.mean()))
        self.out_std.fill_(float(values.std()) or 1.0)

    def output_stats(self) -> tuple[float, float] | None:
        """(mean, std) the output was fitted to, or None while still the untouched identity."""
        mean, std = float(self.out_mean), float(self.out_std)
        return None if (mean == 0.0 and std == 1.0) else (mean, std)


__all__ = ["FieldStats", "OutputStats"]
