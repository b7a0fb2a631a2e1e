"""`zoo export --int8`: static quantisation calibrated on the task's data, judged by the task's metric
on its eval set, refused past the task's tolerance with the fp32 file kept and no int8 file left."""

import json
from pathlib import Path

import pytest
import torch

from zoo.errors import ConfigError
from zoo.tasks import get_task
from zoo.verbs.export import _judge, int8_path

from conftest import run_zoo


def test_tolerances_are_judged_in_the_metric_s_direction():
    det = {"mAP50": ("drop", 0.01)}
    assert _judge(det, {"mAP50": 0.80}, {"mAP50": 0.795})[-1]
    assert not _judge(det, {"mAP50": 0.80}, {"mAP50": 0.785})[-1]
    assert _judge(det, {"mAP50": 0.80}, {"mAP50": 0.83})[-1]   # a gain is fine
    op = {"rel_l2": ("rel_increase", 0.05)}
    metric, before, after, change, allowed, ok = _judge(op, {"rel_l2": 0.010}, {"rel_l2": 0.0104})
    assert ok and change == pytest.approx(0.04) and "5%" in allowed
    assert not _judge(op, {"rel_l2": 0.010}, {"rel_l2": 0.0106})[-1]
    with pytest.raises(ConfigError):
        _judge({"x": ("sideways", 1)}, {"x": 1}, {"x": 1})


def test_the_tasks_declare_their_tolerances():
    assert get_task("detection").int8_tolerance == {"mAP50": ("drop", 0.01)}
    assert get_task("operator").int8_tolerance == {"rel_l2": ("rel_increase", 0.05)}
    assert get_task("pde-rollout").int8_tolerance == {"rollout_rel_l2": ("rel_increase", 0.05)}
    assert get_task("classification").int8_tolerance == {"top1": ("drop", 1.0)}
    assert get_task("language-model").int8_tolerance == {}


def test_int8_file_sits_beside_the_fp32_one():
    assert int8_path(Path("exports/m.onnx")) == Path("exports/m.int8.onnx")
    assert int8_path(Path("x/y.xml")) == Path("x/y.int8.xml")


def test_the_last_product_before_each_output_stays_fp32():
    """Walking back from each output through non-quantised ops: the nearest Conv/MatMul/Gemm."""
    from onnx import TensorProto, helper

    from zoo.verbs.export import last_products
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="first"),
             helper.make_node("Relu", ["h1"], ["r1"], name="act"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="second"),
             helper.make_node("Add", ["h2", "b"], ["y"], name="bias"),
             helper.make_node("Gemm", ["r1", "w3"], ["z"], name="side")]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "y", "z")]
    graph = helper.make_graph(nodes, "g", [vi[0]], vi[1:])
    assert sorted(last_products(graph)) == ["second", "side"]


def test_the_output_tail_is_the_last_products_and_everything_after_them():
    from onnx import TensorProto, helper

    from zoo.verbs.export import output_tail
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="first"),
             helper.make_node("Relu", ["h1"], ["r1"], name="act"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="second"),
             helper.make_node("Add", ["h2", "b"], ["h3"], name="bias"),
             helper.make_node("Sigmoid", ["h3"], ["y"], name="decode")]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "g", [vi[0]], vi[1:])
    assert output_tail(graph) == ["bias", "decode", "second"]


class _ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = (torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1),
                                  torch.nn.Conv2d(8, 4, 1))

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = h + torch.relu(self.b(h))
        return torch.sigmoid(self.c(h)) * 2.0


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_each_runtime_gets_the_int8_graph_its_kernels_take(tmp_path, runtime):
    """OpenVINO: zero-point-free int8 activations into the convolutions only. onnxruntime: uint8
    activations around every op so its DQ-op-Q fusions apply. Both: the last conv and what follows fp32."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from zoo.verbs.export import quantise_onnx
    src, dst = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    torch.onnx.export(_ConvNet().eval(), (torch.randn(1, 3, 16, 16),), str(src), dynamo=False)
    rng = np.random.default_rng(0)
    quantise_onnx(src, dst, [(rng.standard_normal((1, 3, 16, 16)).astype(np.float32),) for _ in range(4)], runtime)
    graph = onnx.load(str(dst)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    activation_q = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert activation_q
    requantised = {producer[q.input[0]].op_type for q in activation_q if q.input[0] in producer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert inits[convs[-1].input[1]].dtype == np.float32   # the conv before the output keeps fp32 weights ...
    assert not requantised & {"Sigmoid", "Mul"}             # ... and what follows it is not requantised
    assert all(producer[c.input[1]].op_type == "DequantizeLinear" for c in convs[:-1])   # int8 weights
    zero_points = [inits[q.input[2]] for q in activation_q]
    if runtime == "openvino":
        assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
        assert "Add" not in requantised   # only the matrix products' inputs and outputs
    else:
        assert all(z.dtype == np.uint8 for z in zero_points)
        assert "Add" in requantised   # the op between convolutions is quantised too


class _OutlierNet(torch.nn.Module):
    """Two branches of the same spread, except that `hot` has one element 50 times the rest: its
    per-tensor int8 step is set by that element, and the rest of the tensor is rounded coarsely."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c, self.d = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(8, 8, 1)
        self.out = torch.nn.Conv2d(16, 4, 1)
        spike = torch.zeros(1, 8, 16, 16)
        spike[0, 0, 0, 0] = 50.0
        self.register_buffer("spike", spike)

    def forward(self, x):
        hot = torch.relu(self.a(x)) + self.spike
        cool = torch.relu(self.b(x))
        return self.out(torch.cat([self.c(hot), self.d(cool)], 1))


