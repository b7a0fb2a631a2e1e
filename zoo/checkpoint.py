"""A checkpoint folder: config.json + model.safetensors + README.md (model card).

This is what `zoo finetune` and `zoo convert` write, what `zoo push` publishes and what
`create_model(pretrained=True)` reads after a pull. Weights load from safetensors only."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from zoo._io import atomic_write, cpu_model
from zoo._version import __version__
from zoo.errors import CheckpointError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
# a run's learning curve (`zoo finetune -o eval_every=N`): its points, and their picture
CURVE = "curve.json"
CURVE_PLOT = "curve.png"


def _config_schema():
    """The fields of config.json that zoo reads, typed; anything else a tool wrote is kept as is."""
    from typing import Optional

    from pydantic import BaseModel, ConfigDict, Field

    class CheckpointConfig(BaseModel):
        model_config = ConfigDict(extra="allow", protected_namespaces=())
        model: str = Field(min_length=1)
        config: dict[str, Any]
        task: Optional[str] = None
        tag: Optional[str] = None
        dataset: Optional[str] = None
        metrics: Optional[dict[str, Any]] = None
        train: Optional[dict[str, Any]] = None

    return CheckpointConfig


def read_config(folder: str | Path) -> dict:
    """config.json of a checkpoint folder, checked: UTF-8 JSON, an object, and the fields zoo uses
    of the right types (one line naming the field otherwise)."""
    from pydantic import ValidationError

    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint folder: {CONFIG} is missing")
    try:
        cfg = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, not a {type(cfg).__name__}")
    for key in ("model", "config"):
        if key not in cfg:
            raise CheckpointError(f"{path}: missing field '{key}'")
    try:
        _config_schema().model_validate(cfg, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "?"
        raise CheckpointError(f"{path}: field '{where}': {err['msg']}") from None
    return cfg


def out_folder_problem(folder: str | Path, model: str | None) -> str | None:
    """Why a checkpoint of `model` must not be written into `folder`, or None when it may: the
    folder is absent or empty (hidden entries aside), or already holds a checkpoint of `model`
    (a run being resumed or redone). A folder of the user's own files is never written into."""
    folder = Path(folder)
    try:   # the name goes into config.json and the model card, which are UTF-8 text
        os.fsencode(str(folder)).decode("utf-8")
    except UnicodeDecodeError:
        return "is not a valid UTF-8 path"
    if not os.path.lexists(folder):
        for parent in folder.absolute().parents:
            if os.path.lexists(parent):
                return None if parent.is_dir() else f"is under {parent}, which is a file"
        return None
    if not folder.is_dir():
        return "is not a folder"
    if not [n for n in os.listdir(folder) if not n.startswith(".")]:
        return None
    try:
        cfg = json.loads((folder / CONFIG).read_bytes())
    except (OSError, ValueError):
        return "is not empty and holds no zoo checkpoint"
    if not isinstance(cfg, dict) or "config" not in cfg or not isinstance(cfg.get("model"), str):
        return f"holds a {CONFIG} that zoo did not write"
    if model is not None and cfg["model"] != model:
        return f"holds a checkpoint of '{cfg['model']}', not of '{model}'"
    return None


