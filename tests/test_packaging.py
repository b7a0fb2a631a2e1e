"""`pip install .` (not only editable) must work: the wheel carries the registry and the Typer app
inside the zoo package, and installs no top-level module named `cli`."""

import json
import os
import subprocess
import sys
import zipfile

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