def test_a_tensor_with_an_outlier_ranks_more_sensitive_than_its_twin(tmp_path):
    import numpy as np

    from zoo.verbs.export import quantise_onnx, sensitivity_ranking
    torch.manual_seed(0)
    src, dst = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    torch.onnx.export(_OutlierNet().eval(), (torch.randn(2, 3, 16, 16),), str(src), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((2, 3, 16, 16)).astype(np.float32),) for _ in range(4)]
    quantise_onnx(src, dst, batches, "openvino")
    ranked = sensitivity_ranking(src, dst, batches, tmp_path / "scratch")
    position = {readers[0]: i for i, (_, readers) in enumerate(ranked) if len(readers) == 1}
    assert position["/c/Conv"] < position["/d/Conv"]   # the twin convolutions: the spiked input first
    assert ranked[0][1] == ["/c/Conv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.onnx"]   # scratch graphs removed


def test_the_accuracy_search_keeps_the_fewest_sensitive_layers_fp32_within_the_share(monkeypatch):
    """1, 2, 4 ... most sensitive tensors' readers kept fp32, the first within tolerance wins; nothing
    past the share of matrix products is tried."""
    from types import SimpleNamespace

    from onnx import TensorProto, helper

    import zoo.backends
    from zoo.verbs import export
    nodes = [helper.make_node("MatMul", [f"t{i}", f"w{i}"], [f"t{i + 1}"], name=f"mm{i}") for i in range(20)]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("t0", "t20")]
    graph = helper.make_graph(nodes, "g", [vi[0]], vi[1:])
    monkeypatch.setattr("onnx.load", lambda *a, **k: SimpleNamespace(graph=graph))
    monkeypatch.setattr(export, "sensitivity_ranking",
                        lambda *a: [(f"t{i}", [f"mm{i}"]) for i in (7, 3, 11, 5, 2, 13, 17, 1)])
    calls = []
    monkeypatch.setattr(export, "quantise_onnx", lambda *a, keep_fp32=(), **k: calls.append(keep_fp32))
    monkeypatch.setattr(zoo.backends, "from_file", lambda *a, **k: calls[-1])

    def run(needed, share):
        calls.clear()
        # the metric recovers once the `needed` most sensitive readers are fp32
        task = SimpleNamespace(name="t", int8_tolerance={"m": ("drop", 0.01)},
                               evaluate=lambda model, ds, opts: {"m": 0.9 if len(model) >= needed else 0.5})
        loaded = SimpleNamespace(task=task)
        return export._keep_sensitive_fp32(loaded, "src", "q", [], "openvino", None, {}, True, {"m": 0.9}, share,
                                           [{"sensitive_tensors": 0, "fp32_products": 0, "m": 0.5}], "scratch")

    model, after, kept, search = run(needed=3, share=0.25)
    assert kept == ["mm11", "mm3", "mm5", "mm7"] and after == {"m": 0.9}
    assert [s["sensitive_tensors"] for s in search] == [0, 1, 2, 4] and search[-1]["m"] == 0.9
    model, after, kept, search = run(needed=8, share=0.25)   # 5 of 20 products at most: 8 is never tried
    assert [s["sensitive_tensors"] for s in search] == [0, 1, 2, 4] and after == {"m": 0.5}
    assert run(needed=1, share=0.01) is None   # not even one product fits: nothing quantised again
    assert calls == []


def test_a_task_without_a_tolerance_refuses_int8(tmp_path):
    done = run_zoo("export", "gpt-mini.shakespeare", "--int8", "--out", str(tmp_path / "g.onnx"))
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("error: ") and "define no int8 tolerance" in last
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())


def test_int8_is_refused_for_formats_without_it(tmp_path):
    done = run_zoo("export", "deeponet.antiderivative", "--format", "torchscript", "--int8",
                   "--out", str(tmp_path / "d.pt"))
    assert done.returncode == 1 and "--int8 is for onnx and openvino" in done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_int8_classifier_within_tolerance(tmp_path):
    """resnet32 on Fashion-MNIST (1000 test images): int8 keeps top-1 within a point."""
    out = tmp_path / "r.onnx"
    done = run_zoo("export", "resnet32.fashion-mnist", "--int8", "--out", str(out), "-o", "subset=1000", "--json")
    assert done.returncode == 0, done.stderr
    q = json.loads(done.stdout)["int8"]
    assert out.is_file() and Path(q["path"]) == tmp_path / "r.int8.onnx" and Path(q["path"]).is_file()
    assert q["metric"] == "top1" and q["before"] - q["after"] <= 1.0
    assert q["metrics_int8"]["samples"] == q["metrics_fp32"]["samples"] == 1000
    assert Path(q["path"]).stat().st_size < out.stat().st_size / 2   # int8 weights
    lat = q["latency_ms"]
    assert q["speedup"] == pytest.approx(lat["fp32 onnxruntime"] / lat["int8 onnxruntime"], rel=1e-2)   # latency_ms is rounded
    assert any("slower than fp32" in n for n in q["notes"]) == (q["speedup"] < 1)   # said when it is
    assert q["search"][0]["sensitive_tensors"] == 0 and q["kept_fp32"] == []   # within at once: no search


@pytest.mark.slow
def test_int8_past_tolerance_is_refused_keeping_fp32_and_no_int8_file(tmp_path):
    """DeepONet's 0.5 % relative L2 error grows several-fold under int8 activations: refused."""
    out = tmp_path / "d.onnx"
    done = run_zoo("export", "deeponet.antiderivative", "--int8", "--out", str(out))
    assert done.returncode == 1, done.stdout
    line = done.stderr.strip().splitlines()[-1]
    assert "int8 deeponet.antiderivative refused: rel_l2" in line and "no int8 file written" in line
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx"]
