"""The local Hugging Face cache, read through huggingface_hub's cache API and checked against the
registry's sha256 pins: `zoo cache ls | verify | rm`.

huggingface_hub is imported inside the functions: it reads `HF_HUB_CACHE` and `HF_HUB_OFFLINE`
when it is first imported, and `import zoo.hub` stays cheap."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from zoo._io import sha256_file
from zoo.errors import HubError, UnknownNameError


def hf_cache_dir() -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    from huggingface_hub import constants
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.upper() in {"1", "ON", "YES", "TRUE"}


def repo_folder(cache_dir: Path, repo: str) -> Path:
    """The cache folder of a model repo (`models--org--name`)."""
    from huggingface_hub.file_download import repo_folder_name
    return cache_dir / repo_folder_name(repo_id=repo, repo_type="model")


USED = ".zoo-used"   # <repo folder>/.zoo-used/<commit>: its mtime is the revision's last use by zoo


def mark_used(snapshot: Path) -> None:
    """Record that a cached revision was just used (pulled, or loaded from the cache). The Hugging
    Face scan only knows file access times, which most mounts (relatime, noatime) do not keep."""
    import time

    marker = Path(snapshot).parent.parent / USED / Path(snapshot).name
    try:
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        now = time.time()
        os.utime(marker, (now, now))
    except OSError:
        pass   # a read-only cache still serves verified files; only the record is lost


def last_used(repo_path: Path, commit: str, fallback: float | None = None) -> float | None:
    marker = Path(repo_path) / USED / commit
    try:
        return marker.stat().st_mtime
    except OSError:
        return fallback


def _pins() -> dict[str, list[tuple[str, str, dict[str, str]]]]:
    """repo id -> [(name.tag, revision, files)] from the registry."""
    import zoo.registry as registry

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


BROKEN = "(broken)"   # the revision shown for a cache entry huggingface_hub cannot read


def _broken_repos(cache_dir: Path | None, scan, wanted: set[str] | None = None) -> list[tuple[str, Path]]:
    """(repo id, folder) of model entries that `scan_cache_dir` could not read (a missing blob, a
    dangling snapshot link, no snapshots): it lists them only in `warnings`, which would hide them."""
    root = Path(cache_dir) if cache_dir else hf_cache_dir()
    if not root.is_dir():
        return []
    readable = {Path(r.repo_path).resolve() for r in scan.repos} if scan is not None else set()
    out = []
    for folder in sorted(root.glob("models--*")):
        if not folder.is_dir() or folder.is_symlink() or folder.resolve() in readable:
            continue
        repo = "/".join(folder.name.split("--")[1:])
        if _only_partials(folder):
            continue   # a download under way or interrupted (resumed by the next pull), not damage
        if wanted is None or repo in wanted:
            out.append((repo, folder))
    return out


def _only_partials(folder: Path) -> bool:
    """A repo folder holding nothing but partial downloads (no snapshot yet)."""
    if (folder / "snapshots").exists():
        return False
    found = [p for p in folder.rglob("*") if p.is_file()]
    return bool(found) and all(p.parent.name == "blobs" and p.name.endswith(".incomplete") for p in found)


def _partial_rows(cache_dir, scan, wanted: set[str] | None) -> list[dict]:
    """`partial` rows for temp files of interrupted downloads, in every repo folder (one whose only
    content is a partial download included: it has no snapshot for the scan to see)."""
    root = Path(cache_dir) if cache_dir else hf_cache_dir()
    rows = []
    for folder in sorted(root.glob("models--*")) if root.is_dir() else []:
        repo = "/".join(folder.name.split("--")[1:])
        if wanted is not None and repo not in wanted:
            continue
        for blob in sorted((folder / "blobs").glob("*.incomplete")):
            rows.append({"name": None, "repo": repo, "revision": None, "file": blob.name,
                         "status": "partial", "size": blob.stat().st_size})
    return rows


def _broken_rows(repo: str, folder: Path, pins: dict) -> list[dict]:
    """`cache_verify` rows for a broken entry: each snapshot file hashed, each dangling link
    `missing` — all marked broken, so verify fails on them and rm removes them."""
    rows = []
    for snap in sorted(p for p in (folder / "snapshots").glob("*") if p.is_dir()):
        pin = _pin_for(pins, repo, snap.name, set())
        pinned = pin[1] if pin else {}
        base = {"name": pin[0] if pin else None, "repo": repo, "revision": snap.name, "broken": True}
        for path in sorted(p for p in snap.rglob("*") if p.is_symlink() or p.is_file()):
            rel = path.relative_to(snap).as_posix()
            if not path.exists():
                rows.append({**base, "file": rel, "status": "missing", "expected": pinned.get(rel)})
                continue
            actual, expected = sha256_file(path), pinned.get(rel)
            status = "unpinned" if expected is None else ("ok" if actual == expected else "mismatch")
            rows.append({**base, "file": rel, "status": status, "expected": expected, "actual": actual})
    if not rows:
        rows.append({"name": None, "repo": repo, "revision": BROKEN, "file": "-", "status": "missing",
                     "expected": None, "broken": True})
    return rows


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
    rows = [{"name": pin[0] if pin else None, "repo": repo.repo_id, "revision": rev.commit_hash,
             "refs": sorted(rev.refs), "files": rev.nb_files, "size": rev.size_on_disk,
             "last_used": last_used(repo.repo_path, rev.commit_hash, rev.last_modified),
             "pinned": pin is not None, "path": str(rev.snapshot_path)}
            for repo, revisions in _cached_repos(cache_dir) for rev, pin in revisions]
    scan = _scan(Path(cache_dir) if cache_dir else None)
    for repo, folder in _broken_repos(cache_dir, scan):
        files = [p for p in folder.rglob("*") if p.is_file() and "snapshots" not in p.parts]
        rows.append({"name": None, "repo": repo, "revision": BROKEN, "refs": [], "files": len(files),
                     "size": sum(p.stat().st_size for p in files), "last_used": None, "pinned": False,
                     "path": str(folder), "broken": True})
    return rows


def _select(name: str | None) -> set[str] | None:
    """Repo ids a cache command applies to: a model name (all its checkpoints), `name.tag`, or
    a repo id. None means all."""
    if name is None:
        return None
    if "/" in name:
        return {name}
    import zoo.registry as registry

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
    of interrupted downloads, and rows marked `broken` for entries huggingface_hub cannot read."""
    rows = []
    wanted = _select(name)
    for repo, folder in _broken_repos(cache_dir, _scan(Path(cache_dir) if cache_dir else None), wanted):
        rows.extend(_broken_rows(repo, folder, _pins()))
    for repo, revisions in _cached_repos(cache_dir, wanted):
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
    rows.extend(_partial_rows(cache_dir, None, wanted))
    return rows