def check_out_folder(folder: str | Path, model: str | None) -> None:
    """Raise (one line) when `out_folder_problem` finds one."""
    why = out_folder_problem(folder, model)
    if why:
        raise CheckpointError(f"{folder} {why}; refusing to write there (choose an empty or new --out)")


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold `<folder>/.train/run.lock` for as long as a run writes the folder: a second process
    aiming at the same folder fails at once instead of silently replacing the first one's work.
    The kernel drops the lock when the holder dies, even by kill -9."""
    from filelock import FileLock, Timeout

    path = Path(folder) / ".train" / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CheckpointError(f"another zoo process is writing {folder}; wait for it to finish or "
                              f"choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def save_checkpoint(folder: str | Path, model, meta: dict[str, Any], *, dtype: str | None = None,
                    card: bool = True) -> Path:
    """Write a checkpoint folder atomically (temp folder, then rename).

    `meta` holds model, tag, task, dataset, config (builder kwargs), metrics, eval_data, command,
    license. `dtype="float16"` stores floating weights in half precision (buffers too)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    check_out_folder(folder, meta.get("model"))   # never over a user's own config.json/README.md
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if dtype == "float16" and v.is_floating_point():
            v = v.half()
        state[k] = v
    # tied weights share storage; safetensors refuses shared tensors, so store copies
    seen: set[int] = set()
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen and v.numel():
            state[k] = v.clone()
        seen.add(ptr)
    meta = {"zoo_version": __version__, "weights_dtype": dtype or "float32", **meta}
    # where and with what the weights were made, captured now (the card renders it on push)
    meta["provenance"] = {**environment(), **(meta.get("provenance") or {})}
    # each file is written to a temp name and renamed: a kill never leaves half a file, and the
    # folder's other content (a run's training state) stays
    atomic_write(folder / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    atomic_write(folder / CONFIG, lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"))
    if card:
        card_obj = make_card(meta)
        if card_obj is not None:
            atomic_write(folder / CARD, lambda p: card_obj.save(str(p)))
    return folder


def zoo_commit() -> str | None:
    """`git describe --always --dirty` of the checkout zoo runs from, or None (an installed wheel,
    no git): the card then names the version only."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        got = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--tags"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return got.stdout.strip() or None if got.returncode == 0 else None


def environment() -> dict:
    """This process's side of a checkpoint's provenance: zoo version and commit, Python and torch
    versions, the CPU model, core count and torch threads, and the time (UTC) it was written."""
    import datetime
    import platform
    import sys

    hw = {"cpu": cpu_model(), "cores": os.cpu_count()}
    torch_version = None
    torch = sys.modules.get("torch")   # a run has it imported; never imported just for this
    if torch is not None:
        torch_version = torch.__version__
        hw["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hw["gpu"] = torch.cuda.get_device_name(0)
    out = {"zoo_version": __version__, "zoo_commit": zoo_commit(), "python": platform.python_version(),
           "torch": torch_version, "hardware": hw,
           "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return {k: v for k, v in out.items() if v is not None}


def add_provenance(folder: str | Path, extra: dict) -> dict:
    """Merge `extra` (what only the caller knows: wall time, device, data identity) into the
    checkpoint's recorded provenance, then rewrite config.json and the card atomically."""
    folder = Path(folder)
    meta = read_config(folder)
    prov = dict(meta.get("provenance") or {})
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(prov.get(key), dict):
            prov[key] = {**prov[key], **value}
        else:
            prov[key] = value
    meta["provenance"] = prov
    atomic_write(folder / CONFIG, lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"))
    if (folder / CARD).is_file():
        card_obj = make_card(meta)
        if card_obj is not None:
            atomic_write(folder / CARD, lambda p: card_obj.save(str(p)))
    return meta


def make_card(meta: dict):
    """The model card for `meta`, or None where huggingface_hub (which writes it) is not installed:
    weights can be saved without it."""
    from zoo.card import make_model_card

    try:
        return make_model_card(meta)
    except ImportError:
        return None


def fit_state_dict(model, state: dict, what: str, strict: bool = True) -> dict:
    """Check `state` against the model's own keys and shapes (one line naming the first misfit) and
    cast it to the model's dtypes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. '{unexpected[0]}')")
        raise CheckpointError(f"{what} do not match the architecture: " + ", ".join(parts))
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{what}: '{k}' has shape {tuple(v.shape)}, the architecture expects "
                                  f"{tuple(own[k].shape)}; the config does not match these weights")
    return {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}


def load_weights(model, folder: str | Path, strict: bool = True):
    """Load model.safetensors into `model` (dtype cast to the model's). Shape mismatches -> one line."""
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS} is missing")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    state = fit_state_dict(model, state, f"{path}: weights", strict=strict)
    model.load_state_dict(state, strict=strict)
    return model
