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
            if is_url(item):
                from urllib.parse import urlsplit
                try:
                    host = urlsplit(item).hostname
                    urlsplit(item).port   # raises on a port out of range
                except ValueError:
                    host = None
                if not host:
                    raise HubError(f"{redact(item)!r} is not a URL a hub can be reached at")
                out.append(item.rstrip("/"))
            else:
                out.append(str(Path(item).expanduser()))
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
    if hub is not None:
        given = sources(hub) if hub.strip() else []
        if not given:   # `--hub ''` must not mean "the project's own hub/"
            raise HubError(f"--hub {hub!r} names no folder or URL; give --hub FOLDER|URL")
        return given[0]
    if os.environ.get("ZOO_HUB", "").strip():
        given = sources(None)
        if not given:
            raise HubError(f"ZOO_HUB={os.environ['ZOO_HUB']!r} names no folder or URL")
        return given[0]
    if project_hub_dir().is_dir():
        return str(project_hub_dir())
    raise HubError("where to? give --hub FOLDER|URL (or set ZOO_HUB)")


_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def redact(text: str) -> str:
    """`text` with any `user:password@` of a URL replaced by `***@`: no message, JSON output or log
    line ever echoes credentials given inside a --hub URL."""
    return _CREDENTIALS.sub(r"\1***@", str(text))


class _Redact:
    """A logging filter: huggingface_hub's own log lines (retries) print the URL they request."""

    def filter(self, record) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left as it is
            return True
        if "@" in text:
            record.msg, record.args = redact(text), None
        return True


_FILTER = _Redact()


def redact_hf_logs() -> None:
    """Install the redacting filter on huggingface_hub's loggers (idempotent). A logger's filter
    applies to records created on that very logger, so each one that logs URLs gets it."""
    import logging

    for name in ("huggingface_hub", "huggingface_hub.utils._http", "huggingface_hub.file_download",
                 "huggingface_hub.hf_api", "huggingface_hub._commit_api"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _host(url: str) -> str:
    from urllib.parse import urlsplit
    return (urlsplit(url).hostname or "").lower()


def token_warning(endpoint: str) -> str | None:
    """The one line to print before a push sends the user's Hugging Face token to `endpoint`, or
    None when that is safe: a token exists, and it would go over plain http or to a host other than
    the configured Hugging Face endpoint ($HF_ENDPOINT, else the public Hub)."""
    from huggingface_hub import get_token

    if not get_token():
        return None
    if endpoint.lower().startswith("http://"):
        why = "over plain http"
    elif _host(endpoint) != _host(default_endpoint()):
        why = f"to a host other than {redact(default_endpoint())}"
    else:
        return None
    return f"zoo: warning: sending your Hugging Face token {why} ({redact(endpoint)})"


def send_token_on_pull(ask: bool | None = None) -> bool:
    """Pulls are verified against sha256 pins and need no credentials: the token is sent only
    when asked (`token=True`, or ZOO_HUB_SEND_TOKEN=1 for gated or private repos)."""
    if ask is not None:
        return bool(ask)
    return os.environ.get("ZOO_HUB_SEND_TOKEN", "").strip().lower() in {"1", "true", "yes", "on"}


def check_repo_id(repo: str) -> None:
    # fullmatch: `$` alone would accept a trailing newline (a folder named "x\n")
    if not isinstance(repo, str) or not REPO_ID.fullmatch(repo) or ".." in repo or \
            any(part.endswith(".") for part in repo.split("/")):
        raise HubError(f"{repo!r} is not a repo id of the form ORG/NAME")


def check_file_names(repo: str, files) -> None:
    """File names pinned in the registry stay inside the repo folder: no absolute path, no `..`."""
    for name in files:
        parts = str(name).replace("\\", "/").split("/")
        if not name or str(name).startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise HubError(f"{repo}: the registry pins a file named {name!r}, which is not a path "
                           f"inside the repo; refused")
