"""Disagreement-based informative-pair sampling of P2C (`-o pair_sampling=disagreement`).

The sampler is checked against a brute-force reference written independently of it (plain Python
loops over every candidate), and the training wrapper is checked to re-choose the partners after one
pass over the anchors and to carry its state through a state_dict round trip (what --resume uses)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import zoo.registry as reg
from zoo.data import reviews
from zoo.errors import ConfigError
from zoo.layers.hf_encoder import prompt_similarity
from zoo.loading import load
from zoo.tasks import get_task
from zoo.tasks.text_classification import PairSampler, PairSet, disagreement_partners

TINY = dict(reg.load_registry().families["p2c"].test_config)


def _reference(scores: torch.Tensor, labels: list[int], a: int) -> tuple[int, float]:
    """Highest disagreement over a's same-class candidates by loops: (count, variance) of the best."""
    t = scores.shape[0]
    best = None
    for b in range(scores.shape[1]):
        if b == a or labels[b] != labels[a]:
            continue
        verdicts = []
        probs = []
        for h in range(t):
            sa, sb = float(scores[h, a]), float(scores[h, b])
            verdicts.append("b" if sb > sa else "a" if sa > sb else "tie")
            probs.append(math.exp(sb) / (math.exp(sa) + math.exp(sb)))
        count = sum(verdicts[i] != verdicts[j] for i, j in itertools.combinations(range(t), 2))
        mean = sum(probs) / t
        var = sum((p - mean) ** 2 for p in probs) / t
        if best is None or (count, var) > best:
            best = (count, var)
    return best


def _key(scores, labels, a, b):
    return _reference(scores[:, [a, b]], [labels[a], labels[b]], 0)


def test_sampler_picks_the_highest_disagreement_partner():
    # three heads; text 0's candidates of class 0 are 1, 2, 3: the heads all agree on 1 (no
    # disagreement), split 2-1 on 2 and on 3, where 3 has the larger spread of pair probabilities
    scores = torch.tensor([[0.0, 0.5, 0.1, 0.9, 0.0, 0.3],
                           [0.0, 0.6, 0.2, 0.8, 0.2, 0.1],
                           [0.0, 0.7, -0.1, -0.9, 0.1, 0.2]])
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    new = disagreement_partners(scores, labels, torch.arange(6))
    assert int(new[0]) == 3
    assert all(labels[int(new[i])] == labels[i] and int(new[i]) != i for i in range(6))


def test_sampler_matches_a_brute_force_reference():
    g = torch.Generator().manual_seed(3)
    n = 40
    scores = torch.rand(3, n, generator=g) * 2 - 1
    labels = torch.randint(0, 3, (n,), generator=g).tolist()
    new = disagreement_partners(scores, torch.tensor(labels), torch.arange(n), chunk=7)
    for a in range(n):
        got = _key(scores, labels, a, int(new[a]))
        want = _reference(scores, labels, a)
        assert got[0] == want[0] and got[1] == pytest.approx(want[1], abs=1e-6)
        assert labels[int(new[a])] == labels[a] and int(new[a]) != a


def test_unseen_texts_keep_their_partner_and_are_no_candidates():
    scores = torch.tensor([[0.1, float("nan"), 0.5, -0.3], [0.2, float("nan"), -0.5, 0.3]])
    labels = torch.tensor([0, 0, 0, 0])
    old = torch.tensor([1, 0, 3, 2])
    new = disagreement_partners(scores, labels, old)
    assert int(new[1]) == 0                      # not seen: unchanged
    assert 1 not in new[[0, 2, 3]].tolist()      # never chosen as a partner


@pytest.fixture(scope="module")
def tiny():
    return load("p2c-minilm", pretrained=False, overrides=TINY, device="cpu")


def _pairset(tiny, n=24):
    data = reviews.polarity_200()
    data = reviews.LabelledText(data.texts[:n], data.labels[:n], data.classes, data.source)
    pairs = reviews.make_pairs(data, prompt_similarity, seed=0)
    return PairSet(pairs, tiny.model, {}), pairs


def test_pair_set_items_follow_the_partner_table(tiny):
    ds, pairs = _pairset(tiny)
    assert [ds[i]["b"]["input_ids"].tolist() for i in range(3)] == [ds.ids[j] for j in pairs.partner[:3]]
    assert [float(ds[i]["pref"]) for i in range(len(ds))] == pairs.pref
    ds.partner[0] = 5
    m = pairs.margin
    assert float(ds[0]["pref"]) == reviews.preference(m[0], m[5], pairs.tie_margin)


def test_sampler_module_resamples_after_an_epoch_and_round_trips(tiny):
    task = get_task("text-classification")
    ds, pairs = _pairset(tiny)
    module = task.training_module(tiny.model, {"pair_sampling": "disagreement"})
    assert isinstance(module, PairSampler)
    module.train()
    before = ds.partner.clone()
    for start in range(0, 16, 8):       # 16 of 24 anchors: not an epoch yet (24 // 8 * 8 = 24)
        module(task.collate([ds[i] for i in range(start, start + 8)]))
    assert torch.equal(ds.partner, before) and module.resampled == 0
    state = module.state_dict()
    module(task.collate([ds[i] for i in range(16, 24)]))
    assert module.resampled == 1 and torch.isfinite(module.scores).all()
    want = disagreement_partners(module.scores, torch.tensor(pairs.labels), before)
    assert torch.equal(ds.partner, want) and not torch.equal(ds.partner, before)
    # a resumed run starts from the saved state: partners, scores and the epoch counter
    module.load_state_dict(state)
    assert torch.equal(ds.partner, before) and module.seen == 16 and module.resampled == 0


def test_disagreement_needs_heads_and_made_pairs(tiny, tmp_path):
    task = get_task("text-classification")
    base = load("minilm-cls", pretrained=False, overrides={k: v for k, v in TINY.items()}, device="cpu")
    _pairset(base)
    with pytest.raises(ConfigError, match="preference heads"):
        task.training_module(base.model, {"pair_sampling": "disagreement"})
    f = tmp_path / "pairs.csv"
    f.write_text("text_a,text_b,label,preference\ngood film,great film,1,b\nbad,awful,0,tie\n")
    task.read_data(f, None, "train", tiny.model, {})
    with pytest.raises(ConfigError, match="pair file"):
        task.training_module(tiny.model, {"pair_sampling": "disagreement"})


def test_training_state_of_a_frozen_base_model_loads_back():
    """--resume loads the wrapper's state (keys prefixed `model.`); the frozen base is not in it."""
    from zoo.tasks.base import LossModule
    task = get_task("text-classification")
    model = load("p2c-minilm", pretrained=False, device="cpu").model
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    state = LossModule(model, task).state_dict()
    assert not any("word_embeddings" in k for k in state)
    fresh = LossModule(load("p2c-minilm", pretrained=False, device="cpu").model, task)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.model.classifier.weight, model.classifier.weight)
    del state["model.classifier.weight"]
    with pytest.raises(RuntimeError, match="classifier.weight"):
        fresh.load_state_dict(state)
