"""MAN, AugLocal and bp as training methods: structure pinned to the official code, gradient
isolation, the EMA rule, memory, resume and bad input."""

import copy

import pytest
import torch

from zoo.errors import ConfigError, UnknownNameError
from zoo.layers.local_learning import (AugLocalTraining, BackpropTraining, ManTraining, auglocal_depths,
                                       auglocal_selection, training_method)
from zoo.models.resnet_cifar import resnet_cifar


def _count(modules):
    return sum(p.numel() for p in modules.parameters())


def _batch(n=8, size=32, channels=3, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, channels, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)]


# ---- structure: the numbers the official code gives when instantiated -------------------------------

def test_man_resnet32_k16_extras_match_the_official_code():
    man = ManTraining(resnet_cifar(depth=32), local_blocks=16)
    assert [g[-1] for g in man.modules_] == list(range(1, 16))      # 15 modules, stem merged into the first
    assert man.modules_[0] == [0, 1]
    # official resnetInfoPro_MAN resnet32 K=16: LB and EMA_Net 461,120 each
    assert _count(man.learnable_copy) == 461_120
    assert _count(man.ema_copy) == 461_120
    # the official code also builds a decoder (2,091) and a 2c2f head (19,466) for position (1, 0), which
    # no boundary uses: 65,925 - 2,091 and 841,110 - 19,466
    assert _count(man.decoders) == 65_925 - 2_091
    assert _count(man.classifiers) == 841_110 - 19_466
    assert not any(p.requires_grad for p in man.ema_copy.parameters())


def test_man_resnet110_k55_extras_match_the_official_code():
    man = ManTraining(resnet_cifar(depth=110), local_blocks=55)
    assert len(man.modules_) == 54
    assert _count(man.learnable_copy) == 1_724_928 and _count(man.ema_copy) == 1_724_928


def test_man_loss_weights_follow_the_official_stage_ratio():
    man = ManTraining(resnet_cifar(depth=32), local_blocks=16)
    # ratio = stage of the next block / (K - 2); weights interpolate (5, 0.5) -> (0, 0)
    assert man.weights[0] == pytest.approx((5 * (1 - 1 / 14), 0.5 * (1 - 1 / 14)))
    assert man.weights[4] == pytest.approx((5 * (1 - 2 / 14), 0.5 * (1 - 2 / 14)))   # next block opens stage 2
    assert man.weights[-1] == pytest.approx((5 * (1 - 3 / 14), 0.5 * (1 - 3 / 14)))


@pytest.mark.parametrize("depth, k, d, aux_params, depths", [
    (32, 16, 2, 1_341_058, [2] * 13),
    (32, 16, 1, 806_412, [1] * 14),
    (32, 16, 5, 1_684_388, [5, 5, 5, 4, 4, 4, 4, 3, 3, 3]),
    (110, 55, 3, 7_240_702, [3] * 25 + [2] * 26),
])
def test_auglocal_aux_nets_match_the_official_code(depth, k, d, aux_params, depths):
    # official train.py: K' = K - d modules, AuxNetwork('unifSamp'), pyramid 0.5; totals counted there
    aug = AugLocalTraining(resnet_cifar(depth=depth), local_blocks=k, aux_depth=d, pyramid=0.5)
    assert aug.depths == depths
    assert aug.auxiliary_parameters() == aux_params


def test_auglocal_uniform_selection_and_strides():
    assert auglocal_selection(0, 2, 16) == [8, 15]       # round(7.5) = 8 (Python rounding, as the official code)
    assert auglocal_selection(12, 2, 16) == [14, 15]     # round(13.5) = 14
    assert auglocal_selection(13, 3, 16) == [14, 15]     # not enough layers left: all of them
    assert auglocal_depths(14, 2, None) == [2] * 13
    aug = AugLocalTraining(resnet_cifar(depth=32), local_blocks=16, aux_depth=2, pyramid=0.5)
    first = aug.aux_nets[0]                               # layer 0 (16 ch) -> blocks like layers 8 and 15
    assert [(b.conv1.in_channels, b.conv1.out_channels, b.conv1.stride[0]) for b in first[:2]] == \
        [(16, 32, 2), (32, 64, 2)]
    assert isinstance(first[-1], torch.nn.Linear) and not any(isinstance(m, torch.nn.BatchNorm1d) for m in first)
    shallow = AugLocalTraining(resnet_cifar(depth=32), local_blocks=16, aux_depth=1, pyramid=0.5)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in shallow.aux_nets[0])   # depth <= 1 adds BN1d


