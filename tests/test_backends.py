"""Inference backends (zoo.backends): parity-checked stand-ins for the model, one-line fallback,
`auto`'s cached choice, and `zoo eval/predict --backend`."""

import json
from pathlib import Path

import pytest
import torch

import zoo.backends as backends
from zoo.errors import UnknownNameError
from zoo.loading import load

from conftest import run_zoo


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module (ZOO_CACHE/backends): a model's ONNX file is exported once and reused."""
    return tmp_path_factory.mktemp("zoo-cache") / "backends"


@pytest.fixture(scope="module")
def loaded():
    return load("deeponet.antiderivative", device="cpu")


def _one_line(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("backend ")]


def test_onnxruntime_stands_in_for_the_model(loaded, cache):
    p = backends.prepare(loaded, None, "onnxruntime", cache_dir=cache)
    assert p.backend == "onnxruntime" and p.fallback_reason is None
    assert 0 <= p.parity < 1e-4
    # the model's own attributes come through, and any batch / number of points runs
    assert p.branch_input == loaded.model.branch_input
    u, x = torch.rand(3, 100), torch.rand(3, 37, 1)
    with torch.inference_mode():
        want, got = loaded.model(u, x), p(u, x)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    # the file is cached by model, weights and shape: a second prepare reuses it
    files = list((cache / "onnx").glob("*.onnx"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    backends.prepare(loaded, None, "onnxruntime", cache_dir=cache)
    assert files[0].stat().st_mtime_ns == mtime


def test_query_points_shared_by_the_batch_run_on_the_backend(loaded, cache, capsys):
    """(P, d) points, as MT-DeepONet's Fisher evaluation passes them, go to the graph as (B, P, d)
    instead of sending the run to eager."""
    p = backends.prepare(loaded, None, "onnxruntime", cache_dir=cache)
    u, x = torch.rand(3, 100), torch.rand(37, 1)
    with torch.inference_mode():
        want, got = loaded.model(u, x), p(u, x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert "ran_eager_after" not in p.summary() and "running eager" not in capsys.readouterr().err


def test_a_drifting_backend_falls_back_with_one_line(loaded, cache, monkeypatch, capsys):
    backends.prepare(loaded, None, "onnxruntime", cache_dir=cache, quiet=True)   # the file, before the patch
    capsys.readouterr()
    real = backends._OrtRunner.__call__
    monkeypatch.setattr(backends._OrtRunner, "__call__", lambda self, *a: [t + 1e-2 for t in real(self, *a)])
    p = backends.prepare(loaded, None, "onnxruntime", cache_dir=cache)
    assert p.backend == "eager" and p.detail["requested"] == "onnxruntime"
    assert "drifts from eager" in p.fallback_reason
    err = capsys.readouterr().err
    assert len(_one_line(err)) == 1 and "falling back to eager" in err
    # the stand-in is then eager itself
    u, x = loaded.task.example_input(loaded.model, {})
    with torch.inference_mode():
        assert torch.equal(p(u, x), loaded.model(u, x))


def test_a_backend_that_cannot_build_falls_back(loaded, tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise RuntimeError("exporter exploded\nsecond line")
    monkeypatch.setattr(backends, "write_onnx", broken)
    # onnxruntime, a core dependency: the openvino extra is not installed in CI
    p = backends.prepare(loaded, None, "onnxruntime", cache_dir=tmp_path)
    assert p.backend == "eager" and "exporter exploded second line" in p.fallback_reason
    assert len(_one_line(capsys.readouterr().err)) == 1
    assert not list(tmp_path.rglob("*.onnx"))   # nothing half-written left in the cache


def test_a_runtime_failure_mid_run_goes_eager_in_one_line(loaded, cache, monkeypatch, capsys):
    p = backends.prepare(loaded, None, "onnxruntime", cache_dir=cache)
    capsys.readouterr()

    def fails(self, *a):
        raise RuntimeError("shape not supported")
    monkeypatch.setattr(backends._OrtRunner, "__call__", fails)
    u, x = torch.rand(2, 100), torch.rand(2, 5, 1)
    with torch.inference_mode():
        assert torch.allclose(p(u, x), loaded.model(u, x))
        p(u, x)
    err = capsys.readouterr().err
    assert err.count("running eager from here") == 1


def test_unknown_backend_is_refused_with_the_closest_name(loaded):
    with pytest.raises(UnknownNameError, match="did you mean 'onnxruntime'"):
        backends.prepare(loaded, None, "onnxruntim")
    done = run_zoo("eval", "deeponet.antiderivative", "--backend", "openvno")
    assert done.returncode == 2 and "did you mean 'openvino'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_auto_choice_is_cached_per_model_and_machine_and_reused(loaded, cache, monkeypatch, capsys):
    timed = []
    real = backends.time_backends

    def spy(*a, **k):
        timed.append(1)
        return real(*a, budget_s=0.3, **{kk: v for kk, v in k.items() if kk != "budget_s"})
    monkeypatch.setattr(backends, "time_backends", spy)
    first = backends.prepare(loaded, None, "auto", cache_dir=cache, candidates=["eager", "onnxruntime"])
    auto = first.detail["auto"]
    assert first.backend == auto["choice"] in ("eager", "onnxruntime") and not auto["cached"]
    assert set(auto["medians_ms"]) == {"eager", "onnxruntime"} and auto["machine"] == backends.machine_id()
    record = json.loads(Path(auto["file"]).read_text())
    assert Path(auto["file"]).parent == cache / "auto"
    assert record["choice"] == first.backend
    assert f"backend auto for deeponet.antiderivative: {first.backend}" in capsys.readouterr().err
    second = backends.prepare(loaded, None, "auto", cache_dir=cache, candidates=["eager", "onnxruntime"])
    assert len(timed) == 1, "the cached choice is reused, not timed again"
    assert second.backend == first.backend and second.detail["auto"]["cached"]
    assert "cached choice" in capsys.readouterr().err
    # another machine (thread count) times again
    monkeypatch.setattr(backends, "machine_id", lambda threads=None: "another cpu|threads=64")
    backends.prepare(loaded, None, "auto", cache_dir=cache, candidates=["eager", "onnxruntime"], quiet=True)
    assert len(timed) == 2


def test_auto_on_a_cpu_does_not_build_torch_compile(loaded, tmp_path, monkeypatch):
    """compile's first build takes minutes on a CPU: auto leaves it out unless asked for by name."""
    built = []
    real_one = backends._one

    def spy(base, backend, *a, **k):
        built.append(backend)
        return real_one(base, backend, *a, **k)
    monkeypatch.setattr(backends, "_one", spy)
    monkeypatch.setattr(backends, "time_backends", lambda ready, *a, **k: {n: float(i) for i, n in enumerate(ready)})
    chosen = backends.prepare(loaded, None, "auto", cache_dir=tmp_path, quiet=True)   # no cached choice
    assert "compile" not in built and "onnxruntime" in built
    assert "compile" in chosen.detail["auto"]["failed"]


def test_topk_parity_checks_boxes_not_only_tensors():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(1, 30, 2, generator=g) * 500
    boxes = torch.cat((xy, xy + 40), -1)
    scores = torch.linspace(0.9, 0.1, 30).reshape(1, 30, 1)
    ref = torch.cat((boxes, scores, torch.zeros(1, 30, 1)), -1)
    assert backends.topk_parity(ref, ref.clone())["ok"]
    moved = ref.clone()
    moved[0, 3, :4] += 15   # one confident box elsewhere: same scores, wrong box
    res = backends.topk_parity(ref, moved)
    assert not res["ok"] and res["min_iou"] < backends.TOPK_IOU
    relabelled = ref.clone()
    relabelled[0, 0, 5] = 1
    assert not backends.topk_parity(ref, relabelled)["ok"]
    # near-equal scores may swap places across runtimes: not a drift
    tie = ref.clone()
    tie[0, 5, 4] = tie[0, 6, 4] = 0.5
    swapped = tie.clone()
    swapped[0, [5, 6]] = tie[0, [6, 5]]
    assert backends.topk_parity(tie, swapped)["ok"]


def test_predict_reports_backend_and_parity(cache, monkeypatch):
    import zoo
    monkeypatch.setenv("ZOO_CACHE", str(cache.parent))
    res = zoo.predict("deeponet.antiderivative", dataset="antiderivative", backend="onnxruntime",
                      save=None)
    assert res["backend"] == "onnxruntime" and 0 <= res["parity"] < 1e-4


@pytest.mark.slow
def test_cli_eval_onnxruntime_matches_eager():
    eager = run_zoo("eval", "deeponet.antiderivative", "--json")
    ort = run_zoo("eval", "deeponet.antiderivative", "--backend", "onnxruntime", "--json")
    assert eager.returncode == 0 and ort.returncode == 0, ort.stderr
    e, o = json.loads(eager.stdout), json.loads(ort.stdout)
    assert e["backend"] == "eager" and o["backend"] == "onnxruntime" and o["parity"] < 1e-4
    assert o["metrics"]["rel_l2"] == pytest.approx(e["metrics"]["rel_l2"], rel=1e-3)
    assert o["metrics"]["samples"] == e["metrics"]["samples"]


def test_bf16_on_a_cpu_without_it_falls_back_in_one_line(loaded, tmp_path, monkeypatch, capsys):
    """A bf16 hint on a CPU without bf16 arithmetic would run fp32 in silence: the backend is not offered."""
    monkeypatch.setattr(backends, "available_backends", lambda: ["eager", "compile", "onnxruntime", "openvino"])
    monkeypatch.setattr(backends, "openvino_capabilities", lambda: ["FP32", "INT8"])
    p = backends.prepare(loaded, None, "openvino-bf16", cache_dir=tmp_path)
    assert p.backend == "eager" and p.detail["requested"] == "openvino-bf16"
    assert p.fallback_reason == "this CPU has no bf16 arithmetic (OpenVINO CPU capabilities: FP32, INT8)"
    assert len(_one_line(capsys.readouterr().err)) == 1


def test_auto_never_picks_a_reduced_precision(loaded, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(backends, "available_backends", lambda: ["eager", "onnxruntime", "openvino-bf16"])
    real_one = backends._one
    monkeypatch.setattr(backends, "_one", lambda base, b, *a, **k: built.append(b) or real_one(base, b, *a, **k))
    monkeypatch.setattr(backends, "time_backends", lambda ready, *a, **k: {n: float(i) for i, n in enumerate(ready)})
    chosen = backends.prepare(loaded, None, "auto", cache_dir=tmp_path, quiet=True)
    assert built == ["onnxruntime"]
    assert "reduced precision" in chosen.detail["auto"]["failed"]["openvino-bf16"]


def test_a_reduced_precision_metric_is_judged_against_the_card(loaded):
    from zoo.verbs.evaluate import precision_check
    import zoo.registry as registry
    card = registry.load_registry().models["deeponet"].checkpoints["antiderivative"].metrics["rel_l2"]
    close = precision_check(loaded, "antiderivative", {"rel_l2": card * 1.03})
    far = precision_check(loaded, "antiderivative", {"rel_l2": card * 1.26})
    assert close["ok"] and close["card"] == card and abs(close["change"] - 0.03) < 1e-9
    assert not far["ok"] and "5%" in far["allowed"]
    assert precision_check(loaded, "darcy", {"rel_l2": card}) is None   # not the card's data: no verdict


@pytest.mark.skipif("openvino-bf16" not in backends.available_backends(),
                    reason="needs the openvino extra and a CPU with bf16 arithmetic (AMX or AVX512-BF16)")
def test_openvino_bf16_runs_in_bf16_and_reports_the_metric_cost(loaded, cache):
    fp32 = backends.prepare(loaded, None, "openvino", cache_dir=cache)
    bf16 = backends.prepare(loaded, None, "openvino-bf16", cache_dir=cache)
    assert bf16.backend == "openvino-bf16" and bf16.fallback_reason is None
    # really bf16: far from eager next to fp32 OpenVINO, yet inside bf16's own tolerance
    assert bf16.parity > 100 * max(fp32.parity, 1e-7)
    done = run_zoo("eval", "deeponet.antiderivative", "--backend", "openvino-bf16", "--json")
    res = json.loads(done.stdout)
    check = res["precision_check"]
    assert res["backend"] == "openvino-bf16" and check["metric"] == "rel_l2" and check["now"] == res["metrics"]["rel_l2"]


def test_a_graph_that_ignores_the_batch_size_falls_back(loaded, cache, monkeypatch, capsys):
    """A runtime that folded the example's batch size into its graph answers the example right and
    any other batch wrong: parity is also checked on a batch one larger."""
    first = backends.prepare(loaded, None, "onnxruntime", cache_dir=cache, quiet=True)
    n = backends.Reference(loaded, None, {}, True).args[0].shape[0]
    real = backends._OrtRunner.__call__
    monkeypatch.setattr(backends._OrtRunner, "__call__", lambda self, *a: real(self, *[t[:n] for t in a]))
    p = backends.prepare(loaded, None, "onnxruntime", cache_dir=cache)
    assert first.backend == "onnxruntime" and p.backend == "eager"
    assert f"at batch {n + 1}" in p.fallback_reason


def test_a_call_that_leaves_an_input_to_its_default_runs_eager(capsys):
    """OpenVINO fills an input a call leaves out with the previous call's tensor: such a call never
    reaches the graph."""
    calls = []
    runner = backends._Structured(lambda *a: calls.append(a) or [a[0] * 2], torch.zeros(1), lambda *a: a[0] + 1,
                                  "backend test", n_inputs=2)
    x = torch.ones(3)
    assert torch.equal(runner(x, x), x * 2) and len(calls) == 1
    assert torch.equal(runner(x), x + 1) and len(calls) == 1
    assert "called with 1 inputs, the graph takes 2" in runner.failed
    assert capsys.readouterr().err.count("running eager from here") == 1


@pytest.mark.skipif("openvino" not in backends.available_backends(), reason="needs the openvino extra")
def test_openvino_compiles_each_input_shape_static_and_agrees_with_its_dynamic_graph(loaded, cache):
    """Static compiles (faster) per set of input shapes, up to STATIC_SHAPES of them; a shape past
    those runs the dynamic compile; every one gives the dynamic graph's numbers."""
    p = backends.prepare(loaded, None, "openvino", cache_dir=cache, quiet=True)
    runner = backends._OpenVinoRunner(Path(p.detail["onnx"]))
    dynamic = backends._OpenVinoRunner(runner.path)
    dynamic.STATIC_SHAPES = 0
    for b, n in [(1, 10), (2, 10), (1, 10), (3, 5), (4, 7), (5, 9)]:
        u, x = torch.rand(b, 100), torch.rand(b, n, 1)
        got, want = runner(u, x)[0], dynamic(u, x)[0]
        assert got.shape == (b, n) and torch.allclose(got, want, atol=1e-5)
    compiled = [runner.by_shape[k][0] for k in runner.by_shape]
    assert len(runner.by_shape) == 4 and runner._dynamic is not None
    assert all(c.inputs[0].get_partial_shape().is_static for c in compiled)
    assert dynamic.by_shape == {} and dynamic._dynamic[0].inputs[0].get_partial_shape().is_dynamic


def test_openvino_runner_falls_back_to_the_dynamic_compile_when_a_static_one_fails(monkeypatch):
    """Without openvino itself: the runner's shape bookkeeping against a stand-in core."""
    made = []

    class Compiled:
        def __init__(self, shapes):
            self.shapes, self.outputs = shapes, ["y"]

        def create_infer_request(self):
            return self

        def infer(self, arrays):
            return {"y": arrays[0] * 2}

    class Model:
        inputs = ["x"]

        def __init__(self):
            self.shapes = None

        def reshape(self, mapping):
            if list(mapping.values())[0][0] == 7:
                raise RuntimeError("shape arithmetic")
            self.shapes = list(mapping.values())

    class Core:
        def read_model(self, path):
            return Model()

        def compile_model(self, model, device, config):
            made.append(model.shapes)
            return Compiled(model.shapes)

    runner = object.__new__(backends._OpenVinoRunner)
    runner.core, runner.config, runner.path, runner.by_shape, runner._dynamic = Core(), {}, Path("m.onnx"), {}, None
    for b in (1, 1, 7, 2):
        out = runner(torch.ones(b, 3))[0]
        assert torch.equal(out, torch.full((b, 3), 2.0))
    # one static compile per new shape, the failed one served by a single dynamic compile
    assert made == [[[1, 3]], None, [[2, 3]]]
    assert runner.by_shape[((7, 3),)] is runner._dynamic
