"""A restricted unpickler for official PyTorch checkpoints that `torch.load(weights_only=True)`
refuses (typically because they pickle whole model objects, e.g. `models.yolo.DetectionModel`).

Pickle is a small program: its GLOBAL opcodes name callables and its REDUCE opcodes call them.
This unpickler resolves a global to one of three things, and nothing else:
  * a short allow-list of real callables that only rebuild data (tensors from storages,
    OrderedDict, set, torch.Size, dtypes);
  * an inert stand-in class, for globals under the official code's module paths (and torch.nn,
    numpy scalars, argparse.Namespace, pathlib paths): calling, instantiating or setting the
    state of a stand-in only records its arguments;
  * otherwise an `UnsafePickleError` naming the global. `os.system`, `builtins.eval`,
    `subprocess.Popen`, ... are never imported, let alone called.
Tensors are then taken out of the resulting object graph; stand-in module objects contribute
their `_parameters` and persistent `_buffers` under state_dict-style dotted names.
"""

from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import io
import pickle
import types
from typing import Any, Iterable

from zoo.errors import CheckpointError


class UnsafePickleError(CheckpointError):
    """The pickle names a global outside the allow-list: refused before anything runs."""


class StandIn:
    """Inert replacement for a class of the official code. It never runs the class's code."""

    def __init__(self, *args, **kwargs):
        self._standin_args = args
        self._standin_kwargs = kwargs

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state, slots = state  # (dict state, slot state)
            if isinstance(slots, dict):
                self.__dict__.update(slots)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._standin_state = state

    def __repr__(self):
        return f"<stand-in {type(self).__module__}.{type(self).__qualname__}>"


# stand-ins are also what copyreg's reconstructors may build (protocol 0/1 pickles)
def _reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, StandIn)):
        raise UnsafePickleError(f"refusing copyreg._reconstructor for {cls!r}")
    return cls.__new__(cls)  # the base-class state argument is dropped: nothing to initialise


def _newobj(cls, *args):
    if not (isinstance(cls, type) and issubclass(cls, StandIn)):
        raise UnsafePickleError(f"refusing copyreg.__newobj__ for {cls!r}")
    return cls.__new__(cls)


def _safe_globals() -> dict[tuple[str, str], Any]:
    import torch
    import torch._utils as tu

    out: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _codecs_encode,  # protocol-2 pickles store bytes this way
        ("copyreg", "_reconstructor"): _reconstructor,
        ("copyreg", "__newobj__"): _newobj,
        ("torch", "Size"): torch.Size,
        ("torch._utils", "_rebuild_tensor"): tu._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): tu._rebuild_parameter_with_state,
    }
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            out[("torch", name)] = value
    return out


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise UnsafePickleError(f"refusing _codecs.encode({type(obj).__name__}, {encoding!r})")
    return obj.encode(encoding, errors)


