"""Image-classification data readers (IDX, CIFAR-10 binary, MNIST-5k csv) and the classification task."""

import gzip
import io
import tarfile

import numpy as np
import pytest
import torch
from torch import nn

from zoo.data import image_classification as icd
from zoo.errors import DataError
from zoo.models.resnet_cifar import resnet_cifar
from zoo.tasks.classification import ClassificationTask, load_image

FMNIST_CONFIG = {"in_chans": 1, "img_size": 28, "num_classes": 10}


def fmnist_model(**config):
    return resnet_cifar(depth=20, **{**FMNIST_CONFIG, **config})


def make_fashion_mnist(folder, n_train=24, n_test=10, seed=0, gz=True):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        icd.write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        icd.write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        arrays[prefix] = (images, labels)
    return arrays


def make_cifar(folder, per_batch=3, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in [*[(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)], ("test_batch.bin", n_test)]:
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        icd.write_cifar10_bin(folder / name, images, labels)
        written[name] = (images, labels)
    (folder / "batches.meta.txt").write_text("\n".join(icd.CIFAR10_CLASSES) + "\n\n")
    return written


# ---- IDX ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_and_fashion_mnist_folder(tmp_path, gz):
    arrays = make_fashion_mnist(tmp_path, gz=gz)
    images, labels = icd.load_fashion_mnist(tmp_path, "train")
    assert images.shape == (24, 1, 28, 28) and images.dtype == torch.uint8
    assert np.array_equal(images[:, 0].numpy(), arrays["train"][0])
    assert labels.tolist() == arrays["train"][1].tolist()
    test = icd.load("fashion-mnist", "test", str(tmp_path))
    assert len(test) == 10 and test[3][0].max() <= 1.0 and test[3][1] == 3


def test_truncated_idx_is_one_clear_line(tmp_path):
    make_fashion_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"truncated IDX file: header says 24x28x28 \(18,816 bytes\), found 18,716"):
        icd.load_fashion_mnist(tmp_path, "train")


def test_truncated_gzip_and_bad_magic(tmp_path):
    make_fashion_mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="unreadable or truncated"):
        icd.load_fashion_mnist(tmp_path, "test")
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 10)
    with pytest.raises(DataError, match="not an IDX file"):
        icd.read_idx(bad)


def test_missing_folder_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(icd, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        icd.load_fashion_mnist(None, "train")


@pytest.mark.skipif(not icd.FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_debian_package():
    train, test = icd.load("fashion-mnist", "train", None), icd.load("fashion-mnist", "test", None)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert test.labels.bincount().tolist() == [1000] * 10
    assert abs(train.images.float().mean().item() / 255 - icd.FASHION_MNIST_MEAN) < 1e-3


# ---- CIFAR-10 binary ----------------------------------------------------------------------------

def test_cifar10_binary_layout_is_read_channel_major(tmp_path):
    written = make_cifar(tmp_path / "cifar-10-batches-bin")
    for root in (tmp_path, tmp_path / "cifar-10-batches-bin"):     # the folder or its parent
        images, labels, classes = icd.load_cifar10_bin(root, "train")
        assert images.shape == (15, 3, 32, 32) and classes == icd.CIFAR10_CLASSES
        first, first_labels = written["data_batch_1.bin"]
        assert np.array_equal(images[:3].numpy(), first)
        assert labels[:3].tolist() == first_labels.tolist()
        assert np.array_equal(images[12:].numpy(), written["data_batch_5.bin"][0])
    # record 0 of the test file: byte 1 is the red pixel (0, 0), byte 1025 the green pixel (0, 0)
    raw = (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    test, _, _ = icd.load_cifar10_bin(tmp_path, "test")
    assert test[0, 0, 0, 0] == raw[1] and test[0, 1, 0, 0] == raw[1 + 1024] and test[0, 2, 31, 31] == raw[3072]


def test_cifar10_archive_and_truncation(tmp_path):
    written = make_cifar(tmp_path / "cifar-10-batches-bin")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    images, labels, _ = icd.load_cifar10_bin(archive, "test")
    assert np.array_equal(images.numpy(), written["test_batch.bin"][0])
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"truncated CIFAR-10 binary file: 9,212 bytes is not a whole number of "
                                        r"3073-byte records"):
        icd.load_cifar10_bin(tmp_path, "train")


def test_cifar10_python_pickles_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"\x80\x04not read")
    with pytest.raises(DataError, match="pickled python batches"):
        icd.load_cifar10_bin(folder, "train")
    with pytest.raises(DataError, match="pass --data path/to/cifar-10-batches-bin"):
        icd.load_cifar10_bin(None, "train")


def test_mnist_5k_csv(tmp_path):
    rng = np.random.default_rng(0)
    table = np.concatenate([rng.integers(0, 256, (50, 784)), (np.arange(50) % 10)[:, None]], axis=1)
    path = tmp_path / "mnist_5k.csv.gz"
    buf = io.StringIO()
    np.savetxt(buf, table, fmt="%d", delimiter=",")
    path.write_bytes(gzip.compress(buf.getvalue().encode()))
    train, test = icd.load("mnist-5k", "train", str(path)), icd.load("mnist-5k", "test", str(tmp_path))
    assert (len(train), len(test)) == (40, 10) and train.images.shape[1:] == (1, 28, 28)
    both = torch.cat([train.labels, test.labels]).sort().values
    assert both.tolist() == sorted((np.arange(50) % 10).tolist())


def test_augmentation_and_seeded_subset(tmp_path):
    make_fashion_mnist(tmp_path, n_train=40)
    plain = icd.load("fashion-mnist", "train", str(tmp_path))
    augmented = icd.load("fashion-mnist", "train", str(tmp_path), augment=True)
    torch.manual_seed(0)
    assert any(not torch.equal(augmented[i][0], plain[i][0]) for i in range(10))
    a, b = plain.subset(12, seed=1), plain.subset(12, seed=1)
    assert len(a) == 12 and torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)


