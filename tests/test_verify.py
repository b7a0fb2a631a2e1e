"""`zoo verify`: a checkpoint's recorded eval re-run and compared with its card; a tampered number,
changed data, missing data and a card without a recorded eval are each caught in one line."""

import json
import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, run_zoo

NAME = "deeponet.antiderivative"


def _registry_with(tmp_path, edit) -> Path:
    """A copy of the project's registry with one text edit (the test fails if the edit misses)."""
    text = (ROOT / "registry.yaml").read_text(encoding="utf-8")
    new = edit(text)
    assert new != text, "the edit did not apply: the registry entry changed shape"
    path = tmp_path / "registry.yaml"
    path.write_text(new, encoding="utf-8")
    return path


def _block(text: str) -> tuple[int, int]:
    """Start and end of the deeponet.antiderivative checkpoint block."""
    i = text.index("        repo: zoo/deeponet-antiderivative")
    j = text.index("      darcy:", i)
    return i, j


def _sub_in_block(pattern, repl):
    def edit(text):
        i, j = _block(text)
        return text[:i] + re.sub(pattern, repl, text[i:j], count=1) + text[j:]
    return edit


@pytest.fixture()
def use_registry(monkeypatch):
    def use(path):
        monkeypatch.setenv("ZOO_REGISTRY", str(path))
    return use


def test_the_card_is_re_measured_and_passes():
    from zoo.verbs.verify import verify
    res = verify(NAME)
    assert res["status"] == "PASS", res
    rows = {r["metric"]: r for r in res["metrics"]}
    assert rows["rel_l2"]["status"] == "PASS" and abs(rows["rel_l2"]["delta"]) <= rows["rel_l2"]["tolerance"]
    assert res["data_sha256"]["card"] and res["data_sha256"]["status"] == "PASS"
    # the paper's number is shown beside ours, labelled as the paper's
    import zoo.registry as reg
    reported = next(r for r in reg.load_registry().models["deeponet"].reported if r.metric == "mse")
    assert rows["mse"]["paper"] == {"value": float(reported.value), "source": reported.source}


