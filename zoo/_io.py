"""The bottom of the house: file hashing, atomic writes and figure saving, written once.

Imports nothing of zoo but `errors`; torch and matplotlib only inside the functions that need them."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry_file() -> Path | None:
    """registry.yaml: $ZOO_REGISTRY, else inside the package (the wheel carries zoo/registry.yaml),
    else at the repository root (a source checkout); None when there is none."""
    if os.environ.get("ZOO_REGISTRY"):
        return Path(os.environ["ZOO_REGISTRY"])
    here = Path(__file__).resolve().parent
    for candidate in (here / "registry.yaml", here.parent / "registry.yaml"):
        if candidate.is_file():
            return candidate
    return None


def cache_dir(*parts: str) -> Path:
    """zoo's own cache: $ZOO_CACHE, else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo (joined with `parts`)."""
    base = os.environ.get("ZOO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "zoo")
    return Path(base, *parts)


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what the platform module says."""
    import platform
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def temp_path(path: str | Path) -> Path:
    """A hidden sibling of `path` unique to this process: renaming it over `path` is atomic."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success it replaces `path` in one rename, on failure it
    is removed. A kill mid-write never leaves half a file under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if fsync and tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], object], *, fsync: bool = False) -> Path:
    """Call `write(tmp)` and rename the result over `path`."""
    with atomic_path(path, fsync=fsync) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_torch_save(obj, path: str | Path) -> Path:
    """torch.save through a temp file, fsynced: training state survives a kill at any instant."""
    import torch

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write, fsync=True)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (no display on servers and in CI)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out, save atomically (the format from the suffix) and close a matplotlib figure."""
    plt = pyplot()
    path = Path(path)
    try:
        fig.tight_layout()
        # matplotlib picks the format from the name, so the temp file keeps the suffix
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def next_numbered_dir(root: str | Path, stem: str) -> Path:
    """`root/<stem>-N` with the first free N (ultralytics' habit: runs/finetune/x-1, runs/predict/x-2).
    The folder is created here, so two processes started at once never share one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = root / f"{stem}-{n}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
