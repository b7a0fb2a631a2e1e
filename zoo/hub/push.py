"""Push: publish a checkpoint folder (from `zoo finetune` or `zoo convert`) with its model card, to
a folder hub or an endpoint, and say what to paste into registry.yaml.

A folder hub gets an atomic swap of the whole repo folder and the deterministic `folder_revision`;
an endpoint gets `create_repo` + `upload_folder` and the commit it reports."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from zoo._io import atomic_write_text, sha256_file
from zoo.card import make_model_card
from zoo.checkpoint import CARD, CONFIG, CURVE, CURVE_PLOT, WEIGHTS, read_config
from zoo.errors import CheckpointError, HubError
from zoo.hub.revision import folder_revision
from zoo.hub.sources import PUBLIC_HUB, check_repo_id, is_url, push_target, redact, redact_hf_logs, token_warning

# What a checkpoint folder publishes: the format's own files (zoo.checkpoint). README.md is not
# copied but written anew as the model card. Everything else (training state, pickles, notes, links)
# stays behind and is reported as skipped.
REQUIRED = (CONFIG, WEIGHTS)
MARKER = ".zoo-published"   # written into every repo folder push creates; hidden, so never published


def _copy_regular(src: Path, dst: Path) -> None:
    """Copy a regular file without following a link, even one swapped in after the check."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(src, flags)
    except OSError as exc:
        raise CheckpointError(f"{src}: cannot be published ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise CheckpointError(f"{src}: not a regular file; refused")
        with open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)


def _curve_files(folder: Path) -> list[str]:
    """The run's learning curve (`zoo finetune -o eval_every=N`), regular files only: published
    beside the weights, so the card shows how the checkpoint got where it is."""
    return [n for n in (CURVE, CURVE_PLOT) if (folder / n).is_file() and not (folder / n).is_symlink()]


def _skipped(folder: Path) -> list[str]:
    """What push leaves behind: every entry of the folder except the format's files and hidden
    ones, without descending into links."""
    out, published = [], {CONFIG, WEIGHTS, CARD, *_curve_files(folder)}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in published:
            continue
        out.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
    return out


def _check_required(folder: Path) -> None:
    for name in REQUIRED:
        src = folder / name
        if src.is_symlink():
            raise CheckpointError(f"{src} is a symbolic link; push publishes only regular files, refused")
        if not src.is_file():
            raise CheckpointError(f"{folder}: {name} is missing")


def _stage(folder: Path, into: Path, repo: str, mark: bool) -> tuple[dict, dict[str, str]]:
    """Copy the checkpoint's own files into `into`, write the model card; (meta, {file: sha256})."""
    _check_required(folder)
    for name in REQUIRED:
        _copy_regular(folder / name, into / name)
    meta = read_config(into)   # the copy that is published, not the source that may change
    curve_files = _curve_files(folder)
    for name in curve_files:
        _copy_regular(folder / name, into / name)
    extra = {}
    if CURVE in curve_files:
        try:
            extra["curve"] = json.loads((into / CURVE).read_text())["points"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"{folder / CURVE} is not a learning curve zoo wrote; move it "
                                  f"out of the folder to publish the checkpoint") from None
        extra["curve_plot"] = CURVE_PLOT if CURVE_PLOT in curve_files else None
    make_model_card({**meta, "repo": repo, **extra}).save(str(into / CARD))
    files = {name: sha256_file(into / name) for name in (CARD, CONFIG, WEIGHTS, *curve_files)}
    if mark:   # folder hubs only: an endpoint keeps its own history
        atomic_write_text(into / MARKER, json.dumps({"repo": repo, "files": sorted(files)}) + "\n")
    return meta, dict(sorted(files.items()))


def _replaceable(dest: Path, repo: str) -> str | None:
    """Why the folder at `dest` must not be replaced, or None when push may swap it out: it is
    absent, or a repo zoo published (its marker names this repo and it holds nothing else), or
    a repo from before markers that holds only checkpoint files."""
    if not os.path.lexists(dest):
        return None
    if dest.is_symlink() or not dest.is_dir():
        return "exists and is not a repo folder"
    names = set(os.listdir(dest))
    marker = dest / MARKER
    if MARKER in names:
        try:
            info = json.loads(marker.read_text())
            listed = set(info["files"]) if info.get("repo") == repo else None
        except (OSError, ValueError, KeyError, TypeError):
            listed = None
        if listed is None:
            return "holds a publication marker for another repo"
        extra = sorted(names - listed - {MARKER})
        return f"holds files zoo did not publish ({', '.join(extra[:3])})" if extra else None
    own = {CONFIG, WEIGHTS, CARD, ".gitattributes"}
    if names <= own and all((dest / n).is_file() and not (dest / n).is_symlink() for n in names):
        return None
    return "was not published by zoo push"


