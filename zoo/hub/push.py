"""Push: publish a checkpoint folder (from `zoo finetune` or `zoo convert`) with its model card, to
a folder hub or an endpoint, and say what to paste into registry.yaml.

A folder hub gets an atomic swap of the whole repo folder and the deterministic `folder_revision`;
an endpoint gets `create_repo` + `upload_folder` and the commit it reports."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from zoo._io import sha256_file
from zoo.card import make_model_card
from zoo.checkpoint import read_config
from zoo.errors import CheckpointError, HubError
from zoo.hub.revision import folder_revision, published_files
from zoo.hub.sources import PUBLIC_HUB, check_repo_id, is_url, push_target

# Never published: pickles (weights load from safetensors only) and training state.
UNPUBLISHED_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".lock")


def _stage(folder: Path, into: Path, meta: dict, repo: str) -> dict[str, str]:
    """Copy what gets published into `into`, write the model card, return {file: sha256}."""
    for name, path in published_files(folder).items():
        if name.lower().endswith(UNPUBLISHED_SUFFIXES) or name == "README.md":
            continue
        dst = into / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst)
    make_model_card({**meta, "repo": repo}).save(str(into / "README.md"))
    return {name: sha256_file(path) for name, path in published_files(into).items()}


def _publish_folder(stage: Path, target: Path) -> None:
    """Swap the staged repo in with renames, so readers see the old repo or the new one."""
    from filelock import FileLock

    key = hashlib.sha1(str(target.resolve()).encode()).hexdigest()[:16]
    with FileLock(str(Path(tempfile.gettempdir()) / f"zoo-push-{key}.lock")):
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        if target.exists():
            os.replace(target, old)
        os.replace(stage, target)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _no_xet(endpoint: str) -> Iterator[None]:
    """Uploads to a server without Xet storage need the plain LFS protocol."""
    from huggingface_hub import constants

    before = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = before or not endpoint.startswith(PUBLIC_HUB)
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = before


def _publish_url(stage: Path, endpoint: str, repo: str, message: str) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf

    api = HfApi(endpoint=endpoint)
    try:
        with _no_xet(endpoint):
            api.create_repo(repo, exist_ok=True)
            info = api.upload_folder(repo_id=repo, folder_path=str(stage), commit_message=message)
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = " (log in with `hf auth login` or set HF_TOKEN)" if status in (401, 403) else ""
        raise HubError(f"push to {endpoint}/{repo} failed: HTTP {status}{hint}") from None
    except OSError as exc:
        raise HubError(f"push to {endpoint}/{repo} failed: {exc}") from None
    return info.oid


def push(folder: str | Path, repo: str, *, hub: str | None = None) -> dict:
    """Publish a checkpoint folder (from `zoo finetune` or `zoo convert`) as repo `repo`.

    A folder hub gets an atomic copy at `<hub>/<repo>/` and the deterministic `folder_revision`;
    an endpoint gets `create_repo` + `upload_folder` and the commit it reports. README.md is
    rewritten with `make_model_card`. Returns the registry checkpoint entry to paste:
    {"tag": ..., "entry": {dataset, repo, revision, files, license, made_by, ...}}."""
    folder = Path(folder)
    check_repo_id(repo)
    meta = read_config(folder)
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder}: model.safetensors is missing")
    target = push_target(hub)
    if is_url(target):
        with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
            stage = Path(tmp) / "repo"
            stage.mkdir()
            files = _stage(folder, stage, meta, repo)
            revision = _publish_url(stage, target, repo, f"zoo push {meta.get('model')}")
    else:
        dest = Path(target) / repo
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = dest.with_name(f".{dest.name}.incoming-{uuid.uuid4().hex[:8]}")
        stage.mkdir()
        try:
            files = _stage(folder, stage, meta, repo)
            revision = folder_revision(stage)
            _publish_folder(stage, dest)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    entry = {
        "dataset": meta.get("dataset"),
        "repo": repo,
        "revision": revision,
        "files": files,
        "license": meta.get("license"),
        "made_by": meta.get("command"),
    }
    overrides = _config_overrides(meta)
    if overrides:
        entry["config"] = overrides
    for key in ("metrics", "eval_data"):
        if meta.get(key):
            entry[key] = meta[key]
    tag = meta.get("tag") or repo.split("/")[-1].split("-")[-1]
    return {"model": meta.get("model"), "tag": tag, "hub": target, "entry": entry}


def _config_overrides(meta: dict) -> dict:
    """The checkpoint's builder config minus what the registry entry already sets: the `config:`
    a checkpoint entry needs so that create_model rebuilds exactly this architecture."""
    import zoo.registry as registry

    entry = registry.load_registry().models.get(meta.get("model") or "")
    base = entry.config if entry else {}
    return {k: v for k, v in (meta.get("config") or {}).items() if base.get(k) != v}


def registry_snippet(pushed: dict) -> str:
    """The YAML to paste under the model's `checkpoints:` in registry.yaml."""
    import yaml

    body = {k: v for k, v in pushed["entry"].items() if v not in (None, {}, "")}
    return yaml.safe_dump({pushed["tag"]: body}, sort_keys=False, width=120)
