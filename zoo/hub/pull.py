"""Pull: a checkpoint's files from the first source that holds them all, each checked against its
sha256 pin in the registry.

Trust comes from the registry, not from the source: huggingface_hub itself only checks sizes, so
every file is hashed here. A file that does not match is fetched once more and otherwise refused
(and evicted from the cache), so any mirror is as good as the origin.

huggingface_hub is imported inside the functions: `HF_ENDPOINT`, `HF_HUB_OFFLINE` and
`HF_HUB_CACHE` are read when it is first imported."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from zoo._io import sha256_file
from zoo.errors import CheckpointError, HubError
from zoo.hub.cache import hf_cache_dir, mark_used, offline, repo_folder
from zoo.hub.sources import check_file_names, check_repo_id, is_url, redact, redact_hf_logs, send_token_on_pull, sources

COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


class _Mismatch(HubError):
    """A file whose sha256 is not the registry pin (after the one re-fetch)."""


def _mismatch(repo: str, revision: str, name: str, want: str, got: str, where: str) -> _Mismatch:
    return _Mismatch(f"{repo}@{revision[:12]}: '{name}' from {where} has sha256 {got}, the registry "
                     f"pins {want}; refused")


def _copy_verified(src: Path, dst: Path) -> str:
    """Copy `src` to `dst` while hashing the very bytes written; returns their sha256. What is later
    loaded is this copy, so a file swapped in the source after the check is never read."""
    digest = hashlib.sha256()
    # a regular file swapped for a link after the check is not followed
    fd = os.open(src, os.O_RDONLY if src.is_symlink() else os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fin, open(dst, "wb") as fout:
        while True:
            chunk = fin.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def _link(snapshot: Path, name: str, blob: Path) -> None:
    """Point `snapshot/name` at `blob` the way the Hugging Face cache does (a relative link),
    replacing an older link atomically; a copy where links are not possible."""
    dst = snapshot / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.zoo-{uuid.uuid4().hex[:8]}")
    try:
        os.symlink(os.path.relpath(blob, dst.parent), tmp)
    except OSError:
        shutil.copyfile(blob, tmp)
    os.replace(tmp, dst)


def _pull_folder(root: Path, repo: str, revision: str, files: dict[str, str], cache_dir: Path) -> Path:
    """A folder hub's files are copied into the Hugging Face cache while being hashed (blobs named
    by their sha256, a snapshot of links), and the snapshot is what gets loaded: a folder that
    others can write to cannot swap a file between the check and the load."""
    from zoo.hub.revision import folder_revision, link_allowed

    folder = root / repo
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist")
    missing = [n for n in files if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}")
    for name in files:
        if (folder / name).is_symlink() and not link_allowed(folder / name, folder):
            raise HubError(f"{folder / name} is a link out of the repo folder; refused")
    if any(want is None for want in files.values()):
        # unpinned (--trust-unpinned): a folder holds one revision; take it only if it is the one asked
        held = folder_revision(folder)
        if revision not in (held, "main"):
            raise FileNotFoundError(f"{folder} holds revision {held[:12]}, not {revision}")
    entry = repo_folder(cache_dir, repo)
    blobs = entry / "blobs"
    with _repo_lock(cache_dir, repo):
        try:
            blobs.mkdir(parents=True, exist_ok=True)
            files = dict(files)
            for name, want in list(files.items()):
                tmp = blobs / f"{want or 'unpinned'}.zoo-{uuid.uuid4().hex[:8]}.incomplete"
                try:
                    got = _copy_verified(folder / name, tmp)
                    if want is not None and got != want:
                        raise _mismatch(repo, revision, name, want, got, str(folder))
                    os.replace(tmp, blobs / got)
                    files[name] = got
                finally:
                    tmp.unlink(missing_ok=True)
            snapshots = entry / "snapshots"
            if COMMIT_SHA.match(revision):
                name = revision
            else:   # a branch or tag: name the snapshot by the folder's real revision
                scratch = snapshots / f".zoo-{uuid.uuid4().hex[:8]}"
                try:
                    for f, want in files.items():
                        _link(scratch, f, blobs / want)
                    name = folder_revision(scratch)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            snapshot = snapshots / name
            for f, want in files.items():
                _link(snapshot, f, blobs / want)
        except OSError as exc:
            raise HubError(f"cannot copy {repo} from {folder} into the cache {cache_dir}: "
                           f"{exc.strerror or exc}") from None
    return snapshot


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

    blobs = repo_folder(cache_dir, repo) / "blobs"
    if not blobs.is_dir():
        return
    locks = cache_dir / ".locks" / repo_folder_name(repo_id=repo, repo_type="model")
    for partial in blobs.glob("*.incomplete"):
        if partial.name.endswith(".zoo.incomplete"):
            continue   # zoo's own partial download: the next pull resumes it
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


def _why_not_found(endpoint: str, repo: str, revision: str, name: str, token: bool) -> str:
    """Tell a missing repo, a missing revision and a missing file apart. Mirrors differ in how
    they answer (olah says 401 "repo not found" for an unknown branch), so ask: refs, then paths."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=None if token else False)
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


