"""benchmarks/vs_official.py without any official checkout: zoo's own paths, and --int8's rows
(our graph quantised by `zoo export --int8`'s quantiser, its metric judged by the task's tolerance)."""

import importlib.util
import io
import contextlib

from tests.conftest import ROOT


def _script():
    spec = importlib.util.spec_from_file_location("vs_official", ROOT / "benchmarks" / "vs_official.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_int8_rows_are_timed_beside_fp32_and_carry_their_accuracy(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        out = _script().main(["--models", "deeponet", "--int8", "--backends", "eager,onnxruntime",
                              "--repeats", "2", "--warmup", "1", "--threads", "1", "--json",
                              "--onnx-dir", str(tmp_path)])
    (m,) = out["models"]
    rows = {r["backend"]: r for r in m["rows"]}
    assert {"eager", "onnxruntime", "int8 onnxruntime"} <= rows.keys()
    # int8 is never the "best" (fp32) path, and its output is near, not equal to, the fp32 one
    best = next(k for k in rows if k.startswith("best:"))
    assert "int8" not in best
    assert 0 < rows["int8 onnxruntime"]["ours_max_abs"] < 0.1 and rows["int8 onnxruntime"]["ours_ms"] > 0
    (q,) = m["int8"]
    assert q["metric"] == "rel_l2" and q["runtime"] == "onnxruntime" and q["int8"] > 0
    assert q["within"] == (q["int8"] <= q["fp32_eager"] * 1.05)
    assert (tmp_path / "deeponet-1x100" / "ours.int8-onnxruntime.onnx").is_file()