# ---- the task -----------------------------------------------------------------------------------

class RankedLogits(nn.Module):
    """Puts the true label (read from the pixel value) at a chosen rank: a model with known accuracy."""

    in_chans, img_size, num_classes, class_names = 1, 28, 10, None
    ranks = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        label = (x[:, 0, 0, 0] * 255 / 20).round().long()
        logits = torch.zeros(len(x), 10)
        for i, y in enumerate(label.tolist()):
            order = [c for c in range(10) if c != y]
            order.insert(self.ranks[y], y)
            logits[i, order] = torch.arange(10, 0, -1).float()
        return logits + self.dummy


def test_evaluate_top1_top5_and_confusion_picture(tmp_path):
    images = (torch.arange(10) * 20).to(torch.uint8).view(10, 1, 1, 1).expand(10, 1, 28, 28).contiguous()
    ds = icd.ImageClassificationDataset(images, torch.arange(10), icd.FASHION_MNIST_CLASSES, "toy")
    out = tmp_path / "cm.png"
    metrics = ClassificationTask().evaluate(RankedLogits(), ds, {"confusion_matrix": str(out), "batch_size": 4})
    assert metrics["top1"] == pytest.approx(20.0) and metrics["top5"] == pytest.approx(80.0)
    assert metrics["samples"] == 10
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_dataset_refuses_images_of_the_wrong_shape(tmp_path):
    make_fashion_mnist(tmp_path)
    task = ClassificationTask()
    ds = task.load_dataset("fashion-mnist", "train", str(tmp_path), fmnist_model(), {"train_subset": 5})
    assert len(ds) == 5 and ds.transform is not None
    assert task.load_dataset(None, "test", str(tmp_path), fmnist_model(), {"augment": False}).transform is None
    with pytest.raises(DataError, match=r"fashion-mnist images are 1x28x28 .* but the model expects 3x32x32") as err:
        task.load_dataset("fashion-mnist", "test", str(tmp_path), fmnist_model(in_chans=3, img_size=32), {})
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="labels up to 9 but the model has 5 classes"):
        task.load_dataset("fashion-mnist", "test", str(tmp_path), fmnist_model(num_classes=5), {})
    make_cifar(tmp_path / "c")
    with pytest.raises(DataError, match="cifar10 images are 3x32x32"):
        task.load_dataset(None, "test", str(tmp_path / "c"), fmnist_model(), {})   # layout guessed from --data
    with pytest.raises(DataError, match="which data"):
        task.load_dataset(None, "test", None, fmnist_model(), {})


def test_predict_on_an_image_file(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    model = resnet_cifar(depth=32, in_chans=1, img_size=28, mean=0.286, std=0.353,
                         class_names=icd.FASHION_MNIST_CLASSES)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(gray)
    task = ClassificationTask()
    out = task.predict(model, str(gray), None, tmp_path / "p.png", {})
    probs = [r["prob"] for r in out["top5"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert out["prediction"] == out["top5"][0]["class"] and out["prediction"] in icd.FASHION_MNIST_CLASSES
    assert (tmp_path / "p.png").is_file()
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((64, 48, 3), dtype=np.uint8)).save(rgb)
    with pytest.raises(DataError, match=r"is 3x64x48 .* expects 1x28x28; pass -o resize=true"):
        task.predict(model, str(rgb), None, None, {})
    assert load_image(rgb, 1, 28, resize=True).shape == (1, 28, 28)
    (tmp_path / "not.png").write_text("text")
    with pytest.raises(DataError, match="not a readable image"):
        task.predict(model, str(tmp_path / "not.png"), None, None, {})


def test_example_batch_and_input_fit_the_model():
    model = resnet_cifar(depth=32, in_chans=1, img_size=28)
    task = ClassificationTask()
    images, labels = task.example_batch(model, {"batch_size": 4})
    assert images.shape == (4, 1, 28, 28) and labels.shape == (4,) and labels.max() < 10
    (x,) = task.example_input(model, {})
    assert x.shape == (1, 1, 28, 28)
    assert task.example_input(model, {"imgsz": 32, "batch_size": 2})[0].shape == (2, 1, 32, 32)
    assert isinstance(task.training_module(model, {"method": "auglocal"}), torch.nn.Module)


def test_models_implement_the_protocols_and_options_are_typed():
    from zoo.layers.local_learning import LocalBackbone
    from zoo.options import validate
    from zoo.tasks.classification import Classifier

    model = resnet_cifar(depth=20)
    assert isinstance(model, Classifier) and isinstance(model, LocalBackbone)
    assert isinstance(RankedLogits(), Classifier) and not isinstance(RankedLogits(), LocalBackbone)
    assert ClassificationTask.model_protocol is Classifier
    got = validate({"method": "auglocal", "local-blocks": "16", "aux_depth": 1, "pyramid": "false",
                    "confusion_matrix": "cm.png", "resize": "true"}, ClassificationTask.Options, "classification")
    assert got == {"method": "auglocal", "local_blocks": 16, "aux_depth": 1, "pyramid": False,
                   "confusion_matrix": "cm.png", "resize": True}
    from zoo.errors import ConfigError
    with pytest.raises(ConfigError, match="did you mean 'aux_depth'"):
        validate({"aux_dept": 2}, ClassificationTask.Options, "classification")
    assert set(ClassificationTask.metric_definitions) == {"top1", "top5", "loss", "samples"}
    assert list(ClassificationTask().datasets) == ["fashion-mnist", "cifar10", "mnist-5k"]