def cache_check(rows: list[dict]) -> None:
    """Raise when `cache_verify` rows hold a mismatch: `zoo cache verify` exits 1 on it."""
    bad = [r for r in rows if r["status"] == "mismatch"]
    broken = {r["repo"] for r in rows if r.get("broken")}
    if bad:
        raise HubError(f"{len(bad)} cached file(s) do not match their sha256 pin; "
                       f"`zoo cache rm NAME` and pull again")
    if broken:
        raise HubError(f"{len(broken)} cache entr{'y is' if len(broken) == 1 else 'ies are'} broken "
                       f"(missing blobs or dangling links: {', '.join(sorted(broken))}); "
                       f"`zoo cache rm NAME` and pull again")


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
    freed = 0
    for repo, folder in _broken_repos(cache_dir, scan, wanted):
        freed += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(folder)
        removed.append({"repo": repo, "revision": BROKEN})
    if not hashes:
        return {"removed": removed, "freed": freed}
    strategy = scan.delete_revisions(*hashes)
    strategy.execute()
    return {"removed": removed, "freed": freed + strategy.expected_freed_size}


def cache_prune(dry_run: bool = False, cache_dir: str | Path | None = None) -> dict:
    """Remove every cached revision the registry no longer pins (a checkpoint re-pinned to a new
    revision, a model dropped from the registry, a --trust-unpinned pull). `dry_run`: say what
    would go and how much it would free, delete nothing."""
    scan = _scan(Path(cache_dir) if cache_dir else None)
    pins = _pins()
    doomed, rows = [], []
    for repo in sorted(scan.repos, key=lambda r: r.repo_id) if scan is not None else []:
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            if _pin_for(pins, repo.repo_id, rev.commit_hash, rev.refs) is None:
                doomed.append(rev.commit_hash)
                rows.append({"repo": repo.repo_id, "revision": rev.commit_hash, "size": rev.size_on_disk,
                             "repo_path": repo.repo_path})
    freed = 0
    if doomed:
        strategy = scan.delete_revisions(*doomed)
        freed = strategy.expected_freed_size
        if not dry_run:
            strategy.execute()
            for r in rows:
                with contextlib.suppress(OSError):
                    (Path(r["repo_path"]) / USED / r["revision"]).unlink()
    for r in rows:
        del r["repo_path"]
    return {"removed": rows, "freed": freed, "dry_run": dry_run}
