"""The model card: the README.md of a checkpoint folder and of its hub repo.

Written with huggingface_hub's ModelCard (imported inside `make_model_card`), so the metadata block
is what the Hub validates. Our own measured metrics go into `model-index`; the paper's reported
numbers only into the text, and always marked as the paper's."""

from __future__ import annotations

import json
import re
from typing import Any

# licence ids the Hub's metadata validator accepts; anything else is published as "other"
_HF_LICENSES = {
    "apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "cc0-1.0",
    "cc-by-2.0", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0",
    "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "gpl", "gpl-2.0", "gpl-3.0", "lgpl-2.1",
    "lgpl-3.0", "agpl-3.0", "mpl-2.0", "unlicense", "openrail", "bigscience-openrail-m",
    "creativeml-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "ecl-2.0", "epl-2.0", "wtfpl",
    "zlib", "isc", "other",
}


def _license_fields(license: str | None) -> dict:
    if not license:
        return {}
    norm = re.sub(r"[\s_]+", "-", license.strip().lower())
    if norm in _HF_LICENSES:
        return {"license": norm}
    return {"license": "other", "license_name": norm}


def _registry_entry(model: str | None):
    if not model:
        return None
    try:
        import zoo.registry as registry
        return registry.load_registry().models.get(model)
    except Exception:  # noqa: BLE001 - a card can be written without the registry
        return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def model_index(full: str, *, task: str | None, dataset: str | None, metrics: dict,
                split: str | None = "test", options: dict | None = None, dataset_name: str | None = None,
                source: str | None = None) -> list[dict]:
    """The Hugging Face `model-index` block (the Hub's schema, as data) for checkpoint `full`: our
    measured metrics on the eval data, `verified: false` (the Hub did not measure them). One
    definition for the card written at push/finetune and for `zoo verify`'s output. Only finite
    numbers are listed: the Hub's YAML has no NaN."""
    import math

    values = {k: v for k, v in (metrics or {}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    if not values:
        return []
    ds = {"name": dataset_name or dataset or "custom", "type": dataset or "custom"}
    if split:
        ds["split"] = split
    if options:
        ds["args"] = dict(options)
    result = {"task": {"type": task or "other", "name": task or "other"}, "dataset": ds,
              "metrics": [{"type": k, "name": f"{k} (ours: zoo eval)", "value": v, "verified": False}
                          for k, v in values.items()]}
    if source:   # the Hub wants a URL here; `zoo verify NAME` re-measures the numbers without one
        result["source"] = {"name": f"zoo verify {full}", "url": source}
    return [{"name": full, "results": [result]}]


def _provenance_lines(meta: dict) -> list[str]:
    """The card's provenance section: how, where and from what the weights were made, as recorded
    in the run folder's config.json when the run was made (zoo finetune / zoo convert)."""
    prov = meta.get("provenance") or {}
    train = meta.get("train") or {}
    if not prov and not meta.get("command") and not train:
        return []
    rows = []
    if meta.get("command"):
        rows.append(("command", f"`{meta['command']}`"))
    version = prov.get("zoo_version") or meta.get("zoo_version")
    if version or prov.get("zoo_commit"):
        rows.append(("zoo", " ".join(x for x in (f"{version}" if version else "",
                                                  f"(commit {prov['zoo_commit']})" if prov.get("zoo_commit") else "") if x)))
    data = prov.get("data") or {}
    if data:
        rows.append(("data", ", ".join(f"{k}: {_fmt_data(v)}" for k, v in data.items())))
    hw = prov.get("hardware") or {}
    if hw:
        rows.append(("hardware", ", ".join(f"{k}: {v}" for k, v in hw.items())))
    for key, label in (("python", "python"), ("torch", "torch")):
        if prov.get(key):
            rows.append((label, str(prov[key])))
    wall = prov.get("wall_seconds", train.get("wall_seconds"))
    if isinstance(wall, (int, float)):
        rows.append(("wall time", f"{wall:.1f} s ({wall / 60:.1f} min)"))
    for key, label in (("steps", "steps"), ("batch_size", "batch size"), ("lr", "learning rate"),
                       ("seed", "seed"), ("world_size", "processes")):
        if key in train:
            rows.append((label, _fmt(train[key])))
    if "final_loss" in train:
        rows.append(("final training loss", _fmt(train["final_loss"])))
    if prov.get("finished"):
        rows.append(("finished", str(prov["finished"])))
    lines = ["## Provenance", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return lines + [""]


def _fmt_data(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k} {str(v)[:16]}" for k, v in value.items())
    return _fmt(value)


def _curve_lines(points, plot: str | None) -> list[str]:
    """The learning curve the run measured (`-o eval_every=N`): its picture (the repo file `plot`)
    and its numbers."""
    if not points:
        return []
    keys = [k for k in points[-1] if k != "step" and isinstance(points[-1][k], (int, float))]
    lines = ["## Learning curve (measured during training by `zoo finetune -o eval_every=N`)", ""]
    if plot:
        lines += [f"![learning curve]({plot})", ""]
    lines += ["| step | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {p.get('step')} | " + " | ".join(_fmt(p[k]) if isinstance(p.get(k), (int, float)) else ""
                                                 for k in keys) + " |" for p in points]
    return lines + [""]


def make_model_card(meta: dict):
    """The README.md of a checkpoint repo, built with huggingface_hub's ModelCard.

    `meta` is a checkpoint's config.json (model, tag, task, dataset, config, metrics, eval_data,
    command, license, train, provenance), optionally with `model_index` (the data `model_index`
    returns, computed by the caller). Our metrics go into `model-index` (marked as measured by zoo,
    rendered by ModelCardData); the paper's numbers, from the registry, only into the text and
    marked as the paper's; the run's provenance into its own section."""
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    model = meta.get("model") or "model"
    tag = meta.get("tag")
    full = f"{model}.{tag}" if tag else model
    task = meta.get("task")
    dataset = meta.get("dataset")
    entry = _registry_entry(meta.get("model"))
    family = entry.family if entry else None
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))}
    eval_on = meta.get("eval_data") or dataset
    index = meta.get("model_index")
    if index is None:
        ev = (meta.get("provenance") or {}).get("eval") or {}
        index = model_index(full, task=task, dataset=dataset, metrics=metrics, split=ev.get("split", "test"),
                            options=ev.get("options"), dataset_name=eval_on)
    results = model_index_to_eval_results(index)[1] if index else None
    tags = [t for t in dict.fromkeys(["zoo", family, task]) if t]
    data = ModelCardData(model_name=full, library_name="zoo", tags=tags,
                         datasets=[dataset] if dataset else None, eval_results=results or None,
                         **_license_fields(meta.get("license")))

    lines = [f"# {full}", ""]
    if entry:
        lines += [entry.description, ""]
        paper = entry.paper
        ref = f"[{paper.title}](https://arxiv.org/abs/{paper.arxiv})" if paper.arxiv else paper.title
        lines.append(f"- **Paper**: {ref}" + (f", {paper.venue}" if paper.venue else ""))
        if paper.code:
            lines.append(f"- **Official code**: {paper.code}"
                         + (f" (licence: {paper.code_license})" if paper.code_license else ""))
    lines.append(f"- **Architecture**: `{model}`" + (f" ({family}, task `{task}`)" if family else
                                                   (f" (task `{task}`)" if task else "")))
    if dataset:
        lines.append(f"- **Trained on**: `{dataset}`")
    if meta.get("license"):
        lines.append(f"- **Weights licence**: {meta['license']}")
    if meta.get("config"):
        lines.append(f"- **Builder config**: `{json.dumps(meta['config'], sort_keys=True)}`")
    lines.append("")
    if meta.get("command"):
        lines += ["## How these weights were made", "", "```", str(meta["command"]), "```", ""]
    lines += _provenance_lines(meta)
    if metrics:
        lines += [f"## Our evaluation (measured by `zoo eval`"
                  + (f" on {eval_on}" if eval_on else "") + ")", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        lines.append("")
    lines += _curve_lines(meta.get("curve"), meta.get("curve_plot"))
    if entry and entry.reported:
        lines += ["## The paper's numbers (reported by the authors, not measured by us)", "",
                  "| metric | value | dataset | source |", "|---|---|---|---|"]
        lines += [f"| {r.metric} | {_fmt(r.value)} | {r.dataset or ''} | {r.source} |"
                  for r in entry.reported]
        lines.append("")
    lines += ["## Use", "", "```", f"zoo pull {full}"]
    if dataset:
        lines.append(f"zoo eval {full} --dataset {dataset}")
    lines += ["```", "", "```python", "import zoo", f"model = zoo.create_model(\"{full}\", pretrained=True)",
              "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
