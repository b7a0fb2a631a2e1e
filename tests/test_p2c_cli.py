"""P2C through the CLI, as a user runs it (issue 16's "What a user runs"): eval of the published
checkpoints against their registry numbers, the user's own CSV, predict on a text and a pair, and
the bad-input messages. Slow: each call loads a 23M-parameter encoder."""

from __future__ import annotations

import json

import pytest

import zoo.registry as reg
from tests.conftest import run_zoo

pytestmark = pytest.mark.slow


def _json(res):
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("name", ["p2c-minilm", "minilm-cls"])
def test_eval_reproduces_the_registry_numbers(name):
    entry = reg.load_registry().models[name]
    ck = entry.checkpoints.get("rotten-tomatoes")
    if ck is None:
        pytest.skip(f"{name} has no rotten-tomatoes checkpoint in the registry yet")
    out = _json(run_zoo("eval", name, "--dataset", "rotten-tomatoes", "--json"))
    for key, value in ck.metrics.items():
        assert out["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-4), key


def test_eval_on_the_users_csv_and_bad_files(tmp_path):
    good = tmp_path / "my_reviews.csv"
    good.write_text("text,label\n\"A tender, funny film.\",fresh\nDull and lifeless.,rotten\n")
    out = _json(run_zoo("eval", "p2c-minilm", "--data", str(good), "--json"))
    assert out["metrics"]["samples"] == 2
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("text,stars\ngood,5\n")
    res = run_zoo("eval", "p2c-minilm", "--data", str(nolabel))
    assert res.returncode != 0 and "no 'label' column" in res.stderr and "Traceback" not in res.stderr
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("text,label\ngood,positive\n")
    res = run_zoo("eval", "p2c-minilm", "--data", str(wrong))
    assert res.returncode != 0 and "not one of the model's classes" in res.stderr
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text,label\ncaf\xe9,fresh\n")
    res = run_zoo("eval", "p2c-minilm", "--data", str(latin))
    assert res.returncode != 0 and "not UTF-8" in res.stderr and "Traceback" not in res.stderr


def test_predict_text_lines_and_pair(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("A tender, funny film.\n\nDull and lifeless.\n")
    out = _json(run_zoo("predict", "p2c-minilm", str(lines), "--json"))
    assert [r["text"] for r in out["predictions"]] == ["A tender, funny film.", "Dull and lifeless."]
    out = _json(run_zoo("predict", "p2c-minilm", "A tender, funny and quietly devastating film.", "--json"))
    assert out["prediction"] in ("fresh", "rotten") and abs(sum(out["probs"].values()) - 1) < 1e-4
    out = _json(run_zoo("predict", "p2c-minilm", "A masterpiece.", "-o", "pair=It was fine, I guess.", "--json"))
    pref = out["preference"]
    assert len(pref["p_b_preferred"]) == 3 and all(0 <= p <= 1 for p in pref["p_b_preferred"])
    res = run_zoo("predict", "p2c-minilm", "   ")
    assert res.returncode != 0 and "empty" in res.stderr and "Traceback" not in res.stderr
