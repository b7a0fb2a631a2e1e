"""Model cards carry Hugging Face `model-index` (our measured metrics) and the run's provenance
(command, zoo version/commit, data, hardware, wall time, final training loss), captured when
`zoo finetune` makes the run and rendered when `zoo push` publishes it."""

import json
import platform

import pytest

from conftest import run_zoo

RUN = ["deeponet", "--dataset", "antiderivative", "--steps", "3", "-b", "16", "-o", "size=200"]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """One tiny real run, pushed into a folder hub: (run folder, repo folder)."""
    tmp = tmp_path_factory.mktemp("card")
    done = run_zoo("finetune", *RUN, "--out", str(tmp / "run"))
    assert done.returncode == 0, done.stderr
    done = run_zoo("push", str(tmp / "run"), "--repo", "zoo/deeponet-card", "--hub", str(tmp / "hub"), "--json")
    assert done.returncode == 0, done.stderr
    return tmp / "run", tmp / "hub" / "zoo" / "deeponet-card"


def test_run_folder_records_provenance(pushed):
    run, _ = pushed
    meta = json.loads((run / "config.json").read_text())
    prov = meta["provenance"]
    assert prov["zoo_version"] and prov["python"] == platform.python_version() and prov["torch"]
    assert prov["hardware"]["device"] == "cpu" and prov["hardware"]["threads"] >= 1 and prov["hardware"]["cpu"]
    assert prov["hardware"]["cores"] >= 1
    assert 0 < prov["wall_seconds"] < 600
    assert prov["data"]["dataset"] == "antiderivative" and prov["data"]["seed"] == 0
    assert prov["eval"] == {"dataset": "antiderivative", "split": "test"}
    # the source tree is a git checkout here: the commit is named
    assert prov.get("zoo_commit"), prov
    assert meta["train"]["steps"] == 3 and isinstance(meta["train"]["final_loss"], float)


def test_pushed_card_holds_model_index_and_provenance(pushed):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import eval_results_to_model_index

    run, repo = pushed
    meta = json.loads((repo / "config.json").read_text())
    card = ModelCard.load(repo / "README.md")   # the Hub's own parser
    results = card.data.eval_results
    assert results, "no model-index in the card"
    got = {r.metric_type: r.metric_value for r in results}
    want = {k: v for k, v in meta["metrics"].items() if isinstance(v, (int, float))}
    assert want and got == pytest.approx(want)
    assert all(r.verified is False and r.dataset_type == "antiderivative" and r.dataset_split == "test"
               for r in results)
    assert card.data.to_dict()["model-index"][0]["name"] == "deeponet.antiderivative"
    # rendered by huggingface_hub: its own round trip gives the same block
    name, _ = card.data.model_name, None
    assert eval_results_to_model_index(name, results)[0]["results"][0]["metrics"]

    text = card.text
    prov = text[text.index("## Provenance"):]
    prov = prov[:prov.index("\n## ", 4)]
    p = meta["provenance"]
    assert meta["command"] in prov and "zoo finetune deeponet" in prov
    assert p["zoo_version"] in prov and p["zoo_commit"] in prov
    assert p["hardware"]["cpu"] in prov and "device: cpu" in prov and f"threads: {p['hardware']['threads']}" in prov
    assert f"{p['wall_seconds']:.1f} s" in prov
    assert "final training loss" in prov and f"{meta['train']['final_loss']:.6g}" in prov
    assert "dataset: antiderivative" in prov


def test_card_model_index_matches_verify(tmp_path):
    """The card's block and `zoo verify`'s are one definition: the same data for a registry checkpoint."""
    from huggingface_hub import ModelCard

    import zoo.registry as reg
    from zoo.card import make_model_card
    from zoo.verbs.verify import model_index

    ck = reg.load_registry().models["deeponet"].checkpoints["antiderivative"]
    index = model_index("deeponet.antiderivative")
    card = make_model_card({"model": "deeponet", "tag": "antiderivative", "task": "operator",
                            "dataset": "antiderivative", "metrics": ck.metrics, "model_index": index})
    path = tmp_path / "README.md"
    card.save(str(path))
    data = ModelCard.load(path).data.to_dict()
    assert data["model-index"] == index
    assert {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]} == \
        {k: v for k, v in ck.metrics.items() if isinstance(v, (int, float))}


def test_nan_metrics_stay_out_of_the_index():
    from zoo.card import model_index
    mi = model_index("x.y", task="classification", dataset="d", metrics={"a": 1.0, "b": float("nan"), "c": "s"})
    assert [m["type"] for m in mi[0]["results"][0]["metrics"]] == ["a"]
    assert model_index("x.y", task="t", dataset="d", metrics={}) == []
