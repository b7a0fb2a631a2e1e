"""zoo bench: FLOPs against the machine's measured peak, the data loader's share of a training
step, and the warning when A and B of --compare are not like for like."""

import json

import pytest

import zoo
from zoo.verbs.bench import config_mismatch
from tests.conftest import run_zoo


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    return {"ZOO_CACHE": str(tmp_path_factory.mktemp("zoo-cache"))}


def test_bench_json_has_the_fraction_of_peak(cache_env):
    done = run_zoo("bench", "deeponet.antiderivative", "--repeats", "5", "--json", env=cache_env)
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout)
    (row,) = res["results"]
    peak = res["machine"]["peak_gflops_per_s"]
    assert peak > 0.1
    assert row["peak_ms"] == pytest.approx(row["gflops"] / peak * 1e3, rel=1e-9)
    assert 0 < row["fraction_of_peak"] < 1.5
    assert row["fraction_of_peak"] == pytest.approx(row["peak_ms"] / row["p50_ms"], rel=1e-9)
    assert row["backend"] in ("eager", "fused")
    # the second run reads the cached peak instead of measuring again
    again = json.loads(run_zoo("bench", "deeponet.antiderivative", "--repeats", "2", "--json",
                               env=cache_env).stdout)
    assert again["machine"]["cached"] and again["machine"]["peak_gflops_per_s"] == peak


def test_refresh_peak_measures_again(tmp_path):
    """A peak measured on a busy machine would stay low for ever: --refresh-peak replaces it."""
    env = {"ZOO_CACHE": str(tmp_path)}
    peak_file = tmp_path / "machine" / "peak_flops.json"
    assert run_zoo("bench", "deeponet.antiderivative", "--repeats", "2", "--json", env=env).returncode == 0
    table = json.loads(peak_file.read_text())
    key = next(iter(table))
    table[key]["flops"] = 1.0   # a nonsense yardstick, as from a measurement under heavy load
    peak_file.write_text(json.dumps(table))
    stale = json.loads(run_zoo("bench", "deeponet.antiderivative", "--repeats", "2", "--json", env=env).stdout)
    assert stale["machine"]["cached"] and stale["machine"]["peak_gflops_per_s"] == 1e-9
    fresh = json.loads(run_zoo("bench", "deeponet.antiderivative", "--repeats", "2", "--refresh-peak", "--json",
                               env=env).stdout)
    assert not fresh["machine"]["cached"] and fresh["machine"]["peak_gflops_per_s"] > 0.1
    assert json.loads(peak_file.read_text())[key]["flops"] > 1e8


def test_bench_table_names_the_yardstick(cache_env):
    done = run_zoo("bench", "deeponet.antiderivative", "--repeats", "2", env=cache_env)
    assert done.returncode == 0, done.stderr
    assert "of peak" in done.stdout and "GFLOP/s" in done.stdout


def test_compare_warns_when_the_configurations_differ(cache_env):
    done = run_zoo("bench", "deeponet.antiderivative", "--compare", "deeponet.darcy", "--repeats", "2",
                   env=cache_env)
    assert done.returncode == 0, done.stderr
    warnings = [ln for ln in done.stderr.splitlines() if ln.startswith("warning")]
    assert len(warnings) == 1 and "differ in" in warnings[0] and "input" in warnings[0]


def test_compare_of_one_model_with_itself_has_no_warning(cache_env, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", cache_env["ZOO_CACHE"])
    res = zoo.bench("deeponet.antiderivative", compare="deeponet.antiderivative", repeats=2, warmup=1)
    assert res["warnings"] == [] and len(res["results"]) == 2
    assert all(len(r) > 0 for r in (res["results"][0], res["results"][1]))
    (ratio,) = [v for k, v in res["ratios"].items() if k.startswith("latency")]
    assert 0.2 < ratio < 5


def test_config_mismatch_names_scale_keys_only():
    a = {"embed_dim": 384, "num_experts": 8, "top_k": 2, "router": "uncertainty"}
    b = {"embed_dim": 128, "num_experts": 8, "top_k": 2, "router": "plain", "extra": 1}
    diffs = config_mismatch(a, b, [[1, 3, 64, 64]], [[1, 3, 64, 64]])
    assert diffs == ["embed_dim 384 vs 128"]
    assert config_mismatch(a, dict(a), [[1, 3, 64, 64]], [[1, 3, 32, 32]]) == ["input [[1, 3, 64, 64]] vs [[1, 3, 32, 32]]"]
    assert config_mismatch({"num_experts": 4}, {"num_experts": 16}) == ["num_experts 4 vs 16"]


def test_train_reports_samples_per_second_and_the_data_share(cache_env, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", cache_env["ZOO_CACHE"])
    res = zoo.bench("deeponet.antiderivative", train=True, repeats=3, warmup=1, batch_size=8)
    (row,) = res["results"]
    assert row["samples_per_s"] == pytest.approx(8 / (row["p50_ms"] / 1e3), rel=1e-9)
    assert 0 < row["data_share"] < 1 and row["data_ms"] > 0 and row["data"] == "antiderivative"
    assert row["compute_ms"] == pytest.approx(row["p50_ms"] - row["data_ms"], rel=1e-6)
    assert row["gflops"] > 0 and 0 < row["fraction_of_peak"] < 1.5
    off = zoo.bench("deeponet.antiderivative", train=True, repeats=2, warmup=1, batch_size=8, data=False)
    assert "data_share" not in off["results"][0]


def test_backends_are_timed_in_one_run_each_with_its_fraction_of_peak(cache_env, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", cache_env["ZOO_CACHE"])
    res = zoo.bench("deeponet.antiderivative", backend="eager,onnxruntime", repeats=3, warmup=1)
    eager, ort = res["results"]
    assert (eager["backend"], ort["backend"]) == ("eager", "onnxruntime")
    assert ort["parity_max_abs"] is not None and ort["parity_max_abs"] < 1e-3
    assert ort["gflops"] == eager["gflops"] and 0 < ort["fraction_of_peak"] < 1.5
    assert ort["peak_mb"] is None   # onnxruntime's allocations are not torch's to count
    (ratio,) = [v for k, v in res["ratios"].items() if "onnxruntime / eager" in k]
    assert ratio == pytest.approx(ort["p50_ms"] / eager["p50_ms"], rel=1e-9)


def test_bad_backend_and_train_with_a_backend_are_one_line_errors(cache_env):
    done = run_zoo("bench", "deeponet", "--backend", "onnxruntim", env=cache_env)
    assert done.returncode == 2 and "did you mean 'onnxruntime'" in done.stderr and "Traceback" not in done.stderr
    done = run_zoo("bench", "deeponet", "--backend", "onnxruntime", "--train", env=cache_env)
    assert done.returncode != 0 and "--backend is for inference" in done.stderr and "Traceback" not in done.stderr
