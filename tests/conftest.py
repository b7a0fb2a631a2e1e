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