def _commit_of(endpoint: str, repo: str, revision: str, token: bool) -> str:
    """The commit a branch or tag names, when the server did not say it in X-Repo-Commit."""
    from huggingface_hub import HfApi

    try:
        sha = HfApi(endpoint=endpoint, token=None if token else False).model_info(repo, revision=revision).sha
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise HubError(f"{endpoint} did not say which commit {repo}@{revision} is: {exc}") from None
    if not sha or not COMMIT_SHA.match(sha):
        raise HubError(f"{endpoint} did not say which commit {repo}@{revision} is")
    return sha


def _pull_url(endpoint: str, repo: str, revision: str, files: dict[str, str | None], progress: bool,
              cache_dir: Path, token: bool) -> Path:
    """Each missing file is fetched by `download.fetch` straight into the Hugging Face cache layout
    (blob named by its sha256, snapshot link, refs/ for a branch): resumable and time-bounded.
    A file pinned to None (`--trust-unpinned`) is taken as served, unverified."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers

    from zoo.hub import download

    pinned = bool(COMMIT_SHA.match(revision))
    no_network = offline()
    entry = repo_folder(cache_dir, repo)
    blobs = entry / "blobs"
    root: Path | None = None

    def located(pointer: str, name: str) -> Path:
        path = Path(pointer)
        return path.parents[len(Path(name).parts) - 1]

    with _repo_lock(cache_dir, repo):
        todo = []
        for name, want in files.items():
            cached = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir), revision=revision) \
                if (pinned or no_network) else None
            if isinstance(cached, str) and os.path.isfile(cached):
                if want is None or sha256_file(cached) == want:
                    root = located(cached, name)
                    continue
                _evict(Path(cached), blobs)  # tampered or rotted in the cache: fetch again
            todo.append(name)
        if todo and no_network:
            raise HubError(f"HF_HUB_OFFLINE is set and {repo}@{revision[:12]} is not fully in the "
                           f"cache (missing {', '.join(todo)}); pull it once online")
        headers = build_hf_headers(token=None if token else False)
        commit = revision if pinned else None
        fetched: dict[str, str] = {}
        try:
            blobs.mkdir(parents=True, exist_ok=True)
            for name in todo:
                want = files[name]
                if want and (blobs / want).is_file() and sha256_file(blobs / want) == want:
                    fetched[name] = want   # fetched by a run that died before linking it
                    continue
                key = want or hashlib.sha256(f"{revision}/{name}".encode()).hexdigest()
                partial = blobs / f"{key}.zoo.incomplete"
                label = f"{repo}@{revision[:12]} '{name}'"
                url = download.file_url(endpoint, repo, revision, name)
                for attempt in (1, 2):   # a partial that does not verify is discarded and fetched once more
                    try:
                        got, served = download.fetch(url, partial, label=label, headers=headers,
                                                     progress=progress)
                    except download.NotFound:
                        partial.unlink(missing_ok=True)
                        raise HubError(_why_not_found(endpoint, repo, revision, name, token)) from None
                    if want is None or got == want:
                        break
                    partial.unlink(missing_ok=True)
                    if attempt == 2:
                        raise _mismatch(repo, revision, name, want, got, endpoint)
                if commit is None:
                    commit = served if served and COMMIT_SHA.match(served) else None
                os.replace(partial, blobs / got)
                fetched[name] = got
        except OSError as exc:
            raise HubError(f"cannot write {repo} into the cache {cache_dir}: {exc.strerror or exc}") from None
        if fetched:
            if commit is None:
                commit = _commit_of(endpoint, repo, revision, token)
            snapshot = entry / "snapshots" / commit
            for name, blob in fetched.items():
                _link(snapshot, name, blobs / blob)
            if not pinned:   # a branch or tag: remember which commit it named, as huggingface_hub does
                ref = entry / "refs" / revision
                ref.parent.mkdir(parents=True, exist_ok=True)
                from zoo._io import atomic_write_text
                atomic_write_text(ref, commit)
            root = snapshot
        _clean_stale_partials(cache_dir, repo)
    assert root is not None
    return root


def pull(repo: str, revision: str, files: dict[str, str], *, hub: str | None = None,
         progress: bool = True, cache_dir: str | Path | None = None, token: bool | None = None) -> Path:
    """A local directory holding `files`, each checked against its sha256 pin.

    Sources are tried in order (see `sources`); the first that holds every file with the right
    hash wins. URL sources download into the standard Hugging Face cache (a pinned revision
    already there costs no request); folder sources are copied into that cache while hashed, so
    the returned folder holds exactly the verified bytes. No Hugging Face token is sent unless
    asked (`token=True` or ZOO_HUB_SEND_TOKEN=1): pinned files need none, and a --hub URL may be
    any server. Messages never echo credentials written into a URL."""
    check_repo_id(repo)
    check_file_names(repo, files or {})
    if not files:
        raise HubError(f"{repo}: the registry pins no files for this checkpoint")
    cache = Path(cache_dir) if cache_dir else hf_cache_dir()
    try:   # HF_HOME or HF_HUB_CACHE naming a file, or a folder nobody may write: one line, not a traceback
        (cache / ".locks").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HubError(f"the Hugging Face cache {cache} (HF_HOME / HF_HUB_CACHE) is not a folder zoo can "
                       f"write: {exc.strerror or exc}") from None
    send = send_token_on_pull(token)
    redact_hf_logs()
    reasons, mismatch = [], None
    where = sources(hub)
    if not where:
        what = "--hub" if hub is not None else "ZOO_HUB"
        raise HubError(f"{what}={hub if hub is not None else os.environ.get('ZOO_HUB')!r} names no folder or URL")
    for source in where:
        try:
            if is_url(source):
                folder = _pull_url(source, repo, revision, files, progress, cache, send)
            else:
                folder = _pull_folder(Path(source), repo, revision, files, cache)
            mark_used(folder)
            return folder
        except _Mismatch as err:
            mismatch = mismatch or err
            reasons.append(redact(err))
        except (FileNotFoundError, HubError) as err:
            reasons.append(redact(err))
    if mismatch is not None:
        raise HubError(redact(mismatch))
    if len(reasons) == 1:
        raise HubError(reasons[0])
    raise HubError(f"{repo}@{revision[:12]} is in none of the sources: " + "; ".join(reasons))


def _pinned(name: str):
    """(name.tag, the registry's Checkpoint) for `name` or `name.tag` (the default tag for a bare name)."""
    import zoo.registry as registry

    model, entry, tag = registry.resolve(name)
    if tag is None:
        why = entry.weights_note or "none has been trained or converted yet"
        raise CheckpointError(f"model '{model}' has no checkpoint to pull: {why}")
    return f"{model}.{tag}", entry.checkpoints[tag]


def pull_model(name: str, *, hub: str | None = None, progress: bool = True,
               token: bool | None = None) -> Path:
    """The local folder of the checkpoint `name` or `name.tag` names in the registry (the default
    tag for a bare name), every file verified against its pin."""
    _, ck = _pinned(name)
    return pull(ck.repo, ck.revision, ck.files, hub=hub, progress=progress, token=token)


def _revision_files(name: str, ck, revision: str | None, trust_unpinned: bool) -> tuple[str, dict, bool]:
    """(revision, files to pull with their pins, pinned?) for `zoo pull --revision`. Only the pinned
    revision can be verified; another one is fetched only when the user says so, unverified."""
    if revision is None or revision == ck.revision or (len(revision) >= 7 and COMMIT_SHA.match(ck.revision)
                                                        and ck.revision.startswith(revision.lower())):
        return ck.revision, dict(ck.files), True
    if not isinstance(revision, str) or not revision.strip() or any(c in revision for c in "\n\r\0"):
        raise HubError(f"--revision {revision!r} is not a revision")
    if not trust_unpinned:
        raise HubError(f"{name} is pinned to revision {ck.revision[:12]}; '{revision}' is not it, so its files "
                       f"cannot be checked against the registry's sha256 (pass --trust-unpinned to fetch "
                       f"them unverified)")
    return revision, {n: None for n in ck.files}, False


def copy_to_local_dir(snapshot: Path, files, local_dir: str | Path) -> dict:
    """A plain copy of the pulled files in a folder the user names (`--local-dir`), never
    overwriting a file of theirs: a file already there with the same bytes is left as it is, one
    with other bytes stops the copy before anything is written."""
    import zoo._io as zio

    dest = Path(local_dir).expanduser()
    if dest.exists() and not dest.is_dir():
        raise HubError(f"--local-dir {dest} is a file, not a folder")
    plan, same, clash = [], [], []
    for name in files:
        src, dst = snapshot / name, dest / name
        if dst.is_symlink() or (dst.exists() and not dst.is_file()):
            clash.append(name)
        elif dst.is_file():
            (same if sha256_file(dst) == sha256_file(src) else clash).append(name)
        else:
            plan.append(name)
    if clash:
        raise HubError(f"--local-dir {dest} already holds {', '.join(clash)} with other content; "
                       f"refusing to overwrite (choose another folder or remove them yourself)")
    try:
        for name in plan:
            dst = dest / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            zio.atomic_write(dst, lambda tmp, src=snapshot / name: shutil.copyfile(src, tmp))
    except OSError as exc:
        raise HubError(f"cannot write into --local-dir {dest}: {exc.strerror or exc}") from None
    return {"local_dir": str(dest), "copied": plan, "unchanged": same}


def pull_checkpoint(name: str, *, hub: str | None = None, progress: bool = True,
                    token: bool | None = None, revision: str | None = None, trust_unpinned: bool = False,
                    local_dir: str | Path | None = None) -> dict:
    """`zoo pull NAME`: pull_model, reported as {name, repo, revision, path, files, verified}.

    `revision`: only the registry's pinned one (or a prefix of its sha) unless `trust_unpinned`,
    then fetched unverified (`verified: none`). `local_dir`: also a plain copy of the files there
    (`path` is then that folder; `cache_path` the snapshot)."""
    full, ck = _pinned(name)
    rev, files, pinned = _revision_files(full, ck, revision, trust_unpinned)
    if local_dir is not None:   # refuse a bad target before any download
        dest = Path(local_dir).expanduser()
        if dest.exists() and not dest.is_dir():
            raise HubError(f"--local-dir {dest} is a file, not a folder")
    folder = pull(ck.repo, rev, files, hub=hub, progress=progress, token=token)
    res = {"name": full, "repo": ck.repo, "revision": folder.name if not pinned else ck.revision,
           "path": str(folder), "files": dict(ck.files) if pinned else {n: sha256_file(folder / n) for n in files},
           "verified": "sha256" if pinned else "none (unpinned revision, --trust-unpinned)"}
    if local_dir is not None:
        copied = copy_to_local_dir(folder, files, local_dir)
        res.update(copied, cache_path=str(folder), path=copied["local_dir"])
    return res
