"""Issue 13, the faults left after the unsafe items and the hub: `--split` as a path, `--resume`
of the wrong state (and under DDP), a diverging run, and the traceback groups (a user's
config.json, `-o` values, data readers, image bombs, paths, convert). Every CLI case must end
with a non-zero exit, exactly one `error:` line on stderr, no traceback, and nothing written
outside the folder the user named."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import run_zoo  # noqa: E402

MODEL = "deeponet.antiderivative"
TINY = ("--dataset", "antiderivative", "-o", "size=20")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@pytest.fixture
def box(tmp_path):
    """A working folder and a private data cache; `box.run(...)` runs the CLI there and returns
    the result plus what appeared anywhere in the box outside the allowed folders."""
    class Box:
        cwd = tmp_path / "cwd"
        data = tmp_path / "data"

        def run(self, *args, allowed=(), env=None):
            self.cwd.mkdir(exist_ok=True)
            before = _files(tmp_path)
            r = run_zoo(*args, cwd=self.cwd, env={"ZOO_DATA": str(self.data), **(env or {})})
            new = {f for f in _files(tmp_path) - before
                   if not f.startswith("data") and not any(f.startswith(a) for a in allowed)}
            return r, new
    return Box()


def assert_one_line(r, new=frozenset(), *words):
    err = r.stderr
    assert r.returncode != 0, (r.stdout, err)
    assert "Traceback" not in err and "Traceback" not in r.stdout, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]
    assert not new, f"written outside the run folder: {sorted(new)}"
    return lines[0]


# ---- item 7: --split is one of the dataset's splits ------------------------------------------
@pytest.mark.parametrize("split", ["../../x", "/tmp/zoo-split-abs", "nope", "train/../../y", ""])
def test_split_must_be_a_split_of_the_dataset(box, split, tmp_path):
    r, new = box.run("eval", MODEL, *TINY, "--split", split)
    line = assert_one_line(r, new, "train, val, test")
    assert "split" in line
    # nothing under or beside the data cache took the split's name
    assert not any("x" == Path(f).stem or "y" == Path(f).stem for f in _files(tmp_path))
    assert not Path("/tmp/zoo-split-abs").exists() and not list(Path("/tmp").glob("zoo-split-abs*"))


def test_split_check_is_central():
    """dataset_for refuses before any loader runs (every verb goes through it)."""
    import zoo.loading as loading
    from zoo.errors import DataError

    loaded = loading.load(MODEL, pretrained=False)
    with pytest.raises(DataError, match="choose from train, val, test"):
        loading.dataset_for(loaded, "antiderivative", None, "../x", {})
    assert loaded.task.splits_of("antiderivative") == ("train", "val", "test")


# ---- item 6 (resume) and a diverging run --------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    r = run_zoo("finetune", MODEL, *TINY, "--scratch", "--steps", "4", "--save-every", "2",
                "-o", "no_eval=true", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / ".train" / "run.lock").unlink(missing_ok=True)
    return dst


def _edit_state(path: Path, **changes):
    import torch
    st = torch.load(path, weights_only=True)
    st.update(changes)
    torch.save(st, path)


@pytest.mark.parametrize("fault", ["truncated", "garbage", "other-model", "other-config", "wrong-shapes"])
def test_resume_of_a_state_that_does_not_fit(box, finished_run, fault):
    out = _copy_run(finished_run, box.cwd / "run")
    state = out / ".train" / "state.pt"
    if fault == "truncated":
        state.write_bytes(state.read_bytes()[:3000])
    elif fault == "garbage":
        state.write_bytes(b"not a state at all")
    elif fault == "other-model":
        _edit_state(state, model="resnet20")
    elif fault == "other-config":
        _edit_state(state, config=json.dumps({"sensors": 50}))
    elif fault == "wrong-shapes":
        import torch
        st = torch.load(state, weights_only=True)
        st.pop("config")
        st["module"] = {k: torch.zeros(3) for k in st["module"]}
        torch.save(st, state)
    before = state.read_bytes()
    r, new = box.run("finetune", MODEL, *TINY, "--scratch", "--steps", "6", "--resume", "-o", "no_eval=true",
                     "--out", "run", allowed=("cwd/run",))
    assert_one_line(r, new, str(Path("run") / ".train" / "state.pt"))
    assert state.read_bytes() == before   # the run's state is left as it was


def test_resume_continues_from_the_saved_step(box, finished_run):
    out = _copy_run(finished_run, box.cwd / "run")
    r, _ = box.run("finetune", MODEL, *TINY, "--scratch", "--steps", "6", "--resume", "-o", "no_eval=true",
                   "--out", "run", "--json", allowed=("cwd/run",))
    assert r.returncode == 0, r.stderr
    import torch
    st = torch.load(out / ".train" / "state.pt", weights_only=True)
    assert st["step"] == 6 and st["model"] == "deeponet" and [h[0] for h in st["history"]] == list(range(1, 7))


def test_diverging_run_stops_and_keeps_the_last_good_state(box):
    import torch
    r, new = box.run("finetune", MODEL, *TINY, "--scratch", "--steps", "8", "--save-every", "1",
                     "--lr", "1e30", "--out", "run", allowed=("cwd/run",))
    assert_one_line(r, new, "diverged", "NaN/inf")
    run = box.cwd / "run"
    assert not (run / "model.safetensors").exists()   # no checkpoint of NaN weights
    state = run / ".train" / "state.pt"
    if state.exists():   # the state on disk is finite: the last good step
        st = torch.load(state, weights_only=True)
        assert all(torch.isfinite(v).all() for v in st["module"].values() if v.is_floating_point())


def test_ddp_resume_reads_on_rank_zero_and_broadcasts(monkeypatch):
    """Under DDP only rank 0 reads the state file; the others get what it broadcasts."""
    import zoo.training.loop as loop

    reads, sent = [], []

    def broadcast_object_list(box, src=0):
        if box[0] is None:
            box[0] = sent[0]
        else:
            sent.append(box[0])

    import torch.distributed
    monkeypatch.setattr(torch.distributed, "broadcast_object_list", broadcast_object_list)
    monkeypatch.setattr(loop, "_load_state_file", lambda path, loaded: (reads.append(path), ({"step": 7}, None))[1])
    assert loop._read_state(Path("s.pt"), None, 0, 2) == {"step": 7}
    assert loop._read_state(Path("s.pt"), None, 1, 2) == {"step": 7}
    assert reads == [Path("s.pt")]   # rank 1 never touched the file
