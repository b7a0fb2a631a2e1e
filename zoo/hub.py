"""The checkpoint hub: where weights come from, and why they can be trusted.

A *source* is either a Hugging Face Hub-compatible endpoint (the public Hub, a company mirror, an
olah instance) reached only through `huggingface_hub`, or a plain folder of repos in the same
layout (`<folder>/<org>/<name>/{config.json, model.safetensors, README.md}`).

Trust comes from the registry, not from the source: every file of a checkpoint is pinned by sha256
in `registry.yaml`, and `pull` checks each one (huggingface_hub itself only checks sizes). A file
that does not match is fetched once more and otherwise refused, so any mirror is as good as the
origin.

Folder hubs get a deterministic revision: the commit sha of the git repository that
`build_git_repo` makes from the folder (weights stored as git-LFS pointers, a single root commit by
a fixed author at a fixed date). `folder_revision` computes the same sha without git, so the sha in
the registry is exactly what an olah mirror built from `hub/` serves.

Imports stay light: huggingface_hub is imported inside the functions that need it, because
`HF_ENDPOINT`, `HF_HUB_OFFLINE` and `HF_HUB_CACHE` are read when it is first imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterator

from zoo.errors import CheckpointError, HubError, UnknownNameError

PUBLIC_HUB = "https://huggingface.co"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 8 * 1024 * 1024

# ---- the deterministic revision rule ------------------------------------------------------------
# Files stored as git-LFS pointers: weights by suffix, and anything large. Text stays a git blob.
LFS_SUFFIXES = (".safetensors", ".onnx", ".pt2", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".npz",
                ".npy", ".gguf", ".msgpack", ".tflite", ".zip", ".tar", ".gz")
LFS_MIN_BYTES = 10 * 1024 * 1024
GIT_AUTHOR = "zoo <zoo@localhost>"
GIT_DATE = "946684800 +0000"            # 2000-01-01T00:00:00Z: fixed, so equal content -> equal sha
GIT_MESSAGE = "zoo checkpoint\n"
GIT_BRANCH = "main"
# Never published: pickles (weights load from safetensors only) and training state.
UNPUBLISHED_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".lock")


# ================================================================================================
# sources
# ================================================================================================

def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def project_hub_dir() -> Path:
    """The project's own `hub/` folder: next to the `zoo` package in a source checkout."""
    return Path(__file__).resolve().parent.parent / "hub"


def default_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or PUBLIC_HUB).rstrip("/")


def sources(hub: str | None = None) -> list[str]:
    """Where checkpoints are looked for, in order.

    `hub` (the CLI's --hub) or `$ZOO_HUB`: a comma-separated list of folders and URLs. Otherwise the
    project's own `hub/` folder when present, then `$HF_ENDPOINT` (the public Hub when unset)."""
    spec = hub if hub is not None else os.environ.get("ZOO_HUB")
    if spec is not None and spec.strip():
        out = []
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            out.append(item.rstrip("/") if is_url(item) else str(Path(item).expanduser()))
        return out
    out = []
    if project_hub_dir().is_dir():
        out.append(str(project_hub_dir()))
    out.append(default_endpoint())
    return out


# ================================================================================================
# hashing and the folder revision
# ================================================================================================

