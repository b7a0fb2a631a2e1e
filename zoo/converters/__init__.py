"""Official checkpoints to our format, without running their code.

`read_official(path)` takes every tensor out of an official file: safetensors directly;
pickles first with `torch.load(weights_only=True)`, and where that refuses (whole pickled model
objects) with the restricted unpickler of `safe_pickle`, which replaces the official classes by
inert stand-ins and refuses every other global.

Each family that has official weights adds `zoo/converters/<family>.py` with

    OFFICIAL_MODULES = ("models", "utils")          # module paths its pickles name (optional)

    def convert_state_dict(raw: dict[str, Tensor], model: str, config: dict) -> dict[str, Tensor]:
        ...                                         # official names -> our state_dict names

and `converter: "zoo.converters.<family>:convert_state_dict"` in its registry `families:` block. `zoo.verbs.convert.convert(name, src, out)` then loads the result strictly
into `zoo.create_model(name)` and writes a checkpoint folder.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from zoo._io import sha256_file
from zoo.errors import CheckpointError, ConfigError


def read_official(path: str | Path, official_modules: Iterable[str] = ()) -> dict[str, Any]:
    """Every tensor in an official checkpoint file, keyed by dotted path
    (e.g. `model.0.conv.weight`, `ema.model.0.conv.weight`, `state_dict.fc.bias`)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; --from takes the official checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"official checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # noqa: BLE001 - safetensors has several error types
            raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    from zoo.converters.safe_pickle import ALLOC_FACTOR, ALLOC_SLACK
    max_bytes = ALLOC_SLACK + ALLOC_FACTOR * path.stat().st_size
    try:
        return _read_pickled(path, official_modules, max_bytes)
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply to be a checkpoint") from None
    except MemoryError:
        raise CheckpointError(f"{path}: asks for more memory than there is; not a checkpoint") from None


def _read_pickled(path: Path, official_modules: Iterable[str], max_bytes: int) -> dict[str, Any]:
    import torch

    from zoo.converters.safe_pickle import UnsafePickleError, pickle_module, tensors_in

    try:
        if not zipfile.is_zipfile(path):
            # a legacy or plain pickle: torch's own weights-only reader would build whatever
            # sizes it names (bytearray(10**9) from 30 bytes), so ours, with its budget, reads it
            raise pickle.UnpicklingError("not a zip checkpoint")
        with warnings.catch_warnings():  # torch warns about pickle protocols it did not write
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses any class outside torch's allow-list: read it with stand-ins
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False,
                             pickle_module=pickle_module(official_modules, max_bytes))
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path.name}: {err}") from None
        except RuntimeError as exc:
            if "magic number" not in str(exc) or zipfile.is_zipfile(path):
                raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
            obj = _plain_pickle(path, official_modules, max_bytes)  # pickled with `pickle`, not torch.save
        except CheckpointError as err:
            raise CheckpointError(f"{path.name}: {err}") from None
        except (RecursionError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a crafted pickle fails in torch's loader in many ways
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    tensors = tensors_in(obj)
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return tensors


def _plain_pickle(path: Path, official_modules: Iterable[str], max_bytes: int | None = None):
    from zoo.converters.safe_pickle import UnsafePickleError, pickle_module

    try:
        with open(path, "rb") as f:
            return pickle_module(official_modules, max_bytes).load(f)
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path.name}: {err}") from None
    except CheckpointError as err:
        raise CheckpointError(f"{path.name}: {err}") from None
    except RecursionError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure: not a checkpoint we can read
        raise CheckpointError(f"{path}: not a readable pickle ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- helpers for key maps ------------------------------------------------------------------------

def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keep the keys under `prefix` (e.g. "ema." or "model."), without it."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def pick_prefix(state: Mapping[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    """The first of `prefixes` that has keys, stripped (e.g. ("ema.", "model.", "state_dict.", ""))."""
    for prefix in prefixes:
        found = strip_prefix(state, prefix)
        if found:
            return found
    raise CheckpointError(f"none of the expected key prefixes {list(prefixes)} is in the checkpoint")


def rename(state: Mapping[str, Any], rules: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Apply (regex, replacement) rules, in order, to every key."""
    import re

    compiled = [(re.compile(a), b) for a, b in rules]
    out = {}
    for k, v in state.items():
        for pattern, repl in compiled:
            k = pattern.sub(repl, k)
        out[k] = v
    return out


# ---- the verb ------------------------------------------------------------------------------------

def converter_for(family: str) -> tuple[Callable, tuple[str, ...]]:
    """The family's converter, named by `converter:` in its registry `families:` block."""
    import zoo.registry as registry
    families = registry.load_registry().families
    ref = families[family].converter if family in families else None
    if ref is None:
        known = ", ".join(sorted(f for f, v in families.items() if v.converter)) or "none yet"
        raise ConfigError(f"no converter for official '{family}' checkpoints (families with one: {known})")
    module_name, fn = ref.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, fn), tuple(getattr(module, "OFFICIAL_MODULES", ()))
