"""The deterministic revision of a folder repo, computed without git.

Folder hubs have no commits of their own, so the registry pins the sha of the single root commit
that `zoo.hub.mirror.build_git_repo` writes for the folder. An olah mirror built from the folder
serves exactly that sha, so one pin holds for the folder and the mirror alike."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from zoo._io import sha256_file
from zoo.errors import CheckpointError

# Files stored as git-LFS pointers: weights by suffix, and anything large. Text stays a git blob.
LFS_SUFFIXES = (".safetensors", ".onnx", ".pt2", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".npz",
                ".npy", ".gguf", ".msgpack", ".tflite", ".zip", ".tar", ".gz")
LFS_MIN_BYTES = 10 * 1024 * 1024
GIT_AUTHOR = "zoo <zoo@localhost>"
GIT_DATE = "946684800 +0000"            # 2000-01-01T00:00:00Z: fixed, so equal content -> equal sha
GIT_MESSAGE = "zoo checkpoint\n"
GIT_BRANCH = "main"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def link_allowed(link: Path, folder: Path) -> bool:
    """A symbolic link is read only when it stays inside `folder`, or when `folder` is a snapshot
    of the Hugging Face cache and the link points into the same repo's `blobs/` (that is how the
    cache stores every file). A link anywhere else is never followed: it could publish a secret."""
    target = Path(os.path.realpath(link))
    root = Path(os.path.realpath(folder))
    if _inside(target, root):
        return True
    return root.parent.name == "snapshots" and _inside(target, root.parent.parent / "blobs")


def published_files(folder: str | Path) -> dict[str, Path]:
    """The files a folder publishes: every regular file, recursively, except hidden ones and
    links that lead out of the folder (directory links are never descended). Keys are POSIX paths
    relative to the folder, sorted."""
    folder = Path(folder)
    out = {}
    for top, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(top) / name
            rel = path.relative_to(folder)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if path.is_symlink() and not link_allowed(path, folder):
                continue
            if path.is_file():
                out[rel.as_posix()] = path
    return dict(sorted(out.items()))


def is_lfs(name: str, size: int) -> bool:
    return name.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_BYTES


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _git_object(kind: str, payload: bytes) -> tuple[str, bytes]:
    """(sha1 hex, the object's bytes as git stores them before compression)."""
    raw = f"{kind} {len(payload)}\0".encode() + payload
    return hashlib.sha1(raw).hexdigest(), raw


def git_objects(folder: str | Path) -> tuple[str, dict[str, bytes], dict[str, Path]]:
    """Every git object of the folder's single root commit.

    Returns (commit sha, {sha: raw object}, {lfs sha256: file path})."""
    folder = Path(folder)
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
    return git_objects(Path(folder))[0]
