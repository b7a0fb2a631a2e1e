"""The `zoo` command line (Typer). Thin: every verb is one call into zoo.api."""