def test_aux_nets_start_from_fresh_weights_not_copies():
    model = resnet_cifar(depth=32)
    man = ManTraining(model, local_blocks=16)
    assert not torch.equal(man.learnable_copy[0].conv1.weight, model.layer1[1].conv1.weight)
    assert not torch.equal(man.learnable_copy[0].conv1.weight, man.ema_copy[0].conv1.weight)


# ---- behaviour ----------------------------------------------------------------------------------

def _first_module_grads(wrapper, params, batch):
    wrapper.zero_grad(set_to_none=True)
    wrapper.train()
    loss, _ = wrapper(batch)
    if not wrapper.runs_backward:
        loss.backward()
    return [p.grad.clone() for p in params]


@pytest.mark.parametrize("method", ["man", "auglocal", "bp"])
def test_gradient_isolation_between_local_modules(method):
    torch.manual_seed(0)
    wrapper = training_method(resnet_cifar(depth=32), {"method": method})
    other = copy.deepcopy(wrapper)
    model, twin = wrapper.model, other.model
    first = [model.stem, model.layer1[0]] if method == "man" else [model.stem]
    n_first = len(first)
    # perturb everything after the first module (later blocks, classifier and their aux nets)
    later = [*twin.local_layers()[n_first:], twin.head]
    if method == "man":
        later += [*other.learnable_copy[1:], *other.decoders[1:], *other.classifiers[1:]]
    elif method == "auglocal":
        later += list(other.aux_nets[1:])
    with torch.no_grad():
        for module in later:
            for p in module.parameters():
                p.add_(torch.randn_like(p))
    batch = _batch()
    mine = _first_module_grads(wrapper, [p for m in first for p in m.parameters()], batch)
    theirs = _first_module_grads(other, [p for m in twin.local_layers()[:n_first] for p in m.parameters()], batch)
    same = all(torch.equal(a, b) for a, b in zip(mine, theirs))
    assert same == (method != "bp")   # bp: the output loss reaches the first layer, so it changes


def test_man_ema_update_rule_and_which_copies_learn():
    torch.manual_seed(0)
    model = resnet_cifar(depth=32)
    man = ManTraining(model, local_blocks=16, ema_decay=0.995).train()
    ema_before = [p.clone() for p in man.ema_copy[3].parameters()]
    block = model.local_layers()[man._next_layer[3]]
    block_before = [p.clone() for p in block.parameters()]
    loss, logs = man(_batch())
    for e, e0, b0 in zip(man.ema_copy[3].parameters(), ema_before, block_before):
        assert torch.allclose(e, 0.995 * e0 + 0.005 * b0, atol=1e-7)
        assert e.grad is None
    assert all(p.grad is not None for p in man.learnable_copy.parameters())
    assert all(p.grad is not None for p in model.parameters())
    assert man.runs_backward and not loss.requires_grad
    assert set(logs) == {"loss", "acc", "local_loss"}


def test_local_methods_use_less_peak_memory_than_backprop():
    from zoo.verbs.bench import peak_memory_mb

    torch.manual_seed(0)
    model = resnet_cifar(depth=32)
    batch = _batch(n=16, size=32)   # activations, not weights, dominate at this size (as in training)
    peaks = {}
    for method in ("bp", "man", "auglocal"):
        wrapper = training_method(model, {"method": method}).train()

        def step():
            wrapper.zero_grad(set_to_none=True)
            loss, _ = wrapper(batch)
            if not wrapper.runs_backward:
                loss.backward()

        step()   # gradients exist before the measured step
        peaks[method] = peak_memory_mb(step, torch.device("cpu"))
    assert peaks["man"] < 0.8 * peaks["bp"] and peaks["auglocal"] < 0.8 * peaks["bp"], peaks


