"""Which hubs a checkpoint is looked for in, and which one a push goes to.

A *source* is either a Hugging Face Hub-compatible endpoint (the public Hub, a company mirror, an
olah instance), reached only through `huggingface_hub`, or a plain folder of repos in the same
layout (`<folder>/<org>/<name>/{config.json, model.safetensors, README.md}`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from zoo.errors import HubError

PUBLIC_HUB = "https://huggingface.co"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def project_hub_dir() -> Path:
    """The project's own `hub/` folder: at the root of a source checkout, next to the `zoo` package."""
    return Path(__file__).resolve().parents[2] / "hub"


def packaged_hub_dir() -> Path:
    """The checkpoints a wheel ships as package data (`zoo/_hub`, see pyproject.toml): the README's
    main job runs offline after `pip install .`. Absent in a source checkout."""
    return Path(__file__).resolve().parents[1] / "_hub"


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
    if packaged_hub_dir().is_dir():
        out.append(str(packaged_hub_dir()))
    out.append(default_endpoint())
    return out


def push_target(hub: str | None = None) -> str:
    """Where a push goes: the first of --hub, else of $ZOO_HUB, else the project's `hub/` folder.
    Never the public Hub by default: publishing is always asked for by name."""
    if hub is not None and hub.strip():
        return sources(hub)[0]
    if os.environ.get("ZOO_HUB", "").strip():
        return sources(None)[0]
    if project_hub_dir().is_dir():
        return str(project_hub_dir())
    raise HubError("where to? give --hub FOLDER|URL (or set ZOO_HUB)")


def check_repo_id(repo: str) -> None:
    if not REPO_ID.match(repo):
        raise HubError(f"'{repo}' is not a repo id of the form ORG/NAME")
