"""All-weather restoration data: a reader of the All-Weather layout and a seeded synthetic set.

Real layout (TransWeather / MoFME): ``root/{train,test_rain,test_raindrop,test_snow}/{input,gt}/``;
an input and its clean image share the file name, except in the raindrop set where ``X_rain.png``
pairs with ``X_clean.png``.

`allweather-synth`: rain streaks, raindrops and snow at three densities, drawn with a fixed seed on
real photographs that ship offline inside scikit-image (its colour sample images). The split is by
source image: no pixel of a test photograph is ever seen in training.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import DataError

WEATHERS = ("rain", "raindrop", "snow")
TRAIN_SOURCES = ("astronaut.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png")
TEST_SOURCES = ("coffee.png", "motorcycle_right.png")   # right frame: another view, never cropped for training
_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def source_image(name: str) -> np.ndarray:
    """A scikit-image sample photograph (a file shipped in its wheel) as float32 RGB in [0, 1], (H, W, 3)."""
    import skimage
    from PIL import Image
    path = Path(skimage.__file__).parent / "data" / name
    if not path.is_file():
        raise DataError(f"{path}: scikit-image's sample image is missing (a stripped install?)")
    img = np.asarray(Image.open(path).convert("RGB"))
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3].astype(np.float32) / (255.0 if img.dtype == np.uint8 else float(img.max() or 1))


# ---- the weather generator ----------------------------------------------------------------------

def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(a, sigma) if sigma > 0 else a


def add_rain(img: np.ndarray, rng: np.random.Generator, density: int) -> np.ndarray:
    """Motion-blurred streaks at one slanted angle, screen-blended."""
    from scipy.ndimage import convolve
    h, w, _ = img.shape
    seeds = (rng.random((h, w)) < 0.004 * (1 + 2 * density)).astype(np.float32)
    length = int(rng.integers(7, 15 + 4 * density))
    angle = np.deg2rad(rng.uniform(-25, 25))
    k = np.zeros((length, length), np.float32)
    c = length // 2
    for t in np.linspace(-c, c, 2 * length):
        k[min(length - 1, int(round(c + t * np.cos(angle)))), min(length - 1, int(round(c + t * np.sin(angle))))] = 1
    streak = np.clip(convolve(seeds, k / k.sum() * length * 0.35, mode="wrap"), 0, 1)
    streak = _blur(streak, 0.6)[..., None] * rng.uniform(0.6, 0.9)
    return 1 - (1 - img) * (1 - streak)


def add_raindrops(img: np.ndarray, rng: np.random.Generator, density: int) -> np.ndarray:
    """Round drops: inside, a blurred and flipped view of the scene (a drop is a lens), a light rim."""
    h, w, _ = img.shape
    out = img.copy()
    lens = _blur(img[::-1], 3.0) * 0.9 + 0.08
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(4, 8)) * (1 + density)):
        r = rng.uniform(3, 6 + 3 * density)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        d = np.sqrt((yy - cy) ** 2 + ((xx - cx) * rng.uniform(0.8, 1.2)) ** 2) / r
        alpha = np.clip(1.2 - d, 0, 1)[..., None] * 0.9
        rim = np.exp(-((d - 0.9) ** 2) / 0.01)[..., None] * 0.25
        out = out * (1 - alpha) + lens * alpha + rim
    return np.clip(out, 0, 1)


def add_snow(img: np.ndarray, rng: np.random.Generator, density: int) -> np.ndarray:
    """Flakes of several sizes (blurred dots) over a light veil."""
    h, w, _ = img.shape
    flakes = np.zeros((h, w), np.float32)
    for size, rate in ((0.5, 0.01), (1.2, 0.003), (2.0, 0.001)):
        dots = (rng.random((h, w)) < rate * (1 + density)).astype(np.float32)
        flakes += _blur(dots, size) * (2 * size + 1) ** 2 * 0.35
    flakes = np.clip(flakes, 0, 1)[..., None]
    veil = 0.05 * (1 + density)
    return np.clip((img * (1 - veil) + veil * 0.85) * (1 - flakes) + flakes, 0, 1)


DEGRADE = {"rain": add_rain, "raindrop": add_raindrops, "snow": add_snow}


def degrade(img: np.ndarray, weather: str, seed: int, density: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = int(rng.integers(0, 3)) if density is None else int(density)
    return DEGRADE[weather](img, rng, d).astype(np.float32)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()


class WeatherPairs(Dataset):
    """Items: (degraded (3, H, W), clean (3, H, W), weather index) in [0, 1]."""

    weathers = WEATHERS

    def __init__(self, pairs: list, split: str, name: str, notes: list[str] | None = None):
        self.pairs, self.split, self.name = pairs, split, name
        self.notes = notes if notes is not None else []

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        item = self.pairs[i]
        return item() if callable(item) else item


class SynthWeather(Dataset):
    """`allweather-synth`: train items are fresh random crops (seeded by index); test items are a
    fixed set of crops of the test photographs, each weather type at each density."""

    weathers = WEATHERS

    def __init__(self, split: str, crop: int = 64, size: int | None = None, seed: int = 0, test_crop: int = 128):
        if split not in ("train", "test", "val"):
            raise DataError(f"allweather-synth has splits train and test, not '{split}'")
        self.split = "test" if split == "val" else split
        self.name, self.notes, self.seed = "allweather-synth", [], int(seed)
        self.sources = [source_image(n) for n in (TRAIN_SOURCES if self.split == "train" else TEST_SOURCES)]
        self.crop = int(crop if self.split == "train" else test_crop)
        if self.split == "train":
            self.n = int(size or 2048)
        else:
            self.items = [(s, w, d, j) for s in range(len(self.sources)) for w in range(3) for d in range(3)
                          for j in range(2)]
            self.n = min(int(size), len(self.items)) if size else len(self.items)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        c = self.crop
        if self.split == "train":
            rng = np.random.default_rng((self.seed, i))
            src = self.sources[int(rng.integers(len(self.sources)))]
            w = int(rng.integers(3))
            density = None
            flip = int(rng.integers(8))
        else:
            s, w, density, j = self.items[i]
            rng = np.random.default_rng((self.seed, 10_000 + i))
            src, flip = self.sources[s], 0
        h, wd, _ = src.shape
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, wd - c + 1))
        clean = src[y:y + c, x:x + c]
        if flip & 1:
            clean = clean[:, ::-1]
        if flip & 6:
            clean = np.rot90(clean, flip >> 1)
        clean = np.ascontiguousarray(clean)
        bad = degrade(clean, WEATHERS[w], int(rng.integers(2**31)), density)
        return _tensor(bad), _tensor(clean), w


# ---- the All-Weather layout ---------------------------------------------------------------------

def read_image(path: Path, notes: list[str] | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if img.mode not in ("RGB", "RGBA") and notes is not None:
        notes.append(f"{path.name}: {img.mode} image converted to RGB")
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _partner(gt_dir: Path, name: str) -> Path | None:
    stem, ext = Path(name).stem, Path(name).suffix
    for cand in (name, stem.replace("_rain", "_clean") + ext, stem + "_clean" + ext):
        if (gt_dir / cand).is_file():
            return gt_dir / cand
    return None


def _pairs_in(folder: Path, weather: int) -> list[tuple[Path, Path, int]]:
    inp, gt = folder / "input", folder / "gt"
    if not inp.is_dir() or not gt.is_dir():
        raise DataError(f"{folder}: expected input/ and gt/ folders (the All-Weather layout)")
    out = []
    for p in sorted(inp.iterdir()):
        if p.suffix.lower() not in _EXTS:
            continue
        q = _partner(gt, p.name)
        if q is None:
            raise DataError(f"{p}: no clean image for it in {gt} (looked for {p.name} and its _clean name)")
        out.append((p, q, weather))
    return out


def read_allweather(root: str | Path, split: str = "test", limit: int | None = None) -> WeatherPairs:
    """Pairs from the All-Weather layout; test: test_rain, test_raindrop, test_snow (those present)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (the All-Weather layout is a folder with test_rain/, test_raindrop/, "
                        "test_snow/, each with input/ and gt/)")
    if split == "train":
        found = _pairs_in(root / "train", -1) if (root / "train").is_dir() else []
    else:
        found = [x for i, w in enumerate(WEATHERS) if (root / f"test_{w}").is_dir()
                 for x in _pairs_in(root / f"test_{w}", i)]
        if not found and (root / "input").is_dir():   # a single weather folder given directly
            found = _pairs_in(root, -1)
    if not found:
        raise DataError(f"{root}: no image pairs for split '{split}' (expected "
                        + ("train/{input,gt}/" if split == "train" else "test_{rain,raindrop,snow}/{input,gt}/") + ")")
    if limit:
        found = found[:int(limit)]
    notes: list[str] = []

    def load(p, q, w):
        def get():
            a, b = read_image(p, notes), read_image(q, notes)
            if a.shape != b.shape:
                raise DataError(f"{p.name} is {a.shape[1]}x{a.shape[0]} but its clean image {q.name} is "
                                f"{b.shape[1]}x{b.shape[0]}: a pair must have one size")
            return _tensor(a), _tensor(b), w
        return get

    return WeatherPairs([load(*x) for x in found], "train" if split == "train" else "test", f"allweather:{root}", notes)


def write_allweather(dataset: Dataset, root: str | Path) -> Path:
    """Write pairs into the All-Weather layout (what `read_allweather` reads), atomically per file."""
    from PIL import Image

    from zoo._io import atomic_path
    root = Path(root)
    for i in range(len(dataset)):
        bad, clean, w = dataset[i]
        sub = root / f"test_{WEATHERS[w]}"
        stem = f"{i:04d}"
        for folder, img, name in ((sub / "input", bad, f"{stem}_rain.png" if w == 1 else f"{stem}.png"),
                                  (sub / "gt", clean, f"{stem}_clean.png" if w == 1 else f"{stem}.png")):
            folder.mkdir(parents=True, exist_ok=True)
            arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
            with atomic_path(folder / name) as tmp:
                Image.fromarray(arr).save(tmp, format="PNG")
    return root


def note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)
