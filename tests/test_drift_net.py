"""DRIFT-Net: the official parameter counts, shapes, the spectral block's pieces, and weight I/O."""

import io

import pytest
import torch

from zoo.layers.spectral import fourier_resample, radial_band_ids
from zoo.models.drift_net import DriftNet, SpectralGateBlock, drift_net


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("variant,count,used", [
    ("t", 17_524_982, 17_497_558),
    ("s", 33_401_206, 33_350_678),
    ("b", 132_557_446, 132_456_518),
    ("l", 528_456_358, 528_254_630),
])
def test_official_parameter_counts(variant, count, used):
    # official counts: torch numel of the official ScOT(use_spectral=True) for u, v in/out at 128^2,
    # time conditioning on (the training setting); `used` leaves out the kept-but-unused modules
    with torch.device("meta"):
        m = drift_net(variant, image_size=128, fields=["u", "v"])
    assert n_params(m) == count
    assert m.used_parameter_count() == used


def test_four_field_count_and_registry_configs():
    with torch.device("meta"):
        m = drift_net("t", image_size=128, fields=["rho", "u", "v", "p"])
    assert n_params(m) == 17_531_236
    import zoo.registry as reg
    entries = reg.load_registry().models
    for v, count in (("t", 17_524_982), ("s", 33_401_206)):
        cfg = entries[f"drift-net-{v}"].config
        with torch.device("meta"):
            assert n_params(drift_net(**cfg)) == count
    assert entries["drift-net"].ours is True


def small(**kw):
    cfg = dict(image_size=32, fields=["u", "v"], embed_dim=8, depths=[1, 1, 1, 1], gate_hidden=16)
    cfg.update(kw)
    torch.manual_seed(0)
    return drift_net(**cfg)


def test_shapes_and_spectral_resampling():
    m = small().eval()
    x = torch.randn(3, 2, 32, 32)
    assert m(x).shape == (3, 2, 32, 32)
    # another resolution is resampled to the model's grid and back (the official behaviour)
    assert m(torch.randn(2, 2, 16, 16)).shape == (2, 2, 16, 16)
    assert m(torch.randn(2, 2, 64, 64)).shape == (2, 2, 64, 64)
    assert m.step(torch.randn(2, 5, 2, 32, 32)).shape == (2, 2, 32, 32)
    with pytest.raises(ValueError):
        m(torch.randn(2, 3, 32, 32))


def test_lead_time_conditions_the_output_and_plain_norms_work():
    m = small().eval()
    with torch.no_grad():
        for p in m.parameters():  # the official init makes conditional scales tiny; widen them
            p.add_(0.05 * torch.randn_like(p)) if p.dtype == torch.float32 else None
    x = torch.randn(2, 2, 32, 32)
    assert not torch.allclose(m(x, torch.tensor([0.05, 0.05])), m(x, torch.tensor([0.5, 0.5])))
    plain = small(time_conditioning=False)
    assert plain(x).shape == x.shape
    assert n_params(plain) < n_params(small())


def test_gradients_reach_the_spectral_mixing_but_not_the_cut():
    m = small()
    loss, logs = m.loss(m(torch.randn(2, 2, 32, 32)), torch.randn(2, 2, 32, 32))
    loss.backward()
    block = m.encoder[0].layers[0].mixer
    assert block.low_mix.grad is not None and block.low_mix.grad.abs().sum() > 0
    assert block.band_gate.mlp[0].weight.grad.abs().sum() > 0
    assert block.theta_x.grad is None  # int() cut: no gradient, as in the official code
    assert set(logs) == {"rel_l1", "hf"}


def test_low_band_cut_and_bands():
    block = SpectralGateBlock(dim=4, grid=32, conditional=False)
    assert block.cut == (17, 9)  # int(sigmoid(0.25) * 32), int(sigmoid(0.25) * 17)
    ids = radial_band_ids(32, 17, 6)
    assert ids.shape == (32 * 17,) and int(ids.min()) == 0 and int(ids.max()) == 5
    assert int(ids[0]) == 0 and int(ids[-1]) == 5