def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def published_files(folder: str | Path) -> dict[str, Path]:
    """The files a folder publishes: every regular file, recursively, except hidden ones.
    Keys are POSIX paths relative to the folder, sorted."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        out[rel.as_posix()] = path
    return out


def is_lfs(name: str, size: int) -> bool:
    return name.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_BYTES


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _git_object(kind: str, payload: bytes) -> tuple[str, bytes]:
    """(sha1 hex, the object's bytes as git stores them before compression)."""
    raw = f"{kind} {len(payload)}\0".encode() + payload
    return hashlib.sha1(raw).hexdigest(), raw


def _git_objects(folder: Path) -> tuple[str, dict[str, bytes], dict[str, Path]]:
    """Every git object of the folder's single root commit.

    Returns (commit sha, {sha: raw object}, {lfs sha256: file path})."""
    objects: dict[str, bytes] = {}
    lfs: dict[str, Path] = {}
    tree: dict = {}
    files = published_files(folder)
    lfs_names = []
    for name, path in files.items():
        size = path.stat().st_size
        if is_lfs(name, size):
            digest = sha256_file(path)
            lfs[digest] = path
            payload = lfs_pointer(digest, size)
            lfs_names.append(name)
        else:
            payload = path.read_bytes()
        sha, raw = _git_object("blob", payload)
        objects[sha] = raw
        node = tree
        *dirs, base = name.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[base] = sha
    if lfs_names:
        # what git-lfs writes, so that a plain `git clone` + `git lfs pull` of a mirror works too
        attrs = "".join(f"{n} filter=lfs diff=lfs merge=lfs -text\n" for n in lfs_names).encode()
        sha, raw = _git_object("blob", attrs)
        objects[sha] = raw
        tree[".gitattributes"] = sha

    def write_tree(node: dict) -> str:
        entries = []
        for name, value in node.items():
            if isinstance(value, dict):
                entries.append((name.encode() + b"/", b"40000 " + name.encode(), write_tree(value)))
            else:
                entries.append((name.encode(), b"100644 " + name.encode(), value))
        entries.sort(key=lambda e: e[0])  # git orders a tree by name, directories as "name/"
        payload = b"".join(head + b"\0" + bytes.fromhex(sha) for _, head, sha in entries)
        sha, raw = _git_object("tree", payload)
        objects[sha] = raw
        return sha

    if not files:
        raise CheckpointError(f"{folder}: no files to publish")
    root = write_tree(tree)
    commit = (f"tree {root}\nauthor {GIT_AUTHOR} {GIT_DATE}\ncommitter {GIT_AUTHOR} {GIT_DATE}\n\n"
              f"{GIT_MESSAGE}").encode()
    sha, raw = _git_object("commit", commit)
    objects[sha] = raw
    return sha, objects, lfs


def folder_revision(folder: str | Path) -> str:
    """The revision of a folder repo: the sha of the commit `build_git_repo` makes from it.

    Rule: one root commit on branch `main`; every published file (hidden files skipped) at its
    relative path, mode 100644; weights (by suffix) and files of 10 MiB or more as git-LFS pointers
    plus a `.gitattributes` naming them; author and committer `zoo <zoo@localhost>` at
    946684800 +0000; message `zoo checkpoint`. Needs no git binary."""
    return _git_objects(Path(folder))[0]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_git_repo(folder: str | Path, repo_dir: str | Path) -> str:
    """Write the folder as a git repository (what olah's `mirrors-path` serves) and return its
    revision, which equals `folder_revision(folder)`.

    Objects are added to an existing repository, so revisions published earlier stay fetchable
    by sha; `main` moves to the new commit. Written in Python (loose objects, LFS objects under
    `.git/lfs/objects/`), so no git or git-lfs binary is needed to build it."""
    folder, repo_dir = Path(folder), Path(repo_dir)
    sha, objects, lfs = _git_objects(folder)
    git = repo_dir / ".git"
    for sub in ("objects", "refs/heads", "refs/tags", "lfs/objects"):
        (git / sub).mkdir(parents=True, exist_ok=True)
    if not (git / "HEAD").exists():
        _write_atomic(git / "HEAD", f"ref: refs/heads/{GIT_BRANCH}\n".encode())
        _write_atomic(git / "config", b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
                                      b"\tbare = false\n")
    for obj, raw in objects.items():
        path = git / "objects" / obj[:2] / obj[2:]
        if not path.exists():
            _write_atomic(path, zlib.compress(raw))
    for digest, src in lfs.items():
        dst = git / "lfs" / "objects" / digest[:2] / digest[2:4] / digest
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{digest}.{uuid.uuid4().hex[:8]}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    _write_atomic(git / "refs" / "heads" / GIT_BRANCH, f"{sha}\n".encode())
    return sha


def hub_repos(hub_dir: str | Path) -> dict[str, Path]:
    """The repos of a folder hub: `<org>/<name>` directories that hold at least one file."""
    hub_dir = Path(hub_dir)
    out = {}
    if not hub_dir.is_dir():
        return out
    for org in sorted(p for p in hub_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for repo in sorted(p for p in org.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if published_files(repo):
                out[f"{org.name}/{repo.name}"] = repo
    return out


def build_mirror(hub_dir: str | Path, mirrors_dir: str | Path) -> dict[str, str]:
    """Every repo of a folder hub as git repos under `<mirrors>/models/<org>/<name>` (olah's
    `mirrors-path` layout). Returns {repo id: revision}."""
    return {repo: build_git_repo(path, Path(mirrors_dir) / "models" / repo)
            for repo, path in hub_repos(hub_dir).items()}


# ================================================================================================
# pull
# ================================================================================================

class _Mismatch(HubError):
    """A file whose sha256 is not the registry pin (after the one re-fetch)."""


def _mismatch(repo: str, revision: str, name: str, want: str, got: str, where: str) -> _Mismatch:
    return _Mismatch(f"{repo}@{revision[:12]}: '{name}' from {where} has sha256 {got}, the registry "
                     f"pins {want}; refused")


def _check_repo_id(repo: str) -> None:
    if not REPO_ID.match(repo):
        raise HubError(f"'{repo}' is not a repo id of the form ORG/NAME")


def _pull_folder(root: Path, repo: str, revision: str, files: dict[str, str]) -> Path:
    """Verify in place: a folder hub holds the files as they are."""
    folder = root / repo
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist")
    missing = [n for n in files if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}")
    for name, want in files.items():
        got = sha256_file(folder / name)
        if got != want:
            raise _mismatch(repo, revision, name, want, got, str(folder))
    return folder


def hf_cache_dir() -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.upper() in {"1", "ON", "YES", "TRUE"}


def _repo_folder(cache_dir: Path, repo: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name
    return cache_dir / repo_folder_name(repo_id=repo, repo_type="model")


@contextlib.contextmanager
def _repo_lock(cache_dir: Path, repo: str) -> Iterator[None]:
    """One zoo process at a time verifies and repairs a repo's cache entry. huggingface_hub keeps
    its own per-blob locks in the same folder; this name is distinct, so the two never deadlock."""
    from filelock import FileLock
    from huggingface_hub.file_download import repo_folder_name

    lock = cache_dir / ".locks" / repo_folder_name(repo_id=repo, repo_type="model") / "zoo-pull.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        yield


def _evict(pointer: Path, blobs: Path) -> None:
    """Forget a cached file: the blob AND the snapshot link. Deleting only the blob leaves the
    link, and `force_download` does not re-point an existing link when the ETag changes.
    Only a blob inside this repo's `blobs/` is deleted, whatever the link points to."""
    blob = Path(os.path.realpath(pointer))
    targets = [pointer] + ([blob] if blob.parent == Path(os.path.realpath(blobs)) else [])
    for path in targets:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clean_stale_partials(cache_dir: Path, repo: str) -> None:
    """Remove temp files of downloads that died (killed process, power loss). A partial file is
    stale when nobody holds huggingface_hub's lock on its blob."""
    from filelock import FileLock, Timeout
    from huggingface_hub.file_download import repo_folder_name

    blobs = _repo_folder(cache_dir, repo) / "blobs"
    if not blobs.is_dir():
        return
    locks = cache_dir / ".locks" / repo_folder_name(repo_id=repo, repo_type="model")
    for partial in blobs.glob("*.incomplete"):
        etag = partial.name.split(".")[0]
        lock = FileLock(str(locks / f"{etag}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a download is running right now
        try:
            partial.unlink(missing_ok=True)
        finally:
            lock.release()


def _silent_tqdm():
    from huggingface_hub.utils import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _why_not_found(endpoint: str, repo: str, revision: str, name: str) -> str:
    """Tell a missing repo, a missing revision and a missing file apart. Mirrors differ in how
    they answer (olah says 401 "repo not found" for an unknown branch), so ask: refs, then paths."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    try:
        refs = api.list_repo_refs(repo)
    except Exception:  # noqa: BLE001 - any failure here means the repo is not reachable as such
        return f"repo '{repo}' not found at {endpoint} (or it is private or gated)"
    known = ", ".join([b.name for b in refs.branches] + [t.name for t in refs.tags]) or "no refs"
    try:
        infos = api.get_paths_info(repo, [name], revision=revision)
    except Exception:  # noqa: BLE001
        return f"revision '{revision}' not found in '{repo}' at {endpoint} (it has {known})"
    if not infos:
        return f"'{name}' not found in {repo}@{revision[:12]} at {endpoint}"
    return f"{endpoint} refused {repo}@{revision[:12]} '{name}'"


def _explain_http(exc: Exception, endpoint: str, repo: str, revision: str, name: str) -> str:
    """One line for what huggingface_hub raised."""
    from huggingface_hub import errors as hf

    # LocalEntryNotFoundError (not cached, server unreachable) is an EntryNotFoundError too
    if isinstance(exc, (hf.RepositoryNotFoundError, hf.RevisionNotFoundError, hf.RemoteEntryNotFoundError)):
        return _why_not_found(endpoint, repo, revision, name)
    if isinstance(exc, hf.OfflineModeIsEnabled) or (isinstance(exc, hf.LocalEntryNotFoundError)
                                                     and _offline()):
        return f"HF_HUB_OFFLINE is set and {repo}@{revision[:12]} '{name}' is not in the cache"
    if isinstance(exc, hf.LocalEntryNotFoundError):
        return f"cannot reach {endpoint} and {repo}@{revision[:12]} '{name}' is not in the cache"
    if isinstance(exc, hf.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return f"{endpoint} answered HTTP {status} for {repo}@{revision[:12]} '{name}'"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"download of {repo}@{revision[:12]} '{name}' from {endpoint} failed: {text}"


def _pull_url(endpoint: str, repo: str, revision: str, files: dict[str, str], progress: bool,
              cache_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    pinned = bool(COMMIT_SHA.match(revision))
    offline = _offline()
    tqdm_class = None if progress else _silent_tqdm()
    blobs = _repo_folder(cache_dir, repo) / "blobs"
    root: Path | None = None

    def located(pointer: str, name: str) -> Path:
        path = Path(pointer)
        return path.parents[len(Path(name).parts) - 1]

    def download(name: str) -> Path:
        try:
            return Path(hf_hub_download(repo, name, revision=revision, endpoint=endpoint,
                                        cache_dir=str(cache_dir), tqdm_class=tqdm_class))
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
            from huggingface_hub import errors as hf
            notfound = isinstance(exc, (hf.RepositoryNotFoundError, hf.RevisionNotFoundError,
                                        hf.RemoteEntryNotFoundError))
            message = _explain_http(exc, endpoint, repo, revision, name)
            raise (FileNotFoundError(message) if notfound else HubError(message)) from None

    with _repo_lock(cache_dir, repo):
        todo = []
        for name, want in files.items():
            cached = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir), revision=revision) \
                if (pinned or offline) else None
            if isinstance(cached, str) and os.path.isfile(cached):
                if sha256_file(cached) == want:
                    root = located(cached, name)
                    continue
                _evict(Path(cached), blobs)  # tampered or rotted in the cache: fetch again
            todo.append(name)
        if todo and offline:
            raise HubError(f"HF_HUB_OFFLINE is set and {repo}@{revision[:12]} is not fully in the "
                           f"cache (missing {', '.join(todo)}); pull it once online")
        for name in todo:
            want = files[name]
            path = download(name)
            got = sha256_file(path)
            if got != want:
                _evict(path, blobs)
                path = download(name)  # the one re-fetch
                got = sha256_file(path)
                if got != want:
                    _evict(path, blobs)  # nothing unverified stays in the cache
                    raise _mismatch(repo, revision, name, want, got, endpoint)
            root = located(str(path), name)
        _clean_stale_partials(cache_dir, repo)
    assert root is not None
    return root


def pull(repo: str, revision: str, files: dict[str, str], *, hub: str | None = None,
         progress: bool = True, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding `files`, each checked against its sha256 pin.

    Sources are tried in order (see `sources`); the first that holds every file with the right
    hash wins. URL sources download into the standard Hugging Face cache (a pinned revision
    already there costs no request); folder sources are verified in place."""
    _check_repo_id(repo)
    if not files:
        raise HubError(f"{repo}: the registry pins no files for this checkpoint")
    cache = Path(cache_dir) if cache_dir else hf_cache_dir()
    reasons, mismatch = [], None
    for source in sources(hub):
        try:
            if is_url(source):
                return _pull_url(source, repo, revision, files, progress, cache)
            return _pull_folder(Path(source), repo, revision, files)
        except _Mismatch as err:
            mismatch = mismatch or err
            reasons.append(str(err))
        except (FileNotFoundError, HubError) as err:
            reasons.append(str(err))
    if mismatch is not None:
        raise HubError(str(mismatch))
    if len(reasons) == 1:
        raise HubError(reasons[0])
    raise HubError(f"{repo}@{revision[:12]} is in none of the sources: " + "; ".join(reasons))


def pull_model(name: str, *, hub: str | None = None, progress: bool = True) -> Path:
    """Pull the checkpoint `name` or `name.tag` names in the registry (the default tag for a bare
    name)."""
    from zoo import registry

    model, entry, tag = registry.resolve(name)
    if tag is None:
        why = entry.weights_note or "none has been trained or converted yet"
        raise CheckpointError(f"model '{model}' has no checkpoint to pull: {why}")
    ck = entry.checkpoints[tag]
    return pull(ck.repo, ck.revision, ck.files, hub=hub, progress=progress)


# ================================================================================================
# model card
# ================================================================================================

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
        from zoo import registry
        return registry.load_registry().models.get(model)
    except Exception:  # noqa: BLE001 - a card can be written without the registry
        return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def make_model_card(meta: dict):
    """The README.md of a checkpoint repo, built with huggingface_hub's ModelCard.

    `meta` is a checkpoint's config.json (model, tag, task, dataset, config, metrics, eval_data,
    command, license). Our metrics go into `model-index` (marked as measured by zoo); the paper's
    numbers, from the registry, only into the text and marked as the paper's."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model = meta.get("model") or "model"
    tag = meta.get("tag")
    full = f"{model}.{tag}" if tag else model
    task = meta.get("task")
    dataset = meta.get("dataset")
    entry = _registry_entry(meta.get("model"))
    family = entry.family if entry else None
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))}
    eval_on = meta.get("eval_data") or dataset
    results = [EvalResult(task_type=task or "other", dataset_type=dataset or "custom",
                          dataset_name=eval_on or "custom", metric_type=k, metric_value=v,
                          metric_name=f"{k} (ours: zoo eval)") for k, v in metrics.items()]
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
    if metrics:
        lines += [f"## Our evaluation (measured by `zoo eval`"
                  + (f" on {eval_on}" if eval_on else "") + ")", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        lines.append("")
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


# ================================================================================================
# push
# ================================================================================================

def _push_target(hub: str | None) -> str:
    if hub is not None and hub.strip():
        return sources(hub)[0]
    if os.environ.get("ZOO_HUB", "").strip():
        return sources(None)[0]
    if project_hub_dir().is_dir():
        return str(project_hub_dir())
    raise HubError("where to? give --hub FOLDER|URL (or set ZOO_HUB)")


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
    from zoo.checkpoint import read_config

    folder = Path(folder)
    _check_repo_id(repo)
    meta = read_config(folder)
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder}: model.safetensors is missing")
    target = _push_target(hub)
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
    from zoo import registry
    entry = registry.load_registry().models.get(meta.get("model") or "")
    base = entry.config if entry else {}
    return {k: v for k, v in (meta.get("config") or {}).items() if base.get(k) != v}


def registry_snippet(pushed: dict) -> str:
    """The YAML to paste under the model's `checkpoints:` in registry.yaml."""
    import yaml

    body = {k: v for k, v in pushed["entry"].items() if v not in (None, {}, "")}
    return yaml.safe_dump({pushed["tag"]: body}, sort_keys=False, width=120)


# ================================================================================================
# cache
# ================================================================================================

def _pins() -> dict[str, list[tuple[str, str, dict[str, str]]]]:
    """repo id -> [(name.tag, revision, files)] from the registry."""
    from zoo import registry

    out: dict[str, list] = {}
    for model, entry in registry.load_registry().models.items():
        for tag, ck in entry.checkpoints.items():
            out.setdefault(ck.repo, []).append((f"{model}.{tag}", ck.revision, ck.files))
    return out


def _pin_for(pins: dict, repo: str, commit: str, refs) -> tuple[str, dict[str, str]] | None:
    for name, revision, files in pins.get(repo, []):
        if revision == commit or revision in refs:
            return name, files
    return None


def _scan(cache_dir: Path | None):
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(cache_dir)
    except CacheNotFound:
        return None


def _cached_repos(cache_dir: str | Path | None, wanted: set[str] | None = None):
    """(repo, [(revision, registry pin or None), ...]) for every cached model repo, in a stable order."""
    scan = _scan(Path(cache_dir) if cache_dir else None)
    if scan is None:
        return
    pins = _pins()
    for repo in sorted(scan.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or (wanted is not None and repo.repo_id not in wanted):
            continue
        yield repo, [(rev, _pin_for(pins, repo.repo_id, rev.commit_hash, rev.refs))
                     for rev in sorted(repo.revisions, key=lambda r: r.commit_hash)]


def cache_ls(cache_dir: str | Path | None = None) -> list[dict]:
    """Every cached model revision, named by the registry checkpoint it holds when it holds one."""
    return [{"name": pin[0] if pin else None, "repo": repo.repo_id, "revision": rev.commit_hash,
             "refs": sorted(rev.refs), "files": rev.nb_files, "size": rev.size_on_disk,
             "path": str(rev.snapshot_path)}
            for repo, revisions in _cached_repos(cache_dir) for rev, pin in revisions]


def _select(name: str | None) -> set[str] | None:
    """Repo ids a cache command applies to: a model name (all its checkpoints), `name.tag`, or
    a repo id. None means all."""
    if name is None:
        return None
    if "/" in name:
        return {name}
    from zoo import registry

    reg = registry.load_registry()
    model, _, tag = name.partition(".")
    if model not in reg.models:
        raise UnknownNameError("model", name, registry.all_names(reg))
    entry = reg.models[model]
    if tag and tag not in entry.checkpoints:
        raise UnknownNameError(f"checkpoint tag of '{model}'", tag, list(entry.checkpoints))
    cks = [entry.checkpoints[tag]] if tag else list(entry.checkpoints.values())
    return {ck.repo for ck in cks}


def cache_verify(name: str | None = None, cache_dir: str | Path | None = None) -> list[dict]:
    """sha256 of every cached file against the registry pin.

    One row per file: status `ok`, `mismatch` (expected/actual given), `missing` (pinned, not
    cached), or for revisions the registry does not pin: `ok`/`mismatch` against the blob's own
    name when that is a sha256 (LFS files), else `unpinned`. Also `partial` rows for temp files
    of interrupted downloads."""
    rows = []
    for repo, revisions in _cached_repos(cache_dir, _select(name)):
        for rev, pin in revisions:
            label = pin[0] if pin else None
            pinned_files = pin[1] if pin else {}
            seen = set()
            for f in sorted(rev.files, key=lambda f: f.file_name):
                rel = f.file_path.relative_to(rev.snapshot_path).as_posix()
                seen.add(rel)
                row = {"name": label, "repo": repo.repo_id, "revision": rev.commit_hash, "file": rel}
                if not f.blob_path.is_file():
                    rows.append({**row, "status": "missing", "expected": pinned_files.get(rel)})
                    continue
                actual = sha256_file(f.blob_path)
                expected = pinned_files.get(rel)
                if expected is None and re.fullmatch(r"[0-9a-f]{64}", f.blob_path.name):
                    expected = f.blob_path.name  # an LFS blob is named by its sha256
                if expected is None:
                    rows.append({**row, "status": "unpinned", "actual": actual})
                else:
                    rows.append({**row, "status": "ok" if actual == expected else "mismatch",
                                 "expected": expected, "actual": actual})
            for rel in sorted(set(pinned_files) - seen):
                rows.append({"name": label, "repo": repo.repo_id, "revision": rev.commit_hash,
                             "file": rel, "status": "missing", "expected": pinned_files[rel]})
        for blob in sorted((repo.repo_path / "blobs").glob("*.incomplete")):
            rows.append({"name": None, "repo": repo.repo_id, "revision": None, "file": blob.name,
                         "status": "partial"})
    return rows


def cache_rm(name: str, cache_dir: str | Path | None = None) -> dict:
    """Delete every cached revision of the repos `name` selects (model, name.tag or repo id)."""
    wanted = _select(name)
    scan = _scan(Path(cache_dir) if cache_dir else None)
    hashes, removed = [], []
    if scan is not None:
        for repo in scan.repos:
            if repo.repo_type == "model" and repo.repo_id in wanted:
                for rev in repo.revisions:
                    hashes.append(rev.commit_hash)
                    removed.append({"repo": repo.repo_id, "revision": rev.commit_hash})
    if not hashes:
        return {"removed": [], "freed": 0}
    strategy = scan.delete_revisions(*hashes)
    strategy.execute()
    return {"removed": removed, "freed": strategy.expected_freed_size}


# ================================================================================================
# `python -m zoo.hub mirror HUB_DIR MIRRORS_DIR`: serve a folder hub with olah
# ================================================================================================

def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zoo.hub")
    sub = parser.add_subparsers(dest="cmd", required=True)
    mirror = sub.add_parser("mirror", help="write a folder hub as git repos for olah's mirrors-path")
    mirror.add_argument("hub_dir")
    mirror.add_argument("mirrors_dir")
    rev = sub.add_parser("revision", help="print the deterministic revision of a repo folder")
    rev.add_argument("folder")
    args = parser.parse_args(argv)
    if args.cmd == "mirror":
        for repo, sha in build_mirror(args.hub_dir, args.mirrors_dir).items():
            print(f"{repo} {sha}")
    else:
        print(folder_revision(args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
