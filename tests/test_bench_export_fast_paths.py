"""The export-only formulations behind the onnxruntime slow spots (issue 20): SineNet's bicubic x2
upsampling and DRIFT-Net's rfft2/irfft2 as matmuls with constant matrices. Eager keeps its own ops
(the converter/parity tests pin those); the exported graphs hold no Resize/DFT node and agree with
eager within the export parity tolerance."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import zoo.models.drift_net as drift
import zoo.models.sinenet as sine
from zoo.backends import ATOL, RTOL, write_onnx
from zoo.tasks import get_task


def _onnx_run(model, args, path):
    write_onnx(model, args, path, get_task("pde-rollout"))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    return ops, torch.from_numpy(np.asarray(sess.run(None, feeds)[0]))


@pytest.mark.parametrize("n", [2, 5, 8, 16])
@pytest.mark.parametrize("circular", [False, True])
def test_bicubic_matrix_is_pytorchs_bicubic(n, circular):
    x = torch.randn(2, 3, n, n, dtype=torch.float64)
    if circular:
        ref = F.interpolate(F.pad(x, (2, 2, 2, 2), mode="circular"), scale_factor=2, mode="bicubic")[..., 4:-4, 4:-4]
    else:
        ref = F.interpolate(x, scale_factor=2, mode="bicubic")
    m = sine._bicubic_x2_matrix(n, circular, torch.float64)
    assert torch.allclose(m @ x @ m.t(), ref, rtol=0, atol=1e-12)


@pytest.mark.slow   # an ONNX export each (about a minute on a busy 2-core machine)
@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_sinenet_onnx_uses_matmuls_and_matches_eager(tmp_path, padding):
    torch.manual_seed(0)
    model = sine.sinenet(None, waves=2, hidden=8, mult=1.5, padding=padding).eval()
    (x,) = model.example_input(batch=2, resolution=32)
    with torch.inference_mode():
        ref = model(x)
    assert not sine._exporting()
    ops, got = _onnx_run(model, (x,), tmp_path / "s.onnx")
    assert "Resize" not in ops and "MatMul" in ops
    err = float((got - ref).abs().max())
    assert err <= ATOL + RTOL * float(ref.abs().max()), err


@pytest.mark.parametrize("grid", [4, 7, 8, 16])
def test_drift_spectral_matmul_matches_the_ffts(grid):
    torch.manual_seed(grid)
    block = drift.SpectralGateBlock(12, grid, conditional=True).eval()
    x, t = torch.randn(2, grid, grid, 12), torch.rand(2)
    with torch.no_grad():
        ref = block(x, t)
        xc = x.permute(0, 3, 1, 2)
        spec = block._spectral_matmul(xc)
        y = spec + block.depthwise(xc)
        got = block.drop_path(block.norm(y.permute(0, 2, 3, 1) + block.pointwise(x), t))
    assert torch.allclose(got, ref, rtol=0, atol=2e-5 * float(ref.abs().max()))


@pytest.mark.slow
def test_drift_net_onnx_has_no_dft_and_matches_eager(tmp_path):
    torch.manual_seed(0)
    model = drift.drift_net(None, image_size=32, embed_dim=8, depths=[1, 1], skip_blocks=[1, 0],
                            gate_hidden=8).eval()
    x, t = model.example_input(batch=2)
    with torch.inference_mode():
        ref = model(x, t)
    ops, got = _onnx_run(model, (x, t), tmp_path / "d.onnx")
    assert "DFT" not in ops and "MatMul" in ops
    err = float((got - ref).abs().max())
    assert err <= ATOL + RTOL * float(ref.abs().max()), err
