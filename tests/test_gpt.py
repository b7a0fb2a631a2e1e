"""The GPT family: parameter counts of the paper sizes and our minis, causality, the switches."""

import pytest
import torch

import zoo.registry as reg
from zoo.errors import ConfigError, DataError
from zoo.layers import NobleLinear, VersatileFFN
from zoo.layers.noble import noble_extra_parameters
from zoo.models import gpt as G
from zoo.data.shakespeare import VOCAB


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(builder, **overrides):
    with torch.device("meta"):
        return builder(**overrides)


# The VersatileFFN paper states the dense bases (354.71M, 720.81M, 1.21B); VersatileFFN adds a
# router (d x 8) and a loop predictor (d x 4) per layer, 15 layers.
@pytest.mark.parametrize("builder, dense, paper_rounded, dim", [
    (G.versatileffn_354m, 354_712_576, 354.71e6, 1024),
    (G.versatileffn_720m, 720_812_544, 720.81e6, 1536),
    (G.versatileffn_1210m, 1_212_741_632, 1.21e9, 2048),
])
def test_versatileffn_paper_sizes(builder, dense, paper_rounded, dim):
    base = _count(_meta(builder, versatile=None))
    full = _count(_meta(builder))
    assert base == dense
    scale = 1e6 if paper_rounded < 1e9 else 1e9  # the paper gives 2 decimals of M (of B for 1.21B)
    assert round(base / scale, 2) == round(paper_rounded / scale, 2)
    assert full == dense + 15 * dim * (8 + 4)


def test_minis_parameter_counts():
    gpt = _count(G.gpt_mini(vocab=VOCAB))
    assert gpt == 1_071_232
    d, h, depth = 128, 512, 4
    noble_extra = depth * (4 * noble_extra_parameters(d, d, 16) + noble_extra_parameters(d, 2 * h, 16)
                           + noble_extra_parameters(h, d, 16))
    assert _count(G.noble_gpt_mini(vocab=VOCAB)) == gpt + noble_extra == 1_259_904
    assert _count(G.versatileffn_mini(vocab=VOCAB)) == gpt + depth * d * (8 + 4) == 1_077_376


def test_noble_sits_on_every_block_projection_only():
    model = G.noble_gpt_mini(vocab=VOCAB)
    nobles = [n for n, m in model.named_modules() if isinstance(m, NobleLinear)]
    assert len(nobles) == 6 * 4  # q, k, v, o, ffn proj, ffn out per block
    assert not isinstance(model.head, NobleLinear)
    assert sum(isinstance(m, VersatileFFN) for m in G.versatileffn_mini(vocab=VOCAB).modules()) == 4


def test_registry_configs_are_the_variant_defaults():
    registry = reg.load_registry()
    defaults = {"gpt_mini": G.MINI, "noble_gpt_mini": G.NOBLE_MINI, "versatileffn_mini": G.VERSATILE_MINI,
                "versatileffn_354m": G.VERSATILE_354M, "versatileffn_720m": G.VERSATILE_720M,
                "versatileffn_1210m": G.VERSATILE_1210M}
    seen = set()
    for name, entry in registry.models.items():
        if entry.builder and entry.builder.startswith("zoo.models.gpt:"):
            fn = entry.builder.split(":")[1]
            config = dict(entry.config)
            vocab = config.pop("vocab", None)
            assert config == defaults[fn], name
            assert vocab in (None, VOCAB)
            seen.add(fn)
    assert seen == set(defaults)


@pytest.mark.parametrize("builder", [G.gpt_mini, G.noble_gpt_mini, G.versatileffn_mini])
def test_causal(builder):
    torch.manual_seed(0)
    model = builder(vocab=VOCAB, depth=2).eval()
    x = torch.randint(0, len(VOCAB), (2, 40))
    y = x.clone()
    y[:, 25:] = (y[:, 25:] + 7) % len(VOCAB)
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (2, 40, len(VOCAB))
    assert torch.allclose(a[:, :25], b[:, :25], atol=1e-5)
    assert not torch.allclose(a[:, 25:], b[:, 25:])


def test_context_and_config_errors():
    model = G.gpt_mini(vocab=VOCAB, depth=1)
    with pytest.raises(DataError, match="longer than the model's context of 128"):
        model(torch.zeros(1, 129, dtype=torch.long))
    with pytest.raises(ConfigError, match="distinct"):
        G.gpt_mini(vocab="aab")
    with pytest.raises(ConfigError):
        G.gpt(vocab_size=10, dim=30, heads=4)
    with pytest.raises(ConfigError, match="NOBLE and VersatileFFN"):
        G.gpt_mini(vocab=VOCAB, noble={"rank": 8}, versatile={})
    with pytest.raises(ConfigError, match="larger than the layer width"):
        G.noble_gpt_mini(vocab=VOCAB, noble={"rank": 256})


def test_param_groups_carry_noble_multipliers_only_for_noble():
    plain = G.gpt_mini(vocab=VOCAB, depth=1).param_groups(1e-3)
    assert {g["lr_mult"] for g in plain} == {1.0}
    noble = G.noble_gpt_mini(vocab=VOCAB, depth=1).param_groups(1e-3)
    assert {round(g["lr_mult"], 4) for g in noble} >= {1.0, 2.0, 4.0, round(8 ** 0.4, 4), round(8 ** 0.5, 4)}


def test_versatile_aux_loss_only_in_training():
    torch.manual_seed(0)
    model = G.versatileffn_mini(vocab=VOCAB, depth=2)
    x = torch.randint(0, len(VOCAB), (2, 16))
    model.train()(x)
    aux = model.aux_loss()
    assert aux is not None and 0 < float(aux.detach()) < 5e-5 * 2 * 8  # weight 5e-5, per-layer loss in [1, N]
    model.eval()(x)
    assert model.aux_loss() is None
    assert 1.0 <= model.mean_loops() <= 4.0
    assert model.token_stats() == {"mean_loops": model.mean_loops()}
    plain = G.gpt_mini(vocab=VOCAB, depth=1)
    plain(x)
    assert plain.aux_loss() is None and plain.token_stats() == {}


def test_tied_embeddings_share_one_matrix():
    model = G.gpt_mini(vocab=VOCAB, depth=1, tie_embeddings=True)
    assert model.head.weight is model.embed.weight
    assert _count(model) == _count(G.gpt_mini(vocab=VOCAB, depth=1)) - len(VOCAB) * 128
