"""Fourier-space helpers shared by the operator families (DRIFT-Net, the Navier-Stokes data).

- `fourier_resample`: change the resolution of a periodic field by truncating or zero-padding its
  spectrum (Poseidon/DRIFT-Net feed a model trained at 128^2 with 64^2 data this way);
- `radial_band_ids`: the radial band index of every bin of an rfft2 grid, as DRIFT-Net bins it;
- complex parameters that travel as real pairs in a state dict, because safetensors files written
  in float16 cannot hold complex numbers and ONNX has no complex type.
"""

from __future__ import annotations

import torch


def fourier_resample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resample the last two (square, periodic) axes of `x` to `size` x `size` spectrally.

    Down: keep the frequencies k with -size/2 <= k <= size/2 - 1. Up: zero-pad the spectrum
    between the positive and the negative frequencies (the input's -n/2 mode stays -n/2), as
    Poseidon/DRIFT-Net do. `norm="forward"` keeps each mode's amplitude, so a constant stays a
    constant. The spectrum is cut and padded as a real (..., 2) view, because ONNX export carries
    complex FFTs but not complex index_select/pad."""
    n = x.shape[-1]
    if x.shape[-2] != n:
        raise ValueError(f"fourier_resample needs a square field, got {tuple(x.shape[-2:])}")
    if n == size:
        return x
    spec = torch.view_as_real(torch.fft.fft2(x, norm="forward"))          # (..., n, n, 2)
    if size < n:
        h = size // 2
        spec = torch.cat([spec[..., :h, :, :], spec[..., n - h:, :, :]], dim=-3)
        spec = torch.cat([spec[..., :h, :], spec[..., n - h:, :]], dim=-2)
    else:
        h = n // 2
        rows = spec.new_zeros(*spec.shape[:-3], size - n, n, 2)
        spec = torch.cat([spec[..., :h, :, :], rows, spec[..., h:, :, :]], dim=-3)
        cols = spec.new_zeros(*spec.shape[:-3], size, size - n, 2)
        spec = torch.cat([spec[..., :h, :], cols, spec[..., h:, :]], dim=-2)
    return torch.fft.ifft2(torch.view_as_complex(spec.contiguous()), norm="forward").real


def radial_band_ids(h_fft: int, w_fft: int, bands: int) -> torch.Tensor:
    """Band index (0..bands-1) of each bin of an (h_fft, w_fft) rfft2 grid, flattened row-major.

    As in DRIFT-Net's code the row index is read as a non-negative frequency (0..h_fft-1, the
    negative half of the rfft rows is not folded back) and the radius is normalised to [0, 1]."""
    ry = torch.arange(h_fft, dtype=torch.float64, device="cpu")[:, None] / max(h_fft - 1, 1)
    rx = torch.arange(w_fft, dtype=torch.float64, device="cpu")[None, :] / max(w_fft - 1, 1)
    r = torch.sqrt(ry**2 + rx**2)
    r = r / (r.max() + 1e-8)
    return torch.clamp(torch.floor(r * bands), max=bands - 1).long().flatten()


class RealPairStateMixin:
    """For modules holding complex parameters: their state-dict entries are stored as real
    tensors with a trailing axis of 2 (torch.view_as_real) and turned back on load."""

    _complex_names: tuple[str, ...] = ()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        for name in self._complex_names:
            key = prefix + name
            if key in destination:
                value = destination[key]
                destination[key] = torch.view_as_real(value if keep_vars else value.detach()).clone() \
                    if value.is_complex() else value

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name in self._complex_names:
            key = prefix + name
            value = state_dict.get(key)
            if value is not None and not value.is_complex() and value.shape[-1:] == (2,):
                state_dict[key] = torch.view_as_complex(value.float().contiguous())
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,  # type: ignore[misc]
                                      missing_keys, unexpected_keys, error_msgs)
