"""`zoo compare`: models of one task measured in one process on the same data, a Markdown table and
a self-contained HTML report; one model, mixed tasks and unknown backends are refused in one line."""

import base64
import re

import pytest

from conftest import run_zoo

A = "deeponet.antiderivative"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A second antiderivative operator: a few steps from scratch, so its metrics are clearly worse."""
    from zoo.verbs.finetune import finetune
    out = tmp_path_factory.mktemp("cmp") / "run"
    finetune("deeponet", dataset="antiderivative", out=out, steps=5, pretrained=False, progress=False)
    return out


def test_compare_two_operators_with_report(run_folder, tmp_path):
    from zoo.verbs.compare import compare
    report = tmp_path / "cmp.html"
    res = compare([A, str(run_folder)], report=report, backends=["eager", "fused"],
                  options={"repeats": 5, "warmup": 1})
    assert res["task"] == "operator" and res["dataset"] == "antiderivative"
    a, b = res["models"]
    assert a["model"] == A and a["params"] == b["params"] == 7401
    assert a["latency"]["eager"]["p50_ms"] > 0 and a["latency"]["eager"]["p90_ms"] >= a["latency"]["eager"]["p50_ms"]
    assert a["latency"]["fused"] is None and any("fused" in n for n in a["notes"])   # DeepONet has no fuse()
    assert a["gflops"] > 0 and a["peak_mb"] >= 0
    assert a["metrics"]["rel_l2"] < 0.01 < b["metrics"]["rel_l2"]      # trained vs 5 steps
    md = (tmp_path / "cmp.md").read_text()
    assert "| model | params |" in md and A in md and "eager p50/p90 ms" in md
    html = report.read_text()
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(pngs) == 2 and all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not re.search(r'(src|href)="https?:', html)      # self-contained
    # an existing report is not overwritten unless asked
    from zoo.errors import ZooError
    with pytest.raises(ZooError, match="exists"):
        compare([A, str(run_folder)], report=report, backends=["eager"], options={"repeats": 1})


def test_pareto_front():
    from zoo.verbs.compare import pareto
    pts = [(1.0, 0.5, "fast-bad"), (2.0, 0.1, "slow-good"), (3.0, 0.4, "dominated")]
    assert sorted(pareto(pts, lower_is_better=True)) == ["fast-bad", "slow-good"]
    assert pareto(pts, lower_is_better=False) == ["fast-bad"]


@pytest.mark.parametrize("args, words", [
    ([A], "at least two models"),
    ([A, "gpt-mini.shakespeare"], "different tasks"),
    ([A, "deeponet.darcy", "--backend", "tensorrtx"], "unknown backend 'tensorrtx'"),
    ([A, "deeponet.darcy", "--report", "cmp.txt"], ".html"),
])
def test_bad_requests_are_one_line(args, words, tmp_path):
    r = run_zoo("compare", *args, cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], r.stderr
    assert list(tmp_path.iterdir()) == []
