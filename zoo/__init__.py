"""zoo: one set of verbs for a family of multi-branch research architectures.

Import-light: `import zoo` pulls in neither torch nor huggingface_hub; each verb imports what it needs.
"""

from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout the Typer app lives in ../cli (the layout the project asked for); the wheel
# installs it as zoo/cli. Extending __path__ makes `zoo.cli` importable in both cases.
_here = _Path(__file__).resolve().parent
if not (_here / "cli").is_dir() and (_here.parent / "cli" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # type: ignore[name-defined]  # noqa: F821

from zoo.api import (  # noqa: E402
    bench, convert, create_model, evaluate, export, finetune, info, list_models, predict, pull, push,
)

__all__ = ["bench", "convert", "create_model", "evaluate", "export", "finetune", "info", "list_models",
           "predict", "pull", "push", "__version__"]
