"""Dataset families: readers of the real published formats and seeded generators, cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Where prepared and generated data live: `$ZOO_DATA`, else `~/.cache/zoo/data`."""
    root = Path(os.environ.get("ZOO_DATA") or Path.home() / ".cache" / "zoo" / "data")
    root.mkdir(parents=True, exist_ok=True)
    return root


def params_key(**params) -> str:
    """A short stable key for a generator's parameters (its cache file name)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_npz(path: Path, **arrays) -> None:
    """np.savez into a temp file, then rename: a killed process never leaves half a cache file."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
