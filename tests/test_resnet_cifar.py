"""The CIFAR ResNet backbones of the local-learning entries: sizes pinned to the official code."""

import pytest
import torch

import zoo
from zoo.errors import ConfigError
from zoo.models.resnet_cifar import resnet_cifar


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth, params, label", [(32, 466_906, "0.467M"), (110, 1_730_714, "1.731M")])
def test_parameter_counts_match_the_official_code(depth, params, label):
    # counts of the official MAN/AugLocal `resnet32`/`resnet110` (10 classes) minus their unused second
    # classifier; the papers quote them rounded
    model = resnet_cifar(depth=depth)
    assert _params(model) == params
    assert f"{params / 1e6:.3f}M" == label


def test_registry_variants_build_with_their_sizes():
    for name, params in [("resnet32", 466_906), ("man-resnet32", 466_906), ("auglocal-resnet32", 466_906),
                         ("resnet110", 1_730_714), ("auglocal-resnet110", 1_730_714)]:
        assert _params(zoo.create_model(name)) == params, name


def test_grayscale_variant_differs_only_in_the_stem():
    # Fashion-MNIST checkpoints: 1 input channel -> the stem conv has 16*1*9 instead of 16*3*9 weights
    assert _params(resnet_cifar(depth=32, in_chans=1, mean=0.286, std=0.353)) == 466_906 - 16 * 2 * 9


def test_structure_layers_and_official_split_tables():
    model = resnet_cifar(depth=32)
    layers = model.local_layers()
    assert len(layers) == 16 and layers[0] is model.stem and layers[-1] is model.layer3[4]
    assert model.layer_stages == [0] + [1] * 5 + [2] * 5 + [3] * 5
    # InfoPro/MAN K=16: every residual block ends a module, the stem merged into the first
    assert model.local_split(16) == list(range(1, 16))
    assert model.local_split(4) == [3, 7, 11, 15]
    assert model.local_split(5) is None
    deep = resnet_cifar(depth=110)
    assert len(deep.local_layers()) == 55 and len(deep.local_split(55)) == 54
    assert deep.local_split(8) == [5, 12, 19, 26, 33, 40, 47, 54]


def test_forward_shapes_any_size_and_projection_shortcuts():
    model = resnet_cifar(depth=32).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert model(torch.rand(2, 3, 28, 28)).shape == (2, 10)
    assert model.layer1[0].shortcut is None
    assert isinstance(model.layer2[0].shortcut[0], torch.nn.Conv2d) and model.layer2[0].shortcut[0].stride == (2, 2)


def test_model_normalises_its_input_and_keeps_statistics_out_of_the_weights():
    model = resnet_cifar(depth=32, in_chans=1, mean=[0.5], std=[0.25]).eval()
    assert "stem.mean" not in model.state_dict() and "stem.std" not in model.state_dict()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        direct = model.stem.relu(model.stem.bn(model.stem.conv((x - 0.5) / 0.25)))
        assert torch.allclose(model.stem(x), direct)


def test_official_initialisation():
    torch.manual_seed(0)
    model = resnet_cifar(depth=110)
    conv = model.layer3[5].conv1   # 64 out channels, 3x3: std sqrt(2 / (9 * 64))
    assert abs(conv.weight.std().item() - (2 / (9 * 64)) ** 0.5) < 0.003
    assert torch.all(model.layer3[5].bn1.weight == 1) and torch.all(model.layer3[5].bn1.bias == 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=33), "depth must be one of"),
    (dict(depth=32, in_chans=1, mean=[0.1, 0.2, 0.3]), "mean has 3 values for 1 input channels"),
    (dict(depth=32, class_names=["a", "b"]), "2 class names for 10 classes"),
])
def test_bad_configs_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        resnet_cifar(**kwargs)
    assert "\n" not in str(err.value)
