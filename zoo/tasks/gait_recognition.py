"""Gait recognition: sequences of silhouettes (and pose heatmaps) -> part embeddings; identities
found by gallery/probe retrieval (rank-1, mAP, mINP, Euclidean distance as the official configs).

Models implement `GaitModel`: `forward(silhouettes (B, T, H, W), pose=None) -> (embeddings (B, E, P),
logits (B, K, P))`, `frame_size` (H, W), `num_classes`, `uses_pose`.

Training: triplet loss (margin 0.2, batch-all over valid triplets, per part, mean over the non-zero
ones) + cross-entropy on the BNNeck logits scaled by 16, weight 1 each, as the official configs.
So every batch holds positives, a training item is `pairs` (default 2) sequences of one identity,
each cut to `frames` ordered frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from zoo._io import pyplot, save_figure
from zoo.data import gait as gd
from zoo.errors import DataError
from zoo.tasks.base import DatasetEntry, Task, TaskOptions, device_of, to_device


@runtime_checkable
class GaitModel(Protocol):
    frame_size: tuple
    num_classes: int
    uses_pose: bool

    def forward(self, silhouettes: torch.Tensor, pose: Optional[torch.Tensor] = None):
        """(B, T, H, W) in [0, 1] -> (embeddings (B, E, P), logits (B, K, P))."""


class GaitOptions(TaskOptions):
    frames: int = Field(30, description="train: ordered frames per sequence (official: 30 for CASIA-B)")
    pairs: int = Field(2, description="train: sequences of one identity per training item (positives for the triplet loss)")
    margin: float = Field(0.2, description="triplet margin")
    ce_scale: float = Field(16.0, description="scale of the cosine logits in the cross-entropy")
    partition: Optional[str] = Field(None, description="--data: the partition JSON (default: the *.json in the folder)")
    gallery_types: str = Field("nm-01", description="sequence types that form the gallery (comma-separated); the rest are probes")
    index: int = Field(0, description="predict: the probe to match when no sequence file is given")


class _TrainPairs(Dataset):
    """Wrap a sequence set: item i = `pairs` sequences of one identity, `frames` ordered frames each."""

    def __init__(self, base: gd.GaitSequences, frames: int, pairs: int, seed: int):
        self.base, self.frames, self.pairs, self.seed = base, frames, pairs, seed
        self.by_id: dict[int, list[int]] = {}
        for j, s in enumerate(base.seqs):
            self.by_id.setdefault(base.label_of[s[0]], []).append(j)
        self.split, self.name = base.split, base.name
        self.n_calls = 0

    def __len__(self):
        return len(self.base)

    def _clip(self, t: torch.Tensor, rng) -> torch.Tensor:
        n = t.shape[0]
        if n >= self.frames:
            s = int(rng.integers(0, n - self.frames + 1))
            return t[s:s + self.frames]
        return torch.cat([t] * (-(-self.frames // n)))[: self.frames]

    def __getitem__(self, i):
        self.n_calls += 1
        rng = np.random.default_rng((self.seed, i, self.n_calls))
        label = self.base.label_of[self.base.seqs[i][0]]
        others = self.by_id[label]
        picks = [i] + [int(rng.choice(others)) for _ in range(self.pairs - 1)]
        items = [self.base[j] for j in picks]
        sils, pose = [], []
        for it in items:
            r = np.random.default_rng((self.seed, i, len(sils), self.n_calls))
            start_rng = np.random.default_rng(int(r.integers(2**31)))
            s = self._clip(it["sils"], start_rng)
            start_rng = np.random.default_rng(int(r.integers(2**31)))
            sils.append(s)
            pose.append(self._clip(it["pose"], np.random.default_rng(0)) if it["pose"].shape[0] else torch.zeros_like(s))
        return torch.stack(sils), torch.stack(pose), torch.full((self.pairs,), label, dtype=torch.long)


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-all triplet loss per part: emb (N, E, P); mean over the triplets with a positive loss."""
    x = emb.permute(2, 0, 1)                          # (P, N, E)
    d = torch.cdist(x, x)                             # (P, N, N)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos = (same & ~eye)[None, :, :, None]
    neg = (~same)[None, :, None, :]
    t = F.relu(d[:, :, :, None] - d[:, :, None, :] + margin) * (pos & neg)
    n = (t > 0).sum()
    return t.sum() / n.clamp(min=1)


