"""`python -m zoo` and the `zoo` console script.

The Typer app lives in `cli/` (the project's layout). The wheel ships it as `zoo.cli`; in a source
checkout (editable install, or running from the repository) it is the top-level `cli` package on
sys.path. Nothing else in zoo/ imports the CLI."""

from __future__ import annotations


def main() -> None:
    try:
        from zoo.cli.main import main as run   # installed wheel
    except ModuleNotFoundError as exc:
        if exc.name not in ("zoo.cli", "zoo.cli.main"):
            raise
        from cli.main import main as run       # source checkout
    run()


if __name__ == "__main__":
    main()
