"""SineNet: the official parameter counts of every variant and setting, shapes, padding behaviour."""

import pytest
import torch

from zoo.models.sinenet import SineNet, sinenet


def n_params(m):
    return sum(p.numel() for p in m.parameters())


SETTINGS = {"INS": (["smoke", "u", "v"], 4), "CNS": (["rho", "p", "u", "v"], 10), "SWE": (["p", "u", "v"], 2)}


@pytest.mark.parametrize("variant,setting,count", [
    (8, "INS", 35_490_219), (8, "CNS", 35_506_924), (8, "SWE", 35_486_763),
    (6, "INS", 35_475_499),
    (4, "INS", 35_493_699), (4, "CNS", 35_510_404), (4, "SWE", 35_490_243),
    (2, "INS", 35_499_989), (2, "CNS", 35_516_694), (2, "SWE", 35_496_533),
])
def test_official_parameter_counts(variant, setting, count):
    # INS sinenet8-dual = 35,490,219 is the number the official registry writes next to it
    fields, history = SETTINGS[setting]
    with torch.device("meta"):
        m = sinenet(variant, fields=fields, time_history=history)
    assert n_params(m) == count


def test_other_official_registry_entries():
    with torch.device("meta"):
        one_wave = sinenet(None, waves=1, mult=2, hidden=128, fields=3, time_history=4)   # sinenet1-dual-128
        tangled = sinenet(8, fields=3, time_history=4, disentangle=False)                # sinenet8-dual-tangle
    assert n_params(one_wave) == 135_094_659
    assert n_params(tangled) == 32_831_403


def test_registry_names_pin_padding_and_counts():
    import zoo.registry as reg
    models = reg.load_registry().models
    for k in (8, 6, 4, 2):
        zero, circ = models[f"sinenet-{k}"].config, models[f"sinenet-{k}-circ"].config
        assert zero["padding"] == "zeros" and circ["padding"] == "circular"
        with torch.device("meta"):
            assert n_params(sinenet(**zero)) == n_params(sinenet(**circ))
    with torch.device("meta"):
        assert n_params(sinenet(**models["sinenet-8"].config)) == 35_490_219
    assert models["sinenet"].ours is True


def tiny(padding="circular", **kw):
    torch.manual_seed(0)
    return sinenet(None, waves=2, mult=1.5, hidden=8, fields=["w"], time_history=3, padding=padding, **kw).eval()


def test_shapes():
    m = tiny()
    x = torch.randn(2, 3, 1, 32, 32)
    assert m(x).shape == (2, 1, 1, 32, 32)
    assert m.step(torch.randn(2, 6, 1, 32, 32)).shape == (2, 1, 32, 32)  # uses the last 3 frames
    with pytest.raises(ValueError):
        m(torch.randn(2, 2, 1, 32, 32))


def test_circular_padding_is_translation_equivariant_and_zero_padding_is_not():
    x = torch.randn(1, 3, 1, 32, 32)
    shift = (16, 16)  # a multiple of the 16x pooling, so the grids line up
    with torch.no_grad():
        circ = tiny("circular")
        assert torch.allclose(circ(torch.roll(x, shift, (-2, -1))), torch.roll(circ(x), shift, (-2, -1)), atol=1e-4)
        zero = tiny("zeros")
        assert not torch.allclose(zero(torch.roll(x, shift, (-2, -1))), torch.roll(zero(x), shift, (-2, -1)),
                                  atol=1e-4)


def test_disentangled_input_enters_levels_two_to_four():
    m = tiny()
    wave = m.waves[0]
    assert not wave.down[0].concat_lift and all(level.concat_lift for level in wave.down[1:])
    # level 2's first conv reads pooled features (12 ch) + the pooled lifted input (8 ch)
    assert wave.down[1].blocks[0].conv1.in_channels == int(8 * 1.5) + 8


def test_normalisation_buffers_and_loss():
    m = tiny(field_mean=[1.0], field_std=[2.0])
    assert m.stats_from_data is False and tiny().stats_from_data is True
    pred = torch.randn(2, 1, 32, 32)
    loss, logs = m.loss(pred, pred + 0.0)
    assert float(loss) == 0.0
    loss, _ = m.loss(pred + 1.0, pred)
    assert float(loss) > 0
    assert isinstance(m, SineNet)


def test_bad_config():
    from zoo.errors import ConfigError, UnknownNameError
    with pytest.raises(ConfigError):
        sinenet(8, padding="reflect")
    with pytest.raises(UnknownNameError):
        sinenet(5)


def test_circular_padding_exports_without_onnx_wrap_pad(tmp_path):
    """torch writes circular padding as ONNX Pad(mode="wrap"), which OpenVINO's reader refuses: the
    export graph pads with slices and concats instead, and computes the same thing."""
    import onnx

    from zoo.backends import _OrtRunner, write_onnx
    from zoo.tasks import get_task
    m = tiny("circular")
    x = torch.randn(2, 3, 1, 32, 32)
    path = tmp_path / "s.onnx"
    write_onnx(m, (x,), path, get_task("pde-rollout"))
    pads = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Pad"]
    modes = [a.s.decode() for n in pads for a in n.attribute if a.name == "mode"]
    assert "wrap" not in modes
    x3 = torch.randn(3, 3, 1, 32, 32)
    with torch.no_grad():
        want = m(x3)
    got = _OrtRunner(path)(x3)[0]
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
