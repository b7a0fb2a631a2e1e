"""zoo: one set of verbs for a family of multi-branch research architectures.

Import-light: `import zoo` pulls in neither torch nor huggingface_hub; each verb imports what it needs.
"""

from __future__ import annotations

from zoo._version import __version__
from zoo.api import (
    bench, convert, create_model, data_config, evaluate, export, finetune, info, list_models, predict, pull, push, transforms,
)

__all__ = ["bench", "convert", "create_model", "data_config", "transforms", "evaluate", "export", "finetune", "info", "list_models",
           "predict", "pull", "push", "__version__"]