def test_a_tampered_metric_fails_with_exit_1(tmp_path):
    path = _registry_with(tmp_path, _sub_in_block(r"rel_l2: 0\.0048\d+", "rel_l2: 0.0041"))
    r = run_zoo("verify", NAME, env={"ZOO_REGISTRY": str(path)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("rel_l2 "))
    assert "FAIL" in line and "0.0041" in line
    assert "FAIL" in r.stdout.splitlines()[0]


def test_changed_eval_data_fails(tmp_path, use_registry):
    use_registry(_registry_with(tmp_path, _sub_in_block(r"data_sha256: [0-9a-f]{64}", "data_sha256: " + "ab" * 32)))
    from zoo.verbs.verify import verify
    res = verify(NAME)
    assert res["status"] == "FAIL" and res["data_sha256"]["status"] == "FAIL"


def test_missing_eval_data_is_one_line(tmp_path):
    path = _registry_with(tmp_path, _sub_in_block(r"(\n        eval: \{)", r"\1files: {gone/test-set.npz: " + "a" * 64 + "}, "))
    r = run_zoo("verify", NAME, env={"ZOO_REGISTRY": str(path)})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "eval data is missing" in r.stderr and "gone/test-set.npz" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 or r.stderr.count("error:") == 1


def test_a_card_without_a_recorded_eval_is_refused(tmp_path, use_registry):
    use_registry(_registry_with(tmp_path, _sub_in_block(r"\n        eval: \{[^\n]*\}", "")))
    from zoo.errors import CheckpointError
    from zoo.verbs.verify import verify
    with pytest.raises(CheckpointError, match="no recorded eval"):
        verify(NAME)
    # --record measures it and prints the block to paste
    res = verify(NAME, record=True)
    assert re.fullmatch(r"[0-9a-f]{64}", res["record"]["data_sha256"])


def test_a_model_without_checkpoints_is_one_line():
    r = run_zoo("verify", "sinenet-8")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "no checkpoint" in r.stderr


def test_every_checkpoint_records_its_eval():
    """Each checkpoint the registry lists says how to re-measure its metrics."""
    import zoo.registry as reg
    missing = [f"{n}.{t}" for n, e in reg.load_registry().models.items() for t, ck in e.checkpoints.items()
               if ck.metrics and ck.eval is None]
    assert not missing, f"checkpoints without an eval: record: {missing}"


def test_all_json_skips_slow_ones(tmp_path):
    r = run_zoo("verify", "deeponet*", "--all", "--max-seconds", "5", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    by = {x["checkpoint"]: x["status"] for x in res["results"]}
    assert by[NAME] == "PASS" and res["ok"]
    assert set(by) == {n for n in by if n.startswith("deeponet.")}


def test_max_seconds_skips_a_checkpoint_whose_recorded_eval_is_slower(tmp_path):
    path = _registry_with(tmp_path, _sub_in_block(r"seconds: 0\.7\}", "seconds: 30.0}"))
    r = run_zoo("verify", "deeponet*", "--all", "--max-seconds", "5", "--json", env={"ZOO_REGISTRY": str(path)})
    assert r.returncode == 0, r.stdout + r.stderr
    by = {x["checkpoint"]: x for x in json.loads(r.stdout)["results"]}
    assert by[NAME]["status"] == "SKIP" and "30" in by[NAME]["reason"] and "> 5" in by[NAME]["reason"]
    assert by["deeponet.darcy"]["status"] == "PASS"


def test_all_goes_on_past_a_checkpoint_that_no_longer_loads(tmp_path):
    """Weights that fail their pin are that checkpoint's FAIL (one line), not the end of the run."""
    path = _registry_with(tmp_path, _sub_in_block(r"model\.safetensors: [0-9a-f]{64}", "model.safetensors: " + "cd" * 32))
    r = run_zoo("verify", "deeponet*", "--all", "--max-seconds", "5", "--json", env={"ZOO_REGISTRY": str(path)})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    res = json.loads(r.stdout)
    by = {x["checkpoint"]: x for x in res["results"]}
    assert by[NAME]["status"] == "FAIL" and by[NAME]["reason"] and not res["ok"]
    assert by["deeponet.darcy"]["status"] == "PASS"


def test_every_recorded_eval_has_its_time():
    """CI's `zoo verify --all --max-seconds 60` picks checkpoints by their recorded eval time."""
    import zoo.registry as reg
    untimed = [f"{n}.{t}" for n, e in reg.load_registry().models.items() for t, ck in e.checkpoints.items()
               if ck.eval is not None and ck.eval.seconds is None]
    assert not untimed, f"eval records without seconds: {untimed}"


def test_model_index_for_the_card():
    from zoo.verbs.verify import model_index
    mi = model_index(NAME)
    res = mi[0]["results"][0]
    assert mi[0]["name"] == NAME and res["dataset"]["name"] == "antiderivative" and res["dataset"]["split"] == "test"
    values = {m["type"]: m["value"] for m in res["metrics"]}
    assert values["rel_l2"] == pytest.approx(0.00489722094647511)
    assert all(m["verified"] is False for m in res["metrics"])


def test_fingerprint_ignores_memory_addresses():
    """Items may carry objects whose repr names a memory address (a PINN problem's callables): the
    digest must depend on the data, not on where this process put those objects."""
    import torch

    from zoo.verbs.verify import fingerprint

    def item_with(fn, value):
        return [{"x": torch.tensor([value]), "problem": (fn,)}]

    f, g = (lambda u: u), (lambda u: u)   # both alive: two addresses
    assert repr(f) != repr(g)
    first = fingerprint(item_with(f, 1.0))
    again = fingerprint(item_with(g, 1.0))
    assert first == again
    assert fingerprint(item_with(f, 2.0)) != first