def _publish_folder(stage: Path, target: Path, repo: str) -> None:
    """Swap the staged repo in with renames, so readers see the old repo or the new one. Only a
    repo zoo itself published is ever replaced (checked under the lock)."""
    from filelock import FileLock

    key = hashlib.sha1(str(target.resolve()).encode()).hexdigest()[:16]
    with FileLock(str(Path(tempfile.gettempdir()) / f"zoo-push-{key}.lock")):
        why = _replaceable(target, repo)
        if why:
            raise HubError(f"{target} {why}; refusing to replace it (remove it yourself or choose "
                           f"another --repo/--hub)")
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

    redact_hf_logs()
    api = HfApi(endpoint=endpoint)
    warning = token_warning(endpoint)
    if warning:
        sys.stderr.write(warning + "\n")
        sys.stderr.flush()
    where = redact(f"{endpoint}/{repo}")
    try:
        with _no_xet(endpoint):
            api.create_repo(repo, exist_ok=True)
            info = api.upload_folder(repo_id=repo, folder_path=str(stage), commit_message=message)
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = " (log in with `hf auth login` or set HF_TOKEN)" if status in (401, 403) else ""
        raise HubError(f"push to {where} failed: HTTP {status}{hint}") from None
    except Exception as exc:  # noqa: BLE001 - connection errors of every kind: one line, no traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(redact(f"push to {where} failed: {text}")) from None
    return info.oid


def push(folder: str | Path, repo: str, *, hub: str | None = None) -> dict:
    """Publish a checkpoint folder (from `zoo finetune` or `zoo convert`) as repo `repo`.

    A folder hub gets an atomic copy at `<hub>/<repo>/` and the deterministic `folder_revision`;
    an endpoint gets `create_repo` + `upload_folder` and the commit it reports. README.md is
    rewritten with `make_model_card`. Only the format's files are published (config.json,
    model.safetensors, the card); links are never followed. A folder hub's existing repo is replaced
    only when zoo published it, and never when it is (or holds) the folder being pushed.
    Returns the registry checkpoint entry to paste, the hub (credentials redacted) and what was
    left behind: {"model", "tag", "hub", "entry": {dataset, repo, revision, files, ...}, "skipped"}."""
    folder = Path(folder)
    check_repo_id(repo)
    read_config(folder)   # one clear line for a folder that is not a checkpoint
    _check_required(folder)
    target = push_target(hub)
    skipped = _skipped(folder)
    if is_url(target):
        with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
            stage = Path(tmp) / "repo"
            stage.mkdir()
            meta, files = _stage(folder, stage, repo, mark=False)
            revision = _publish_url(stage, target, repo, f"zoo push {meta.get('model')}")
    else:
        dest = Path(target) / repo
        src, where = folder.resolve(), Path(os.path.abspath(dest))
        if where.resolve() == src or src.is_relative_to(where.resolve()) or src.is_relative_to(where):
            raise HubError(f"{dest} is the folder being pushed or holds it; refusing to replace it "
                           f"(push into another --hub)")
        hub_root = Path(target)
        if hub_root.exists() and not hub_root.is_dir():
            raise HubError(f"--hub {target} is a file, not a folder of repos")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:   # a file on the way, a read-only folder, a full disk
            raise HubError(f"cannot create {dest.parent} in the hub {target}: {exc.strerror or exc}") from None
        why = _replaceable(dest, repo)   # refuse before any work; checked again under the lock
        if why:
            raise HubError(f"{dest} {why}; refusing to replace it (remove it yourself or choose "
                           f"another --repo/--hub)")
        stage = dest.with_name(f".{dest.name}.incoming-{uuid.uuid4().hex[:8]}")
        try:
            stage.mkdir()
            meta, files = _stage(folder, stage, repo, mark=True)
            revision = folder_revision(stage)
            _publish_folder(stage, dest, repo)
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise HubError(f"cannot write {dest} in the hub {target}: {exc.strerror or exc}") from None
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
    return {"model": meta.get("model"), "tag": tag, "hub": redact(target), "entry": entry,
            "skipped": skipped}


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