def test_training_state_round_trips_through_state_dict():
    # the fine-tune loop saves training_module.state_dict() for --resume: aux nets and EMA copies included
    torch.manual_seed(0)
    man = ManTraining(resnet_cifar(depth=32), local_blocks=8).train()
    man(_batch())
    state = copy.deepcopy(man.state_dict())
    assert any(k.startswith("ema_copy.") for k in state) and any(k.startswith("decoders.") for k in state)
    torch.manual_seed(1)
    fresh = ManTraining(resnet_cifar(depth=32), local_blocks=8).train()
    fresh.load_state_dict(state)
    a, _ = man(_batch(seed=3))
    b, _ = fresh(_batch(seed=3))
    assert torch.equal(a, b)
    for (ka, pa), (kb, pb) in zip(man.named_parameters(), fresh.named_parameters()):
        assert ka == kb and torch.equal(pa, pb)


@pytest.mark.parametrize("method", ["man", "auglocal"])
def test_a_few_local_steps_learn_a_separable_problem(method):
    # ResNet-20 has no official split table: the generic equal split (K must divide its 10 layers) is used
    torch.manual_seed(0)
    model = resnet_cifar(depth=20, in_chans=1, img_size=16, num_classes=2, mean=0.5, std=0.3)
    wrapper = training_method(model, {"method": method, "local_blocks": 5 if method == "man" else 10,
                                      "aux_depth": 1}).train()
    opt = torch.optim.AdamW([p for p in wrapper.parameters() if p.requires_grad], lr=2e-3)

    def data(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
        x[y == 1, :, :, 8:] += 0.7
        x[y == 0, :, :, :8] += 0.7
        return [x, y]

    for step in range(10):
        opt.zero_grad(set_to_none=True)
        wrapper(data(16, step))
        opt.step()
    model.eval()
    x, y = data(200, 99)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9


def test_method_choice_follows_options_then_the_recipe():
    recipe = resnet_cifar(depth=32, local_learning={"method": "auglocal", "local_blocks": 16, "aux_depth": 1})
    chosen = training_method(recipe, {})
    assert isinstance(chosen, AugLocalTraining) and chosen.aux_depth == 1
    assert isinstance(training_method(recipe, {"method": "bp"}), BackpropTraining)
    man = training_method(recipe, {"method": "man"})      # another method: the recipe's K/d do not apply
    assert isinstance(man, ManTraining) and man.local_blocks == 16
    assert isinstance(training_method(resnet_cifar(depth=32), {}), BackpropTraining)
    assert training_method(resnet_cifar(depth=32), {"method": "auglocal", "pyramid": False}).depths == [2] * 13


@pytest.mark.parametrize("options, error, message", [
    ({"method": "man", "local_blocks": 5}, ConfigError, "K=5 does not split CifarResNet .16 layers. into the "
                                                         "official local modules; choose K from 1, 2, 3, 4, 8, 16"),
    ({"method": "auglocal", "local_blocks": 20}, ConfigError, "K=20 does not divide CifarResNet"),
    ({"method": "auglocal", "aux_depth": 15}, ConfigError, "--aux-depth 15 is larger than the layers after a block"),
    ({"method": "auglocal", "aux_depth": 0}, ConfigError, "--aux-depth must be at least 1"),
    ({"method": "man", "ema_decay": 1.5}, ConfigError, "ema_decay must be in"),
    ({"method": "sgd"}, UnknownNameError, "unknown training method 'sgd'"),
])
def test_bad_method_options_are_one_line_errors(options, error, message):
    with pytest.raises(error, match=message) as err:
        training_method(resnet_cifar(depth=32), options)
    assert "\n" not in str(err.value)


def test_generic_backbone_k_must_divide_its_layers():
    with pytest.raises(ConfigError, match="K=3 does not divide CifarResNet .10 layers. into equal local modules"):
        ManTraining(resnet_cifar(depth=20), local_blocks=3)
    assert len(ManTraining(resnet_cifar(depth=20), local_blocks=5).modules_) == 5


def test_a_model_without_local_layers_can_only_use_bp():
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    assert isinstance(training_method(plain, {"method": "bp"}), BackpropTraining)
    with pytest.raises(ConfigError, match="use --method bp"):
        training_method(plain, {"method": "man"})
