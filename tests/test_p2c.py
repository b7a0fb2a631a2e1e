"""P2C (issue 16): parameter counts pinned against the transformers configs, the losses as the
official code defines them, the text-classification task's data and bad-input handling.

Parameter counts: roberta-base without its pooler is 124,055,040 (the published 124,645,632 of
RobertaModel minus the 768x768+768 pooler); all-MiniLM-L6-v2 without its pooler is 22,565,376
(22,713,216 minus 384x384+384). Each preference head is 2d*d+d + d*d+d + d+1 parameters; the
classifier d*C+C.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import zoo.registry as reg
from zoo.data import reviews
from zoo.errors import ConfigError, DataError
from zoo.layers.hf_encoder import prompt_similarity
from zoo.loading import load
from zoo.models.p2c import P2CClassifier, PreferenceHead
from zoo.tasks import get_task

TINY = dict(reg.load_registry().families["p2c"].test_config)


def _heads(d: int, t: int = 3) -> int:
    return t * (2 * d * d + d + d * d + d + d + 1)


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_p2c_roberta_base_parameter_count():
    model = load("p2c-roberta-base", pretrained=False, device="cpu").model
    enc = _count(model.encoder)
    assert enc == 124_645_632 - (768 * 768 + 768) == 124_055_040
    assert _count(model.pref) == _heads(768) == 5_315_331
    assert _count(model.classifier) == 768 * 2 + 2
    assert _count(model) == 129_371_909
    assert model.tokenizer is None     # architecture only


def test_p2c_minilm_parameter_counts_and_stored_part():
    model = load("p2c-minilm", pretrained=False, device="cpu").model
    assert _count(model.encoder) == 22_713_216 - (384 * 384 + 384) == 22_565_376
    assert _count(model.pref) == _heads(384) == 1_330_563
    assert _count(model) == 23_896_709
    # a checkpoint holds the top 2 layers, the classifier and the heads only
    layer = 4 * (384 * 384 + 384) + 2 * 384 + (384 * 1536 + 1536) + (1536 * 384 + 384) + 2 * 384
    stored = sum(v.numel() for v in model.state_dict().values())
    assert stored == 2 * layer + 770 + 1_330_563 == 4_880_261
    assert stored * 2 < 25e6           # fp16 file under 25 MB
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == stored
    base = load("minilm-cls", pretrained=False, device="cpu").model
    assert _count(base) == 22_565_376 + 770 and base.num_pref_heads == 0


def _tiny(**kw):
    torch.manual_seed(0)
    return P2CClassifier(**{**TINY, **kw})


def test_preference_head_shape_and_tanh_range():
    head = PreferenceHead(8)
    assert [m.weight.shape for m in head.net if hasattr(m, "weight")] == [(8, 16), (8, 8), (1, 8)]
    s = head(torch.randn(5, 8) * 100, torch.tensor([0, 1, 1, 0, 1]))
    assert s.shape == (5,) and float(s.abs().max()) <= 1.0


def _pair_batch(model, pref):
    g = torch.Generator().manual_seed(0)
    a = torch.randint(5, 1000, (len(pref), 7), generator=g)
    b = torch.randint(5, 1000, (len(pref), 7), generator=g)
    m = torch.ones_like(a)
    return {"input_ids": a, "attention_mask": m}, {"input_ids": b, "attention_mask": m}


def test_losses_match_their_definitions():
    model = _tiny()
    model.eval()                        # no dropout: recompute the terms by hand
    pref = torch.tensor([1.0, 0.0, 0.5, 1.0])
    labels = torch.tensor([0, 1, 1, 0])
    a, b = _pair_batch(model, pref)
    loss, logs, la, lb = model.pair_loss(a, b, labels, pref)
    ce = 0.5 * (torch.nn.functional.cross_entropy(la, labels) + torch.nn.functional.cross_entropy(lb, labels))
    assert logs["l_cls"] == pytest.approx(float(ce), rel=1e-5)
    h_a, h_b = model.embed(**a), model.embed(**b)
    s_a, s_b = model.preference_scores(h_a, labels), model.preference_scores(h_b, labels)
    p_b = model.prefer_b(s_a, s_b)                               # Bradley-Terry per head
    target = pref[None].expand_as(p_b)
    l_pref = -(target * p_b.log() + (1 - target) * (1 - p_b).log()).mean()
    assert logs["l_pref"] == pytest.approx(float(l_pref), rel=1e-4)
    pa = la.softmax(-1)[torch.arange(4), labels]
    pb = lb.softmax(-1)[torch.arange(4), labels]
    cons = torch.stack([torch.relu(pa[0] - pb[0]), torch.relu(pb[1] - pa[1]), (pa[2] - pb[2]).abs(),
                        torch.relu(pa[3] - pb[3])]).mean()
    assert logs["l_cons"] == pytest.approx(float(cons), rel=1e-4, abs=1e-7)
    dist = torch.stack([1 - p_b, p_b], -1)
    div = torch.stack([-(dist[i] * dist[j].log()).sum(-1).mean() for i in range(3) for j in range(3) if i != j]).mean()
    assert logs["l_div"] == pytest.approx(float(div), rel=1e-4)
    total = logs["l_cls"] + logs["l_pref"] + 1.0 * logs["l_cons"] - 0.1 * logs["l_div"]
    assert float(loss) == pytest.approx(total, rel=1e-4)


def test_baseline_has_classification_loss_only():
    model = _tiny(pref_heads=0)
    model.eval()
    pref = torch.tensor([1.0, 0.0])
    a, b = _pair_batch(model, pref)
    loss, logs, _, _ = model.pair_loss(a, b, torch.tensor([0, 1]), pref)
    assert set(logs) == {"l_cls"} and float(loss) == pytest.approx(logs["l_cls"])


def test_frozen_base_is_left_out_of_checkpoints_and_loads_back(tmp_path):
    from zoo.checkpoint import load_weights, save_checkpoint
    loaded = load("p2c-minilm", pretrained=False, device="cpu")
    model = loaded.model
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    folder = save_checkpoint(tmp_path / "ck", model, {"model": "p2c-minilm", "task": "text-classification",
                                                      "config": loaded.config}, card=False, dtype="float16")
    assert (folder / "model.safetensors").stat().st_size < 10.5e6
    fresh = load("p2c-minilm", pretrained=False, device="cpu").model
    load_weights(fresh, folder)
    assert torch.allclose(fresh.classifier.weight, model.classifier.weight.half().float())
    assert torch.equal(fresh.encoder.embeddings.word_embeddings.weight,
                       model.encoder.embeddings.word_embeddings.weight)


# ---- data -------------------------------------------------------------------------------------------

def test_rotten_tomatoes_split_is_seeded_and_disjoint():
    parts = {s: reviews.rotten_tomatoes(s) for s in ("train", "val", "test")}
    assert [len(p.texts) for p in parts.values()] == [3406, 486, 974]
    assert sum(sum(p.labels) for p in parts.values()) == 2455       # fresh rows
    assert not set(parts["train"].texts) & set(parts["test"].texts) - {""}
    assert reviews.rotten_tomatoes("test").texts == parts["test"].texts


def test_polarity_fixture():
    data = reviews.polarity_200()
    assert len(data.texts) == 200 and sum(data.labels) == 100 and data.classes == ["neg", "pos"]


def test_pairs_share_a_label_and_ties_are_soft():
    data = reviews.polarity_200()
    pairs = reviews.make_pairs(data, prompt_similarity, seed=0)
    lookup = dict(zip(data.texts, data.labels))
    assert all(lookup[a] == lookup[b] == y for a, b, y in zip(pairs.a, pairs.b, pairs.labels))
    assert set(pairs.pref) <= {0.0, 0.5, 1.0} and 0 < pairs.pref.count(0.5) < len(pairs.pref)
    assert reviews.make_pairs(data, prompt_similarity, seed=0).pref == pairs.pref


# ---- bad input ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_loaded():
    return load("p2c-minilm", pretrained=False, overrides=TINY, device="cpu")


def test_empty_text_is_refused(tiny_loaded):
    task = get_task("text-classification")
    with pytest.raises(DataError, match="empty"):
        task.predict(tiny_loaded.model, "   ", None, None, {})


def test_long_text_is_truncated_with_a_note(tiny_loaded, capsys):
    task = get_task("text-classification")
    out = task.predict(tiny_loaded.model, "word " * 400, None, None, {})
    assert "truncated" in out["note"] and set(out["probs"]) == {"0", "1"}


def test_csv_without_label_column(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("text,stars\ngood film,5\n")
    with pytest.raises(DataError, match="no 'label' column"):
        reviews.read_labelled(p, ["rotten", "fresh"])


def test_labels_outside_the_classes(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps({"text": "good", "label": "fresh"}) + "\n" + json.dumps({"text": "x", "label": "meh"}))
    with pytest.raises(DataError, match="label 'meh' is not one of the model's classes"):
        reviews.read_labelled(p, ["rotten", "fresh"])
    assert reviews.read_labelled(p.with_suffix(".jsonl"), ["rotten", "fresh", "meh"]).labels == [1, 2]


def test_non_utf8_file(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        reviews.read_labelled(p, ["0", "1"])


def test_pair_file_with_unknown_preference(tmp_path):
    p = tmp_path / "pairs.csv"
    p.write_text("text_a,text_b,label,preference\ngood,great,1,b\nbad,awful,0,both\n")
    with pytest.raises(DataError, match="preference 'both' is not one of a, b, tie"):
        reviews.read_pairs(p, ["0", "1"])
    p.write_text("text_a,text_b,label,preference\ngood,great,1,b\nbad,awful,0,tie\n")
    assert reviews.read_pairs(p, ["0", "1"]).pref == [1.0, 0.5]


def test_architecture_only_model_refuses_text():
    model = load("p2c-roberta-base", pretrained=False, device="cpu").model
    with pytest.raises(ConfigError, match="no tokenizer"):
        get_task("text-classification").predict(model, "fine", None, None, {})


def test_evaluate_reports_torchmetrics_numbers(tiny_loaded):
    task = get_task("text-classification")
    data = reviews.LabelledText(["good", "bad film", "a fine day", "awful"], [1, 0, 1, 0], ["0", "1"], "t")
    from zoo.tasks.text_classification import TextSet
    ds = TextSet(data, tiny_loaded.model, {})
    m = task.evaluate(tiny_loaded.model, ds, {})
    logits, labels = task._logits(tiny_loaded.model, ds, 8)
    probs = logits.softmax(-1)
    assert m["accuracy"] == pytest.approx(100 * float((probs.argmax(1) == labels).float().mean()))
    conf, pred = probs.max(1)            # ECE by hand: 15 equal-width bins of the top probability
    ece = 0.0
    for lo in torch.arange(15) / 15:
        inside = (conf > lo) & (conf <= lo + 1 / 15)
        if inside.any():
            ece += float(inside.float().mean() * ((pred[inside] == labels[inside]).float().mean() - conf[inside].mean()).abs())
    assert m["ece"] == pytest.approx(100 * ece, abs=1e-3)
    assert m["samples"] == 4 and math.isfinite(m["macro_f1"])
