"""`pip install .` (not only editable) must work: the wheel carries the registry and the Typer app
inside the zoo package, and installs no top-level module named `cli`."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_wheel_ships_registry_and_cli_inside_zoo(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("zoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "zoo/registry.yaml" in names and "zoo/cli/main.py" in names
    assert not [n for n in names if n.startswith("cli/")]
    assert not [n for n in names if n.startswith(("hub/", "tests/"))]

    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (target / "cli").exists()
    # run the installed copy from outside the checkout: it must find its own registry
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", "import sys; sys.argv=['zoo','list','--json'];"
                          "import zoo, zoo.__main__ as m; print(zoo.__file__, file=sys.stderr); m.main()"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert str(target) in run.stderr
    assert any(r["name"] == "deeponet" for r in json.loads(run.stdout))


@pytest.mark.slow
def test_installed_wheel_runs_the_main_job_offline(tmp_path):
    """`pip install .` then the README's main job, outside the checkout, with no network: the wheel
    ships deeponet.antiderivative as package data and the hub sources find it there."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("zoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "zoo/_hub/zoo/deeponet-antiderivative/model.safetensors" in names
    # a fresh venv (torch and friends from the system site: no reinstall), the wheel without deps
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    # this interpreter may itself be a venv: make its dependencies (torch, ...) visible through a
    # .pth line, which adds the folder but not the checkout's editable install found there
    import importlib.util
    deps = Path(importlib.util.find_spec("torch").origin).parents[1]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "_test_deps.pth").write_text(f"{deps}\n")
    done = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_HUB", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf"), OMP_NUM_THREADS="1",
               HF_ENDPOINT="http://127.0.0.1:9")   # nothing listens there: any request would fail
    run = subprocess.run([str(venv / "bin" / "zoo"), "eval", "deeponet", "--dataset", "antiderivative", "--json"],
                         capture_output=True, text=True, cwd=away, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(run.stdout)
    assert res["model"] == "deeponet.antiderivative" and res["metrics"]["rel_l2"] < 0.1
    where = subprocess.run([str(py), "-c", "import zoo; print(zoo.__file__)"], capture_output=True, text=True,
                           cwd=away, env=env)
    assert str(venv) in where.stdout, where.stdout
