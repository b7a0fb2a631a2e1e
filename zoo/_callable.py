"""`zoo.export`, `zoo.bench` and `zoo.convert` are both API functions and submodules (the layout
DESIGN.md names). Importing a submodule rebinds the package attribute to the module, so the module
itself is made callable with the function's signature: `zoo.export(...)` works either way."""

from __future__ import annotations

import sys
import types


def make_callable(module_name: str, fn_name: str) -> None:
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(sys.modules["zoo.api"], fn_name)(*args, **kwargs)

    module.__class__ = _CallableModule
