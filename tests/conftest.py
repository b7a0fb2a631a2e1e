import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Generated data may be shared across tests (it is keyed by its parameters); the HF cache is private."""
    os.environ.setdefault("ZOO_DATA", str(Path.home() / ".cache" / "zoo" / "data"))
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield


def run_zoo(*args, env=None, timeout=600, cwd=None):
    """Run the CLI as a user would: a fresh process, its exit code and both streams."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or ROOT)


def registry_checkpoints(family: str) -> list[str]:
    """`name.tag` of every checkpoint of `family` whose registry entry pins metrics."""
    import zoo.registry as reg
    return [f"{n}.{t}" for n, e in reg.load_registry().models.items() if e.family == family
            for t, ck in e.checkpoints.items() if ck.metrics]


def assert_eval_reproduces_registry(full: str, rel: float = 1e-4, abs_: float = 1e-4) -> None:
    """Re-run `zoo eval NAME.TAG --json` as a user would and compare with the registry's metrics."""
    import json

    import zoo.registry as reg
    name, tag = full.split(".", 1)
    want = reg.load_registry().models[name].checkpoints[tag].metrics
    r = run_zoo("eval", full, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["metrics"]
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=rel, abs=abs_), k