def test_fourier_resample_round_trip():
    # a band-limited field (no Nyquist mode, which the official scheme does not carry exactly)
    spec = torch.zeros(2, 1, 16, 9, dtype=torch.complex64)
    keep = torch.cat([torch.arange(0, 8), torch.arange(9, 16)])
    spec[:, :, keep, :8] = torch.randn(2, 1, 15, 8, dtype=torch.complex64)
    x = torch.fft.irfft2(spec, s=(16, 16))
    up = fourier_resample(x, 32)
    assert torch.allclose(fourier_resample(up, 16), x, atol=1e-5)
    const = torch.full((1, 1, 8, 8), 3.0)
    assert torch.allclose(fourier_resample(const, 16), torch.full((1, 1, 16, 16), 3.0), atol=1e-5)


def test_complex_weights_travel_as_real_pairs_in_fp16_safetensors():
    from safetensors.torch import load, save

    m = small().eval()
    state = m.state_dict()
    key = "encoder.0.layers.0.mixer.low_mix"
    assert state[key].shape == (8, 8, 2) and not state[key].is_complex()
    blob = save({k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    m2 = small(init_std=0.5).eval()
    m2.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load(blob).items()})
    assert m2.encoder[0].layers[0].mixer.low_mix.is_complex()
    x = torch.randn(1, 2, 32, 32)
    assert torch.allclose(m(x), m2(x), atol=1e-3)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)


def test_builder_rejects_bad_configs():
    from zoo.errors import ConfigError, UnknownNameError
    with pytest.raises(UnknownNameError):
        drift_net("xl")
    with pytest.raises(ConfigError):
        drift_net(image_size=30)
    with pytest.raises(ConfigError):
        drift_net(no_such_option=1)
    assert isinstance(small(), DriftNet)


@pytest.mark.slow
def test_onnx_export_carries_the_complex_spectral_path(tmp_path):
    # the dynamo exporter turns rfft2/irfft2 into ONNX DFT ops and the complex channel mixing into
    # real matmuls; the resampling path (input grid != model grid) goes through the same ops
    import numpy as np
    import onnx
    import onnxruntime as ort

    m = small().eval()
    x, t = torch.randn(2, 2, 16, 16), torch.full((2,), 0.05)
    batch = torch.export.Dim("batch")
    prog = torch.onnx.export(m, (x, t), dynamo=True, dynamic_shapes=({0: batch}, {0: batch}), verbose=False)
    prog.save(str(tmp_path / "drift.onnx"))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "drift.onnx")).graph.node}
    assert "DFT" in ops
    sess = ort.InferenceSession(str(tmp_path / "drift.onnx"), providers=["CPUExecutionProvider"])
    x3, t3 = torch.randn(3, 2, 16, 16), torch.full((3,), 0.05)
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (x3, t3))})[0]
    with torch.no_grad():
        ref = m(x3, t3).numpy()
    assert np.abs(got - ref).max() < 1e-5 * max(1.0, np.abs(ref).max())


def test_step_passes_the_lead_time_so_a_backend_runs_its_graph(capsys):
    """The task steps DRIFT-Net with one tensor; the graph of its example input takes two. step()
    passes the lead time itself, so an onnxruntime stand-in runs every step (no eager hand-over)."""
    import zoo.backends as backends
    m = small().eval()
    p = backends.prepare(m, "pde-rollout", "onnxruntime", quiet=True)
    assert p.backend == "onnxruntime", p.fallback_reason
    hist = torch.randn(3, 2, 2, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(p.step(hist), m.step(hist), atol=1e-5, rtol=1e-4)
    assert p.summary().get("ran_eager_after") is None
    assert "running eager" not in capsys.readouterr().err
