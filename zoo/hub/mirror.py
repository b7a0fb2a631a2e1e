"""Folder hub -> git repositories, for serving it with olah (`mirrors-path`) and for tests.

Not on the pull path: pulling never writes git objects. Written in Python (loose objects, LFS
objects under `.git/lfs/objects/`), so no git or git-lfs binary is needed.

    python -m zoo.hub mirror HUB_DIR MIRRORS_DIR    # prints "org/name <revision>" per repo
    python -m zoo.hub revision FOLDER               # the deterministic revision of one repo folder
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

from zoo._io import atomic_write, atomic_write_bytes
from zoo.hub.revision import GIT_BRANCH, folder_revision, git_objects, published_files


def build_git_repo(folder: str | Path, repo_dir: str | Path) -> str:
    """Write the folder as a git repository (what olah's `mirrors-path` serves) and return its
    revision, which equals `folder_revision(folder)`.

    Objects are added to an existing repository, so revisions published earlier stay fetchable
    by sha; `main` moves to the new commit."""
    folder, repo_dir = Path(folder), Path(repo_dir)
    sha, objects, lfs = git_objects(folder)
    git = repo_dir / ".git"
    for sub in ("objects", "refs/heads", "refs/tags", "lfs/objects"):
        (git / sub).mkdir(parents=True, exist_ok=True)
    if not (git / "HEAD").exists():
        atomic_write_bytes(git / "HEAD", f"ref: refs/heads/{GIT_BRANCH}\n".encode())
        atomic_write_bytes(git / "config", b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
                                           b"\tbare = false\n")
    for obj, raw in objects.items():
        path = git / "objects" / obj[:2] / obj[2:]
        if not path.exists():
            atomic_write_bytes(path, zlib.compress(raw))
    for digest, src in lfs.items():
        dst = git / "lfs" / "objects" / digest[:2] / digest[2:4] / digest
        if not dst.exists():
            atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
    # the ref moves last: a reader never sees a commit whose objects are not all there
    atomic_write_bytes(git / "refs" / "heads" / GIT_BRANCH, f"{sha}\n".encode())
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


def main(argv: list[str] | None = None) -> int:
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
