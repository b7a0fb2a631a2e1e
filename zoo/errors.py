"""Typed errors. The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``."""

from __future__ import annotations

import difflib


class ZooError(Exception):
    """Base of every error a user can cause. The message is one line, no traceback."""

    exit_code = 1


class UnknownNameError(ZooError):
    """An unknown model, checkpoint tag, dataset, task or format; suggests the closest names."""

    exit_code = 2

    def __init__(self, kind: str, name: str, choices):
        self.kind, self.name = kind, name
        choices = sorted(set(choices))
        close = _closest(name, choices)
        if close:
            hint = "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        elif choices and len(choices) <= 12:
            hint = "choose from " + ", ".join(choices)
        else:
            hint = "see `zoo list`"
        super().__init__(f"unknown {kind} '{name}'; {hint}")


def _closest(name: str, choices: list[str]) -> list[str]:
    """Up to three names as close as the best one (within 0.08 of its similarity ratio)."""
    scored = sorted(((difflib.SequenceMatcher(None, name, c).ratio(), c) for c in choices), reverse=True)
    scored = [(r, c) for r, c in scored if r >= 0.6]
    if not scored:
        return []
    best = scored[0][0]
    return [c for r, c in scored[:3] if r >= best - 0.08]


class ConfigError(ZooError):
    """A malformed registry entry or a config that does not fit the architecture."""


class DataError(ZooError):
    """A missing, malformed or mis-shaped data file, or an unknown dataset layout."""


class CheckpointError(ZooError):
    """A checkpoint folder that is missing, incomplete or does not match its architecture."""


class HubError(ZooError):
    """A checkpoint cannot be fetched or fails its sha256 check."""


class ExportError(ZooError):
    """An export failed or its round trip drifted past the tolerance."""


class NotReadyError(ZooError):
    """The model is registered as planned: listed on the roadmap but not built yet."""