# classes of plain data that official checkpoints carry besides weights: replaced, never imported
_INERT_DATA = {
    ("argparse", "Namespace"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
    ("pathlib", "Path"), ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timedelta"),
}
# module classes of a pickled nn.Module tree: stand-ins, so only their tensors come out
_ALWAYS_STANDIN = ("torch.nn.modules.",)


def _matches(module: str, prefixes: Iterable[str]) -> bool:
    for prefix in prefixes:
        prefix = prefix.rstrip(".")
        if module == prefix or module.startswith(prefix + "."):
            return True
    return False


#: what a loader may allocate for a file of n bytes: a real checkpoint's tensors come out of the
#: file itself, so far more than the file's size is the mark of a crafted one
ALLOC_SLACK = 64 * 2**20
ALLOC_FACTOR = 4


class _Budget:
    """Bytes a load may still allocate (byte arrays built by REDUCE, storages the pickle declares)."""

    def __init__(self, limit: int | None):
        self.limit, self.left = limit, limit

    def take(self, n: int, what: str) -> None:
        if self.left is None:
            return
        if not isinstance(n, int) or n < 0 or n > self.left:
            raise CheckpointError(f"refusing to allocate {n!r} bytes for {what}: more than the file "
                                  f"could hold (limit {self.limit} bytes for this file)")
        self.left -= n


def _guarded(fn, name: str, budget: _Budget):
    """An allow-listed callable whose failures (bad arguments a crafted pickle passes: unhashable
    items, a non-storage, absurd sizes) are one CheckpointError, never a traceback inside torch."""
    def call(*args, **kwargs):
        if fn is bytearray and args and isinstance(args[0], int):
            budget.take(args[0], "bytearray")
        try:
            return fn(*args, **kwargs)
        except CheckpointError:
            raise
        except (TypeError, ValueError, RuntimeError, AttributeError, IndexError, KeyError,
                OverflowError, MemoryError) as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise CheckpointError(f"the pickle calls {name} with arguments it cannot take ({why})") from None
    call.__name__ = getattr(fn, "__name__", name)
    return call


def _storage_bytes(pid) -> int | None:
    """The bytes a persistent-id record asks torch to allocate, when it says (zip and legacy)."""
    if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
        size = pid[4]
        dtype = getattr(pid[1], "dtype", None)
        itemsize = getattr(dtype, "itemsize", 1) if dtype is not None else 1
        return size * itemsize if isinstance(size, int) else size
    return None


_BASE_PERSISTENT_LOAD = pickle.Unpickler.__dict__["persistent_load"]


def make_unpickler(official_modules: Iterable[str] = (), max_bytes: int | None = None) -> type[pickle.Unpickler]:
    """An Unpickler class that maps `official_modules` (module path prefixes such as
    "models", "ultralytics") to stand-ins and refuses every other non-allow-listed global.
    `max_bytes` caps what one load may allocate (see ALLOC_FACTOR)."""
    budget = _Budget(max_bytes)
    # callables are wrapped (dtypes are plain values and stay as they are)
    allowed = {k: _guarded(v, f"{k[0]}.{k[1]}", budget) if callable(v) else v
               for k, v in _safe_globals().items()}
    prefixes = tuple(official_modules) + _ALWAYS_STANDIN
    standins: dict[tuple[str, str], type] = {}

    def _load_from_bytes(data: bytes):
        import torch
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False,
                          pickle_module=pickle_module(official_modules, budget.left))

    class RestrictedUnpickler(pickle.Unpickler):
        # torch installs its storage loader as `persistent_load`; each storage it is asked to
        # create is charged to the budget first (a legacy file declares sizes it never holds)
        @property
        def persistent_load(self):
            return _BASE_PERSISTENT_LOAD.__get__(self)

        @persistent_load.setter
        def persistent_load(self, fn):
            def checked(pid):
                n = _storage_bytes(pid)
                if n is not None:
                    budget.take(n, "a tensor storage")
                return fn(pid)
            _BASE_PERSISTENT_LOAD.__set__(self, checked)   # the C unpickler keeps its own slot

        def find_class(self, module, name):
            # protocol 0-2 pickles name Python 2 modules (`__builtin__.set`): translate first,
            # which the base class would do inside the find_class we replace
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            key = (module, name)
            if key == ("torch.storage", "_load_from_bytes"):
                return _load_from_bytes  # a tensor pickled with plain pickle: same rules inside
            if key in allowed:
                return allowed[key]
            if key in _INERT_DATA or _matches(module, prefixes):
                if key not in standins:
                    standins[key] = type(name, (StandIn,), {"__module__": module, "__qualname__": name})
                return standins[key]
            raise UnsafePickleError(
                f"refusing to load global '{module}.{name}' from the checkpoint: zoo never runs code "
                f"from a pickle (only tensors and the official model classes as inert stand-ins)")

    return RestrictedUnpickler


def pickle_module(official_modules: Iterable[str] = (), max_bytes: int | None = None) -> types.SimpleNamespace:
    """A stand-in for the `pickle` module, for `torch.load(..., pickle_module=...)`: torch then
    keeps doing the storage bookkeeping while every global goes through our `find_class`."""
    unpickler = make_unpickler(official_modules, max_bytes)

    def load(file, **kwargs):
        return unpickler(file, **kwargs).load()

    def loads(data, **kwargs):
        return unpickler(io.BytesIO(data), **kwargs).load()

    return types.SimpleNamespace(__name__="zoo.converters.safe_pickle", Unpickler=unpickler, load=load,
                                 loads=loads, UnpicklingError=pickle.UnpicklingError)


def tensors_in(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every tensor reachable from `obj`, keyed by dotted path. Module stand-ins (anything with
    `_parameters`/`_modules`) are walked the way nn.Module.state_dict walks modules."""
    import torch

    out: dict[str, Any] = {}
    seen: set[int] = set()

    def key(p: str, k: Any) -> str:
        return f"{p}.{k}" if p else str(k)

    def walk(o: Any, p: str) -> None:
        if isinstance(o, torch.Tensor):
            out[p] = o.detach() if isinstance(o, torch.nn.Parameter) else o
            return
        if id(o) in seen:
            return
        seen.add(id(o))
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, key(p, k))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, key(p, i))
        elif isinstance(o, StandIn):
            state = o.__dict__
            if "_parameters" in state or "_modules" in state:
                skip = set(state.get("_non_persistent_buffers_set") or ())
                for group in ("_parameters", "_buffers"):
                    for k, v in (state.get(group) or {}).items():
                        if v is not None and k not in skip:
                            walk(v, key(p, k))
                for k, v in (state.get("_modules") or {}).items():
                    if v is not None:
                        walk(v, key(p, k))
            else:
                for k, v in state.items():
                    if not k.startswith("_standin"):
                        walk(v, key(p, k))

    walk(obj, prefix)
    return out


# keep copyreg referenced: its reconstructors are replaced above, never imported from pickles
_ = copyreg