def _distance(probe: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Euclidean distance averaged over parts: (Np, E, P), (Ng, E, P) -> (Np, Ng)."""
    return torch.cdist(probe.permute(2, 0, 1), gallery.permute(2, 0, 1)).mean(0)


def retrieval_metrics(dist: torch.Tensor, probe_ids: list, gallery_ids: list) -> dict[str, float]:
    """rank-1, rank-5, mAP and mINP (Ye et al. 2021) of each probe against the gallery."""
    g = np.array(gallery_ids)
    r1 = r5 = ap = inp = 0.0
    for i, pid in enumerate(probe_ids):
        order = torch.argsort(dist[i]).cpu().numpy()
        match = (g[order] == pid)
        if not match.any():
            raise DataError(f"probe identity '{pid}' has no sequence in the gallery")
        hits = np.flatnonzero(match)
        r1 += float(match[0])
        r5 += float(match[:5].any())
        ap += float(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
        inp += float(len(hits) / (hits[-1] + 1))
    n = len(probe_ids)
    # plain floats: numpy scalars would not serialise into the card's YAML
    return {k: float(v) for k, v in {"rank1": 100 * r1 / n, "rank5": 100 * r5 / n, "map": 100 * ap / n,
                                     "minp": 100 * inp / n}.items()}


class GaitRecognitionTask(Task):
    name = "gait-recognition"
    DATASETS = {
        "gait-synth": DatasetEntry(
            "parametric walkers (per-identity proportions, stride, cadence; 3 views; coat/bag variations) as silhouettes + "
            "joint heatmaps in OpenGait's id/type/view/*.pkl layout; 16 train ids, 8 test ids (gallery nm-01; probes nm-02, bg-01, cl-01)",
            lambda split, model, options: gd.gait_synth(split, tuple(model.frame_size), seed=int(options.get("data_seed", 0)))),
    }
    Options = GaitOptions
    model_protocol = GaitModel
    default_batch_size = 8
    default_lr = 1e-3
    default_steps = 300
    main_metric = "rank1"
    lower_is_better = False
    metric_definitions = {
        "rank1": "percentage of probe sequences whose nearest gallery sequence (Euclidean distance of part embeddings, averaged over parts) has the same identity",
        "rank5": "percentage of probes with a same-identity gallery sequence among the five nearest",
        "map": "mean over probes of the average precision of the gallery ranking, percent",
        "minp": "mean inverse negative penalty (Ye et al. 2021): per probe, (number of true matches) / (rank of the hardest true match), percent",
        "probes": "number of probe sequences", "gallery": "number of gallery sequences",
    }

    def load_dataset(self, dataset, split, data_path, model, options):
        ds = super().load_dataset(dataset, split, data_path, model, options)
        if split == "train":
            return _TrainPairs(ds, int(options.get("frames", 30)), max(2, int(options.get("pairs", 2))),
                               int(options.get("data_seed", 0)))
        return ds

    def read_data(self, path, dataset, split, model, options):
        return gd.GaitSequences(path, "train" if split == "train" else "test", tuple(model.frame_size),
                                options.get("partition"), options.get("limit"))

    def collate(self, items):
        sils = torch.cat([it[0] for it in items])
        pose = torch.cat([it[1] for it in items])
        return sils, pose, torch.cat([it[2] for it in items])

    def loss(self, model, batch):
        sils, pose, labels = to_device(batch, device_of(model))
        emb, logits = model(sils, pose if model.uses_pose else None)
        tri = triplet_loss(emb.float(), labels, 0.2)
        ce = F.cross_entropy(16.0 * logits.float(), labels[:, None].expand(-1, logits.shape[2]))
        acc = float((logits.mean(2).argmax(1) == labels).float().mean() * 100)
        return tri + ce, {"triplet": float(tri), "ce": float(ce), "acc": acc}

    def example_batch(self, model, options):
        b = max(2, int(options.get("batch_size") or 4))
        b += b % 2
        h, w = model.frame_size
        g = torch.Generator().manual_seed(0)
        sils = (torch.rand(b, 6, h, w, generator=g) > 0.5).float()
        labels = torch.arange(b // 2).repeat_interleave(2) % int(model.num_classes)
        return to_device([sils, torch.rand(b, 6, h, w, generator=g), labels], device_of(model))

    def example_input(self, model, options):
        b = int(options.get("batch_size") or 1)
        h, w = model.frame_size
        g = torch.Generator().manual_seed(0)
        sils = (torch.rand(b, 6, h, w, generator=g) > 0.5).float().to(device_of(model))
        if model.uses_pose:
            return (sils, torch.rand(b, 6, h, w, generator=g).to(device_of(model)))
        return (sils,)

    @torch.no_grad()
    def _embed_all(self, model, dataset):
        model.eval()
        dev = device_of(model)
        embs, meta = [], []
        for i in range(len(dataset)):
            it = dataset[i]
            if it["sils"].shape[0] == 0:
                raise DataError(f"sequence {it['id']}/{it['type']}/{it['view']} has zero frames")
            e, _ = model(it["sils"][None].to(dev), it["pose"][None].to(dev) if model.uses_pose else None)
            embs.append(e.float().cpu())
            meta.append((it["id"], it["type"], it["view"]))
        return torch.cat(embs), meta

    def _split(self, meta, options):
        gal_types = {t.strip() for t in str(options.get("gallery_types", "nm-01")).split(",") if t.strip()}
        gal = [i for i, m in enumerate(meta) if m[1] in gal_types]
        probe = [i for i, m in enumerate(meta) if m[1] not in gal_types]
        if not gal or not probe:
            raise DataError(f"no {'gallery' if not gal else 'probe'} sequences: gallery types are "
                            f"{sorted(gal_types)} (-o gallery_types=...), found types {sorted({m[1] for m in meta})}")
        return gal, probe

    def evaluate(self, model, dataset, options):
        if isinstance(dataset, _TrainPairs):
            dataset = dataset.base
        emb, meta = self._embed_all(model, dataset)
        gal, probe = self._split(meta, options)
        dist = _distance(emb[probe], emb[gal])
        out = retrieval_metrics(dist, [meta[i][0] for i in probe], [meta[i][0] for i in gal])
        return {**out, "probes": len(probe), "gallery": len(gal)}

    def predict(self, model, input, dataset, save, options):
        if input:
            raise DataError("gait predict matches a probe of --dataset/--data against its gallery; give -o index=N, not a file")
        if dataset is None:
            raise DataError("predict needs --dataset or --data (a gallery to match against)")
        emb, meta = self._embed_all(model, dataset)
        gal, probe = self._split(meta, options)
        k = int(options.get("index", 0))
        if not 0 <= k < len(probe):
            raise DataError(f"probe index {k} is out of range (the set has {len(probe)} probes)")
        d = _distance(emb[probe[k]:probe[k] + 1], emb[gal])[0]
        order = torch.argsort(d)[:5].tolist()
        pm = meta[probe[k]]
        ranked = [{"id": meta[gal[j]][0], "type": meta[gal[j]][1], "view": meta[gal[j]][2], "distance": float(d[j])}
                  for j in order]
        res = {"probe": {"id": pm[0], "type": pm[1], "view": pm[2]}, "prediction": ranked[0]["id"],
               "correct": ranked[0]["id"] == pm[0], "top5": ranked}
        if save:
            plt = pyplot()
            items = [dataset[probe[k]]] + [dataset[gal[j]] for j in order]
            fig, axes = plt.subplots(1, len(items), figsize=(1.6 * len(items), 2.4))
            for ax, it, title in zip(axes, items, ["probe " + pm[0]] + [f"{r['id']} {r['distance']:.2f}" for r in ranked]):
                ax.imshow(it["sils"].mean(0).numpy(), cmap="gray")
                ax.set_title(title, fontsize=8)
                ax.set_axis_off()
            save_figure(fig, Path(save), dpi=120)
        return res
