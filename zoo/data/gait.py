"""Gait data: a reader of OpenGait's pickle layout and a seeded synthetic walker set in that layout.

OpenGait layout: ``root/<id>/<type>/<view>/*.pkl``, each pickle one numpy array of frames (T, H, W)
(uint8 silhouettes, 64x64 or cut to 64x44; HiH's multi-modal sets hold two pickles per folder, the
pose heatmaps first and the silhouettes second in name order), and a partition JSON
``{"TRAIN_SET": [ids], "TEST_SET": [ids]}``.

Pickles are read with a restricted unpickler that can only rebuild numpy arrays of plain numeric
dtypes: any other global (a function, a class, `os.system`) is refused before anything runs.
(zoo.converters.safe_pickle is the project's general restricted reader, but it sits above zoo.data
in the layering and turns arrays into inert stand-ins; this one returns the arrays.)

`gait-synth`: a parametric walker (torso, head, two-segment legs and arms) whose proportions,
stride, cadence and arm swing differ per identity, rendered as 64x64 silhouettes and 2-D joint
heatmaps from several views (a horizontal squeeze as the view turns) with clothing-like variations
(a coat widens the torso and covers the thighs, a bag adds a blob), written in the OpenGait layout.
Identities 0..n_train-1 train, the rest test; test probes (types `nm-02`, `bg-01`, `cl-01`) are matched
against the gallery (`nm-01`) of the same identities.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.errors import DataError


class UnsafePickle(DataError):
    """A gait pickle names a global outside the numpy-array allow-list."""


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            import numpy.core.multiarray  # noqa: F401  (old pickles name numpy.core)
            return super().find_class(module, name)
        raise UnsafePickle(f"refusing global '{module}.{name}': a gait pickle may only hold numpy arrays")


def load_pickle(path: str | Path) -> np.ndarray:
    """One OpenGait pickle as a numeric numpy array; code is never run."""
    path = Path(path)
    try:
        obj = _ArrayUnpickler(io.BytesIO(path.read_bytes())).load()
    except UnsafePickle as exc:
        raise UnsafePickle(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a readable OpenGait pickle ({exc})") from None
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a numeric numpy array of frames, found {type(obj).__name__}"
                        + (f" of dtype {obj.dtype}" if isinstance(obj, np.ndarray) else ""))
    if obj.ndim != 3:
        raise DataError(f"{path}: expected frames (T, H, W), found shape {tuple(obj.shape)}")
    if obj.shape[0] == 0:
        raise DataError(f"{path}: the sequence has zero frames")
    return obj


# ---- the walker ---------------------------------------------------------------------------------

def _identity(rng: np.random.Generator) -> dict:
    return dict(height=rng.uniform(0.72, 0.92), leg=rng.uniform(0.44, 0.54), torso_w=rng.uniform(0.10, 0.17),
                head=rng.uniform(0.055, 0.075), stride=rng.uniform(0.35, 0.75), cadence=rng.uniform(0.16, 0.30),
                arm=rng.uniform(0.2, 0.7), limb=rng.uniform(0.028, 0.045), phase=rng.uniform(0, 2 * np.pi))


def _segment(img, p, q, r):
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.array(q) - np.array(p)
    t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(1e-6, d @ d), 0, 1)
    dist = np.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1]))
    img[dist <= r] = 1.0


def render_walker(ident: dict, frames: int, view: float, cloth: str, rng: np.random.Generator, size: int = 64):
    """Silhouettes (T, size, size) uint8 {0,255} and joint heatmaps (T, size, size) uint8."""
    sil = np.zeros((frames, size, size), np.float32)
    pose = np.zeros((frames, size, size), np.float32)
    s = size * ident["height"]
    squeeze = 0.55 + 0.45 * abs(np.cos(view))   # side view: full stride; frontal: squeezed
    top = (size - s) / 2 + rng.uniform(-1, 1)
    cx = size / 2
    yy, xx = np.mgrid[0:size, 0:size]
    t0 = rng.uniform(0, 2 * np.pi)
    for f in range(frames):
        ph = t0 + ident["phase"] + 2 * np.pi * ident["cadence"] * f
        hip = (top + s * (1 - ident["leg"]), cx)
        neck = (top + s * 0.18, cx)
        head = (top + s * ident["head"] * 1.2, cx)
        L = s * ident["leg"]
        joints = [head, neck, hip]
        img = sil[f]
        _segment(img, neck, hip, s * ident["torso_w"] * (1.5 if cloth == "cl" else 1.0) * (0.7 + 0.3 * squeeze))
        img[np.hypot(yy - head[0], xx - head[1]) <= s * ident["head"]] = 1
        for sign in (1, -1):
            a = sign * ident["stride"] * np.sin(ph) * squeeze
            knee = (hip[0] + 0.5 * L * np.cos(a), hip[1] + 0.5 * L * np.sin(a))
            bend = max(0.0, -sign * np.cos(ph)) * 0.6
            foot = (knee[0] + 0.5 * L * np.cos(a - bend), knee[1] + 0.5 * L * np.sin(a - bend))
            _segment(img, hip, knee, s * ident["limb"] * (1.8 if cloth == "cl" else 1.2))
            _segment(img, knee, foot, s * ident["limb"])
            arm = -sign * ident["arm"] * np.sin(ph) * squeeze
            hand = (neck[0] + 0.33 * s * np.cos(arm), neck[1] + 0.33 * s * np.sin(arm))
            _segment(img, neck, hand, s * ident["limb"] * 0.8)
            joints += [knee, foot, hand]
        if cloth == "bg":
            by, bx = hip[0] - 0.1 * s, cx + s * 0.16 * squeeze
            img[np.hypot((yy - by) / 1.4, xx - bx) <= s * 0.07] = 1
        for jy, jx in joints:
            pose[f] = np.maximum(pose[f], np.exp(-((yy - jy) ** 2 + (xx - jx) ** 2) / 4.0))
    return (sil * 255).astype(np.uint8), (pose * 255).astype(np.uint8)


GALLERY_TYPES = ("nm-01",)
PROBE_TYPES = ("nm-02", "bg-01", "cl-01")
TRAIN_TYPES = ("nm-01", "nm-02", "bg-01", "cl-01")
VIEWS = ("000", "045", "090")


def write_gait_synth(root: str | Path, n_ids: int = 24, n_train: int = 16, frames: int = 24, seed: int = 0,
                     pose: bool = True) -> Path:
    """Write `gait-synth` in the OpenGait layout (+ partition JSON) under `root`."""
    from zoo._io import atomic_path, atomic_write_text
    root = Path(root)
    for i in range(n_ids):
        rng = np.random.default_rng((seed, i))
        ident = _identity(rng)
        for typ in TRAIN_TYPES:
            for view in VIEWS:
                sil, hm = render_walker(ident, frames + int(rng.integers(0, 8)), np.deg2rad(float(view)),
                                        typ[:2], rng)
                folder = root / f"{i:03d}" / typ / view
                folder.mkdir(parents=True, exist_ok=True)
                for name, arr in ((f"0-{view}-pose.pkl", hm), (f"1-{view}-sils.pkl", sil)) if pose else \
                        ((f"{view}.pkl", sil),):
                    with atomic_path(folder / name) as tmp:
                        tmp.write_bytes(pickle.dumps(arr, protocol=4))
    ids = [f"{i:03d}" for i in range(n_ids)]
    atomic_write_text(root / "partition.json", json.dumps({"TRAIN_SET": ids[:n_train], "TEST_SET": ids[n_train:]}))
    return root


def _cut(frames: np.ndarray) -> np.ndarray:
    """OpenGait's silhouette cutting: 64x64 -> 64x44 (drop 10 columns each side)."""
    h, w = frames.shape[1:]
    if h == w:
        c = h // 8 + h // 32   # 64 -> 10
        return frames[:, :, c:w - c]
    return frames


