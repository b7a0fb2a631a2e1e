"""zoo.convert: official pickles are read without running their code; a family key map turns them
into our state dict, which loads strictly into our model and becomes a checkpoint folder."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from hubtools import tiny  # noqa: E402

import importlib  # noqa: E402

zconvert = importlib.import_module("zoo.converters")
convert_verb = importlib.import_module("zoo.verbs.convert")
from zoo.converters.safe_pickle import UnsafePickleError  # noqa: E402
from zoo.errors import CheckpointError, ConfigError  # noqa: E402


class RunsACommand:
    """What a malicious checkpoint carries: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


def test_plain_pickle_calling_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"weight": [1.0], "payload": RunsACommand(marker)}))
    # the payload is real: plain pickle would run it
    pickle.loads(src.read_bytes())
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafePickleError) as err:
        zconvert.read_official(src)
    assert f"'{os.system.__module__}.system'" in str(err.value)
    assert not marker.exists()


def test_torch_zip_checkpoint_calling_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "payload": RunsACommand(marker)}, src)
    with pytest.raises(UnsafePickleError, match=r"'(posix|nt)\.system'"):
        zconvert.read_official(src, official_modules=("models",))
    assert not marker.exists()


def test_eval_and_nested_pickles_are_refused(tmp_path):
    src = tmp_path / "eval.pt"
    torch.save({"w": torch.ones(1), "x": CallsEval()}, src)
    with pytest.raises(UnsafePickleError, match="'builtins.eval'"):
        zconvert.read_official(src)
    # a tensor pickled with plain pickle goes through torch.storage._load_from_bytes, which
    # torch.load()s the inner bytes: the inner pickle gets the same restrictions
    marker = tmp_path / "pwned"
    inner = tmp_path / "inner.pt"
    torch.save({"payload": RunsACommand(marker)}, inner)

    class Nested:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (inner.read_bytes(),))

    outer = tmp_path / "outer.pkl"
    outer.write_bytes(pickle.dumps({"w": Nested()}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"'(posix|nt)\.system'"):
        zconvert.read_official(outer)
    assert not marker.exists()


def _official_checkpoint(tmp_path: Path, seed: int = 0) -> tuple[Path, dict]:
    """Write the 'official' code to a folder only a subprocess imports, pickle a whole model with
    it, and return the file and its state dict."""
    code = tmp_path / "official_code" / "official_tiny"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    (code / "nets.py").write_text(tiny.OFFICIAL_SOURCE)
    src = tmp_path / "official.pt"
    script = (f"import torch, numpy, argparse; from official_tiny.nets import TinyNet; torch.manual_seed({seed}); "
              f"net = TinyNet().half(); torch.save({{'model': net, 'epoch': 300, 'best_fitness': numpy.float64(0.9), "
              f"'opt': argparse.Namespace(lr=0.01)}}, {str(src)!r}); "
              f"torch.save(net.state_dict(), {str(tmp_path / 'reference.pt')!r})")
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": str(code.parent),
                                                                    "OMP_NUM_THREADS": "1"})
    return src, torch.load(tmp_path / "reference.pt", weights_only=True)


def test_whole_model_pickle_is_read_through_stand_ins(tmp_path):
    src, reference = _official_checkpoint(tmp_path)
    assert "official_tiny" not in sys.modules  # the official code is never imported here
    with pytest.raises(pickle.UnpicklingError):
        torch.load(src, weights_only=True)  # why the restricted unpickler exists
    with pytest.raises(UnsafePickleError, match="'official_tiny.nets.TinyNet'"):
        zconvert.read_official(src)  # official module paths must be declared
    raw = zconvert.read_official(src, official_modules=tiny.OFFICIAL_MODULES)
    assert sorted(raw) == sorted(f"model.{k}" for k in reference)  # the non-persistent buffer is left out
    assert all(torch.equal(raw[f"model.{k}"], v) for k, v in reference.items())
    assert raw["model.layers.0.weight"].dtype == torch.float16


@pytest.fixture()
def tiny_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY", str(tiny.write_registry(tmp_path / "registry.yaml",
                                                               converter="hubtools.tiny:convert_state_dict")))


def test_convert_writes_a_checkpoint_that_loads_strictly(tmp_path, tiny_registry):
    import zoo

    src, reference = _official_checkpoint(tmp_path)
    out = convert_verb.convert("tiny-mlp", src, tmp_path / "converted")
    meta = __import__("json").loads((out / "config.json").read_text())
    assert meta["model"] == "tiny-mlp" and meta["converted_from"]["file"] == "official.pt"
    assert meta["converted_from"]["sha256"] == __import__("zoo.hub", fromlist=["x"]).sha256_file(src)
    assert meta["weights_dtype"] == "float16"  # fp16 official weights stay fp16: nothing lost
    assert (out / "README.md").is_file()
    model = zoo.create_model(str(out))
    for k, v in reference.items():
        assert torch.equal(model.state_dict()[k.removeprefix("layers.")].half(), v)


def test_convert_refuses_weights_that_do_not_fit(tmp_path, tiny_registry):
    src, _ = _official_checkpoint(tmp_path)
    tiny.write_registry(os.environ["ZOO_REGISTRY"], depth=3,  # our config has one layer more
                        converter="hubtools.tiny:convert_state_dict")
    with pytest.raises(CheckpointError) as err:
        convert_verb.convert("tiny-mlp", src, tmp_path / "converted")
    assert "converted weights for 'tiny-mlp' do not match" in str(err.value) and "missing" in str(err.value)
    assert not (tmp_path / "converted").exists()


def test_convert_without_a_key_map_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY", str(tiny.write_registry(tmp_path / "registry.yaml")))
    with pytest.raises(ConfigError, match="no converter for official 'tiny' checkpoints"):
        convert_verb.convert("tiny-mlp", tmp_path / "x.pt", tmp_path / "out")


def test_unreadable_files_are_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as err:
        zconvert.read_official(tmp_path / "junk.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        zconvert.read_official(tmp_path / "missing.pt")


def test_key_map_helpers():
    state = {"ema.a.b": 1, "model.a.b": 2, "model.c": 3}
    assert zconvert.pick_prefix(state, ("ema.", "model.")) == {"a.b": 1}
    assert zconvert.strip_prefix(state, "model.") == {"a.b": 2, "c": 3}
    assert zconvert.rename({"x.0.w": 1}, [(r"^x\.", "y."), (r"\.w$", ".weight")]) == {"y.0.weight": 1}
    with pytest.raises(CheckpointError):
        zconvert.pick_prefix(state, ("nope.",))
