import json

import pytest
import torch

import zoo
from zoo.errors import ExportError
from tests.conftest import run_zoo


@pytest.fixture(scope="module")
def darcy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "darcy"
    zoo.finetune("deeponet", dataset="darcy", out=out, steps=3, batch_size=8, progress=False, size=40)
    return out


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2", "safetensors"])
def test_export_round_trip_parity(darcy_run, tmp_path, fmt):
    res = zoo.export(str(darcy_run), fmt, out=tmp_path / f"m.{fmt}")
    assert res["max_abs_err"] <= res["atol"] + res["rtol"] * 1e3
    assert (tmp_path / f"m.{fmt}").is_file() and res["size_mb"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_onnx_has_a_dynamic_batch_axis(darcy_run, tmp_path):
    import onnxruntime as ort
    path = tmp_path / "m.onnx"
    zoo.export(str(darcy_run), "onnx", out=path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    a = torch.where(torch.rand(3, 1, 29, 29) > 0.5, 12.0, 3.0).numpy()
    p = torch.rand(3, 50, 2).numpy()
    (out,) = sess.run(None, {sess.get_inputs()[0].name: a, sess.get_inputs()[1].name: p})
    assert out.shape == (3, 50)


def test_export_drifting_past_tolerance_fails_and_leaves_no_file(darcy_run, tmp_path, monkeypatch):
    import zoo.verbs.export as ex

    real = ex._EXPORTERS["torchscript"]

    def drifting(*args, **kwargs):
        return [t + 1e-2 for t in real(*args, **kwargs)]

    monkeypatch.setitem(ex._EXPORTERS, "torchscript", drifting)
    with pytest.raises(ExportError, match="drifts past the tolerance"):
        zoo.export(str(darcy_run), "torchscript", out=tmp_path / "m.ts")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_unknown_format(darcy_run):
    done = run_zoo("export", str(darcy_run), "--format", "onnnx")
    assert done.returncode == 2 and "did you mean 'onnx'" in done.stderr


def test_bench_reports_params_flops_latency_memory(darcy_run):
    res = zoo.bench(str(darcy_run), batch_size=4, repeats=3, warmup=1)
    r = res["results"][0]
    assert r["params"] == 682_753
    assert r["gflops"] > 0 and r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and r["throughput"] > 0
    assert r["peak_mb"] > 0


def test_bench_compare_and_train_mode(darcy_run):
    res = zoo.bench(str(darcy_run), compare=str(darcy_run), train=True, repeats=3, warmup=1, batch_size=4)
    assert res["mode"] == "train step" and len(res["results"]) == 2
    (ratio,) = [v for k, v in res["ratios"].items() if k.startswith("latency")]
    assert 0.2 < ratio < 5  # the same model on both sides


def test_predict_picture(darcy_run, tmp_path):
    out = zoo.predict(str(darcy_run), dataset="darcy", save=tmp_path / "d.png", size=40)
    assert (tmp_path / "d.png").stat().st_size > 10_000 and 0 <= out["rel_l2"]


def test_checkpoint_config_mismatch_is_one_line(darcy_run, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(darcy_run, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["config"]["trunk_layers"] = [64, 64, 64, 128]
    (bad / "config.json").write_text(json.dumps(cfg))
    done = run_zoo("eval", str(bad), "--dataset", "darcy", "-o", "size=40")
    assert done.returncode == 1
    assert "does not match" in done.stderr and "Traceback" not in done.stderr