class GaitSequences(Dataset):
    """Sequences from an OpenGait folder. Items: dict(sils (T,H,W), pose (T,H,W), label, id, type, view)."""

    def __init__(self, root: str | Path, split: str, frame_size: tuple[int, int], partition: str | Path | None = None,
                 limit: int | None = None, name: str | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: not a folder (OpenGait layout: id/type/view/*.pkl)")
        part_file = Path(partition) if partition else next(iter(sorted(root.glob("*.json"))), None)
        ids = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not ids:
            raise DataError(f"{root}: no identity folders (OpenGait layout: id/type/view/*.pkl)")
        if part_file is not None and part_file.is_file():
            try:
                part = json.loads(part_file.read_text())
                wanted = [str(x) for x in part["TRAIN_SET" if split == "train" else "TEST_SET"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{part_file}: not an OpenGait partition JSON with TRAIN_SET/TEST_SET ({exc})") from None
            ids = [i for i in ids if i in set(wanted)]
        self.split, self.name, self.frame_size = split, name or f"opengait:{root}", tuple(frame_size)
        self.seqs = []
        for pid in ids:
            for typ in sorted(p.name for p in (root / pid).iterdir() if p.is_dir()):
                for view in sorted(p.name for p in (root / pid / typ).iterdir() if p.is_dir()):
                    files = sorted((root / pid / typ / view).glob("*.pkl"))
                    if files:
                        self.seqs.append((pid, typ, view, files))
        if limit:
            self.seqs = self.seqs[:int(limit)]
        if not self.seqs:
            raise DataError(f"{root}: no sequences for split '{split}'")
        self.ids = sorted({s[0] for s in self.seqs})
        self.label_of = {pid: i for i, pid in enumerate(self.ids)}

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        pid, typ, view, files = self.seqs[i]
        arrays = [load_pickle(f) for f in files]
        sils = arrays[-1]
        pose = arrays[0] if len(arrays) > 1 else np.zeros_like(sils)
        if pose.shape[0] != sils.shape[0]:
            raise DataError(f"{files[0].parent}: pose and silhouette sequences differ in length")
        sils, pose = self._fit(_cut(sils)), self._fit(_cut(pose))
        return {"sils": sils, "pose": pose, "label": self.label_of[pid], "id": pid, "type": typ, "view": view}

    def _fit(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a.astype(np.float32) / (255.0 if a.max() > 1 else 1.0))
        if tuple(t.shape[1:]) != self.frame_size:
            t = torch.nn.functional.interpolate(t[None], size=self.frame_size, mode="area")[0]
        return t


def gait_synth(split: str, frame_size, seed: int = 0, cache: str | Path | None = None) -> GaitSequences:
    """`gait-synth`, generated once into the data cache (OpenGait layout) and read back with the reader."""
    from zoo.data import cache_dir
    base = Path(cache or cache_dir()) / f"gait-synth-{seed}"
    if not (base / "partition.json").is_file():
        import tempfile
        base.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base.parent, prefix=".gait-synth-"))
        write_gait_synth(tmp, seed=seed)
        try:
            tmp.rename(base)
        except OSError:   # another process finished first
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return GaitSequences(base, "train" if split == "train" else "test", frame_size, name="gait-synth")
