import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from zoo._io import atomic_torch_save
from zoo.errors import CheckpointError
from tests.conftest import ROOT, run_zoo

ARGS = ["finetune", "deeponet", "--dataset", "antiderivative", "-o", "size=400", "-o", "no_eval=true",
        "--steps", "60", "-b", "50", "--save-every", "5", "--json"]


def _final(out):
    st = torch.load(out / ".train" / "state.pt", weights_only=True)
    return st["history"][-1][1], st["module"]


def test_resume_after_kill_ends_like_an_uninterrupted_run(tmp_path):
    ref = tmp_path / "ref"
    done = run_zoo(*ARGS, "--out", str(ref))
    assert done.returncode == 0, done.stderr
    ref_loss, ref_state = _final(ref)

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", *ARGS, "--out", str(run)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / ".train" / "state.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.is_file():
            try:
                if torch.load(state, weights_only=True)["step"] >= 10:
                    break
            except Exception:
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state, weights_only=True)["step"]
    done = run_zoo(*ARGS, "--out", str(run), "--resume")
    assert done.returncode == 0, done.stderr
    loss, st = _final(run)
    assert abs(loss - ref_loss) <= 1e-6, (killed_at, loss, ref_loss)
    for k in ref_state:
        assert torch.allclose(st[k], ref_state[k], atol=1e-6), k
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 60


def test_resume_with_nothing_to_resume(tmp_path):
    done = run_zoo(*ARGS, "--out", str(tmp_path / "empty"), "--resume")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: nothing to resume in {tmp_path / 'empty'}: no training "
                                                f"state (.train/state.pt) there"]


def test_a_write_killed_midway_leaves_the_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_torch_save({"step": 1}, path)

    def boom(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt  # the process dies in the middle of writing

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "r"
    assert run_zoo(*ARGS[:-3], "--steps", "2", "--out", str(out)).returncode == 0
    done = run_zoo(*ARGS[:-3], "--steps", "2", "--out", str(out))
    assert done.returncode == 1 and "--resume" in done.stderr


@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    out = tmp_path / "ddp"
    done = run_zoo("finetune", "deeponet", "--dataset", "darcy", "-o", "size=40", "--steps", "6", "-b", "8",
                   "--nproc-per-node", "2", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert (out / "model.safetensors").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["branch"] == "cnn" and "rel_l2" in cfg["metrics"]


def test_a_learning_curve_records_the_test_metrics_and_leaves_the_weights_alone(tmp_path):
    from safetensors.torch import load_file

    from zoo.verbs.finetune import finetune
    common = dict(dataset="antiderivative", steps=12, batch_size=50, pretrained=False, progress=False)
    plain = finetune("deeponet", out=tmp_path / "plain", options={"size": 400}, **common)
    curved = finetune("deeponet", out=tmp_path / "curve", options={"size": 400, "eval_every": 5}, **common)
    points = json.loads((tmp_path / "curve" / "curve.json").read_text())["points"]
    assert [p["step"] for p in points] == [5, 10, 12]
    assert points[-1]["rel_l2"] == pytest.approx(curved["metrics"]["rel_l2"], rel=1e-9)
    assert points[0]["rel_l2"] != points[-1]["rel_l2"]          # measured at each step, not copied
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 1000
    assert curved["metrics"]["rel_l2"] == plain["metrics"]["rel_l2"]
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "curve" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)             # evaluating between steps changes nothing
    assert not (tmp_path / "plain" / "curve.json").exists()


def test_a_learning_curve_can_measure_the_training_split_too(tmp_path):
    from zoo.verbs.finetune import finetune
    finetune("deeponet", dataset="antiderivative", steps=6, batch_size=50, pretrained=False, progress=False,
             out=tmp_path / "c", options={"size": 400, "eval_every": 3, "curve_train": True, "no_eval": False})
    points = json.loads((tmp_path / "c" / "curve.json").read_text())["points"]
    assert [p["step"] for p in points] == [3, 6]
    assert all(p["train_rel_l2"] > 0 and p["train_rel_l2"] != p["rel_l2"] for p in points)


@pytest.mark.parametrize("options, needle", [({"eval_every": 5, "no_eval": True}, "no_eval"),
                                             ({"curve_train": True}, "eval_every=N")])
def test_curve_options_that_would_do_less_than_asked_are_one_line(tmp_path, options, needle):
    r = run_zoo("finetune", "deeponet", "--dataset", "antiderivative", "--scratch", "--steps", "2",
                "--out", str(tmp_path / "run"), *[a for k, v in options.items() for a in ("-o", f"{k}={v}")])
    assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
