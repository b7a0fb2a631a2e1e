"""What every `zoo` command shares: the --hub/--json/--device/-o options, JSON output, consoles."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer
from rich.console import Console

from zoo.errors import ZooError

out = Console()
err = Console(stderr=True)

HubOpt = typer.Option(None, "--hub", help="hub folder(s)/URL(s), comma-separated "
                                          "(default: $ZOO_HUB, else ./hub then $HF_ENDPOINT)")
JsonOpt = typer.Option(False, "--json", help="print machine-readable JSON")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: CUDA when available, else CPU)")
OptionList = typer.Option(None, "--option", "-o", help="extra option KEY=VALUE (repeatable; values are JSON "
                                                      "or plain strings)")


def parse_options(pairs: Optional[List[str]], **named) -> dict:
    """`-o KEY=VALUE` pairs (JSON values where they parse) plus the named options that were set."""
    opts = {k: v for k, v in named.items() if v is not None and v is not False}
    for pair in pairs or []:
        if "=" not in pair:
            raise ZooError(f"option '{pair}' must look like KEY=VALUE")
        key, value = pair.split("=", 1)
        try:
            opts[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            opts[key.replace("-", "_")] = value
    return opts


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)


def print_json(obj) -> None:
    sys.stdout.write(dumps(obj) + "\n")


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
