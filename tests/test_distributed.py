"""Past one machine: torchrun's rendezvous for fine-tuning (two "nodes" on 127.0.0.1 end with the
weights of one 2-process node), evaluation sharded over processes with exactly one process's
metrics, and elastic restarts that resume from the run's last saved state."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zoo
from tests.conftest import ROOT, run_zoo
from zoo.errors import ConfigError, UnknownNameError
from zoo.tasks.base import shard_ranges
from zoo.training.distributed import Launch

TINY = ["deeponet", "--dataset", "antiderivative", "-o", "size=400", "-o", "no_eval=true", "-b", "50", "--json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)])}


def _zoo(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zoo", *args], cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout=240) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)


def _weights(out: Path) -> dict:
    return torch.load(out / ".train" / "state.pt", weights_only=True)["module"]


def _assert_same_weights(a: dict, b: dict, tol=1e-6):
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= tol, worst


# ---- shards -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,batch,world", [(10, 3, 2), (10, 3, 5), (0, 4, 2), (3, 8, 2), (1000, 7, 3)])
def test_shards_are_whole_batches_covering_the_set_in_order(n, batch, world):
    shards = shard_ranges(n, batch, world)
    assert len(shards) == world
    assert [i for r in shards for i in r] == list(range(n))
    for r in shards:
        assert r.start % batch == 0 or r.start == n   # each shard begins on a batch boundary
    batches = [-(-len(r) // batch) for r in shards]
    assert max(batches) - min(batches) <= 1   # as even as whole batches allow


def _split_evaluation(task, model, ds, opts, world):
    """What `world` ranks would compute, merged as rank 0 does, in this one process."""
    shards = shard_ranges(len(ds), task.eval_batch_size(opts), world)
    with torch.inference_mode():
        return task.merge_eval(ds, [task.evaluate_shard(model, ds, r, opts) for r in shards], opts)


def test_operator_metrics_merged_from_shards_are_exactly_one_process_metrics():
    from zoo.loading import dataset_for, load, options_for
    loaded = load("deeponet", pretrained=False, dataset="antiderivative")
    opts = options_for(loaded, "eval", {"size": 50, "batch_size": 7})
    ds, _ = dataset_for(loaded, "antiderivative", None, "test", opts)
    with torch.inference_mode():
        whole = loaded.task.evaluate(loaded.model, ds, opts)
    for world in (2, 3, 9):
        assert _split_evaluation(loaded.task, loaded.model, ds, opts, world) == whole
    assert whole["samples"] == 50 and whole["mse"] > 0


def test_classification_metrics_merged_from_shards_are_exactly_one_process_metrics(tmp_path):
    from tests.test_classification import make_fashion_mnist
    from zoo.data import image_classification as icd
    from zoo.tasks.classification import ClassificationTask

    make_fashion_mnist(tmp_path / "f", n_train=4, n_test=30)
    torch.manual_seed(0)
    model = zoo.create_model("resnet32", depth=20, in_chans=1, img_size=28, mean=[0.286], std=[0.353]).eval()
    ds = icd.load("fashion-mnist", "test", str(tmp_path / "f"))
    task, opts = ClassificationTask(), {"batch_size": 4}
    with torch.no_grad():
        whole = task.evaluate(model, ds, opts)
    for world in (2, 4, 16):   # 16 ranks: some shards are empty
        assert _split_evaluation(task, model, ds, opts, world) == whole
    assert whole["samples"] == 30


# ---- launch arguments ---------------------------------------------------------------------------

def test_rendezvous_arguments_reach_torchrun():
    assert "--standalone" in Launch.of().flags(2)
    static = Launch.of(nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29400).flags(1)
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29400"} <= set(static)
    assert "--standalone" not in static
    elastic = Launch.of(nnodes="1:2", rdzv_endpoint="h:29400", max_restarts=3, rdzv_id="job").flags(2)
    assert {"--nnodes=1:2", "--rdzv-backend=c10d", "--rdzv-endpoint=h:29400", "--max-restarts=3",
            "--rdzv-id=job"} <= set(elastic)
    assert not Launch.of().needed and Launch.of(max_restarts=1).needed
    # who checks and locks --out: one node; node 0 of a static job; in an elastic job, rank 0 itself
    assert Launch.of().writes and Launch.of(rdzv_endpoint="h:1", max_restarts=1).writes
    assert Launch.of(nnodes=2, node_rank=0, master_addr="a", master_port=1).writes
    assert not Launch.of(nnodes=2, node_rank=1, master_addr="a", master_port=1).writes
    assert not Launch.of(nnodes=2, node_rank=0, rdzv_endpoint="h:1").writes


@pytest.mark.parametrize("kw,fragment", [
    (dict(nnodes=2), "--node-rank"),
    (dict(nnodes=2, node_rank=2, master_addr="a", master_port=1), "--node-rank in 0..1"),
    (dict(nnodes=2, node_rank=0), "--master-addr and --master-port"),
    (dict(nnodes="2:1"), "--nnodes"),
    (dict(nnodes="1:2", node_rank=0, master_addr="a", master_port=1), "--rdzv-endpoint"),
    (dict(rdzv_endpoint="nohost"), "HOST:PORT"),
    (dict(rdzv_endpoint="h:1", rdzv_backend="zmq"), "--rdzv-backend"),
    (dict(max_restarts=-1), "--max-restarts"),
    (dict(master_port=70000), "--master-port"),
])
def test_bad_rendezvous_arguments_are_one_line(kw, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        Launch.of(**kw)


def test_unknown_launch_key_names_the_closest():
    with pytest.raises(UnknownNameError, match="node_rank"):
        Launch.of(node_rnk=1)


def test_cli_multi_node_without_a_rank_is_one_line(tmp_path):
    done = run_zoo("finetune", *TINY, "--steps", "2", "--nnodes", "2", "--out", str(tmp_path / "r"))
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "--node-rank" in done.stderr and not (tmp_path / "r").exists()


def test_cli_distributed_eval_of_a_task_without_shards_is_refused_in_one_line():
    done = run_zoo("eval", "sinenet", "--dataset", "navier-stokes", "--nproc-per-node", "2")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not implemented for pde-rollout models" in lines[0], done.stderr


# ---- end to end (torchrun) ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("rendezvous", ["static", "c10d"])
def test_two_nodes_end_with_the_weights_of_one_two_process_node(tmp_path, rendezvous):
    """Two "nodes" of one process each on 127.0.0.1 against `--nproc-per-node 2`: the same data
    shards and all-reduce, so the same weights. static: `--node-rank 0/1 --master-addr/--master-port`
    (node 0 writes); c10d: `--rdzv-endpoint`, where the rendezvous picks rank 0 and that worker
    checks, locks and writes --out."""
    steps = ["--steps", "6", "--save-every", "3"]
    port = str(_free_port())
    ref = _zoo("finetune", *TINY, *steps, "--nproc-per-node", "2", "--out", str(tmp_path / "ref"))
    node = ["--nnodes", "2", "--out", str(tmp_path / "mn")]
    if rendezvous == "static":
        node += ["--master-addr", "127.0.0.1", "--master-port", port]
        nodes = [_zoo("finetune", *TINY, *steps, *node, "--node-rank", str(r)) for r in (0, 1)]
    else:
        node += ["--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes"]
        nodes = [_zoo("finetune", *TINY, *steps, *node) for _ in (0, 1)]
    summaries, sref = [_finish(n) for n in nodes], _finish(ref)
    s0, s1 = sorted(summaries, key=lambda x: x["rank"])
    if rendezvous == "static":
        assert summaries[0] is s0   # --node-rank 0 holds rank 0
    assert s0["world_size"] == s1["world_size"] == sref["world_size"] == 2
    assert s0["rank"] == 0 and s1["rank"] == 1 and s1["notes"] and "metrics" not in s1
    assert s0["steps"] == sref["steps"] == 6 and s0["final_loss"] == sref["final_loss"]
    _assert_same_weights(_weights(tmp_path / "mn"), _weights(tmp_path / "ref"))
    assert (tmp_path / "mn" / "model.safetensors").is_file()


def _evals(*args) -> tuple[dict, dict]:
    """`zoo eval ARGS --json` in one process and in two (started together), as the user sees them."""
    one, two = _zoo("eval", *args, "--json"), _zoo("eval", *args, "--json", "--nproc-per-node", "2")
    one, two = _finish(one), _finish(two)
    assert two["world_size"] == 2
    for key in ("model", "dataset", "split"):
        assert one[key] == two[key]
    return one["metrics"], two["metrics"]


@pytest.mark.slow
def test_distributed_eval_of_an_operator_gives_one_process_metrics():
    args = ("deeponet.antiderivative", "-o", "size=300", "-b", "64")   # 5 batches over 2 ranks
    one, two = _evals(*args)
    assert one == two and one["samples"] == 300 and one["mse"] > 0


@pytest.mark.slow
def test_distributed_eval_of_a_classifier_gives_one_process_metrics(tmp_path):
    from tests.test_classification import make_fashion_mnist
    from zoo.checkpoint import save_checkpoint

    make_fashion_mnist(tmp_path / "f", n_train=4, n_test=40)
    cfg = {"depth": 20, "in_chans": 1, "img_size": 28, "mean": [0.286], "std": [0.353]}
    torch.manual_seed(0)
    folder = save_checkpoint(tmp_path / "ck", zoo.create_model("resnet32", **cfg),
                             {"model": "resnet32", "tag": "fashion-mnist", "task": "classification",
                              "dataset": "fashion-mnist", "config": cfg, "metrics": {}, "license": "MIT"})
    args = (str(folder), "--dataset", "fashion-mnist", "--data", str(tmp_path / "f"), "-b", "8")
    one, two = _evals(*args)
    assert one == two and one["samples"] == 40


@pytest.mark.slow
def test_distributed_eval_of_a_detector_gathers_every_detection():
    args = ("mhaf-yolo-n", "--dataset", "trees", "-b", "2")   # 5 images: batches of 2, 2, 1
    one, two = _evals(*args)
    assert one == two and one["images"] == 5 and one["detections"] > 0


def _workers(spec: str) -> dict[int, int]:
    """local rank -> pid of the fine-tune workers started for this launch spec."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = dict(kv.split(b"=", 1) for kv in (entry / "environ").read_bytes().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if spec.encode() in cmd and b"torch.distributed.run" not in cmd and b"LOCAL_RANK" in env:
            found[int(env[b"LOCAL_RANK"])] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_killed_worker_is_restarted_and_the_run_resumes_from_its_saved_state(tmp_path):
    """Two local workers joined by an elastic c10d rendezvous, --max-restarts 1; rank 1 is
    SIGKILLed once a state is saved. torchrun restarts the group, which resumes from the saved step
    (not from 0) and ends with the weights of an uninterrupted 2-process run."""
    steps = ["--steps", "80", "--save-every", "10", "--nproc-per-node", "2", "--scratch"]
    ref = _zoo("finetune", *TINY, *steps, "--out", str(tmp_path / "ref"))
    out = tmp_path / "run"
    run = _zoo("finetune", *TINY, *steps, "--max-restarts", "1", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
               "--rdzv-id", "elastic-test", "--out", str(out))
    state, spec = out / ".train" / "state.pt", str(out / ".train" / "launch.json")
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline and not state.is_file() and run.poll() is None:
        time.sleep(0.05)
    workers = _workers(spec)
    assert state.is_file() and 1 in workers, "the workers never saved a state"
    saved = int(torch.load(state, weights_only=True)["step"])
    os.kill(workers[1], signal.SIGKILL)
    summary, sref = _finish(run), _finish(ref)
    assert summary["restarts"] == 1
    assert saved <= summary["resumed_from_step"] < 80 and summary["resumed_from_step"] > 0
    assert summary["steps"] == sref["steps"] == 80
    _assert_same_weights(_weights(out), _weights(tmp_path / "ref"))


# ---- who may write --out ------------------------------------------------------------------------

def _state(out: Path, run_id):
    from zoo._io import atomic_torch_save
    atomic_torch_save({"module": {}, "optimizer": {}, "scheduler": {}, "rng": torch.zeros(1), "step": 3,
                       "history": [], "run_id": run_id}, out / ".train" / "state.pt")


@pytest.mark.parametrize("restarts,state_of,trains", [
    ("1", "this", True),      # torchrun restarted rank 0: it continues its own run
    ("1", "other", False),    # another run's folder is refused, restarted or not
    ("0", "this", False),     # a first attempt never trains over an existing state
])
def test_rank_zero_without_a_launcher_lock_checks_the_folder(tmp_path, monkeypatch, restarts, state_of, trains):
    import zoo.training.loop as loop
    from zoo.errors import CheckpointError

    out = tmp_path / "run"
    _state(out, "r1" if state_of == "this" else "r0")
    monkeypatch.delenv(loop.LOCKED_ENV, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", restarts)
    monkeypatch.setattr(loop, "_run", lambda args: "trained")
    args = {"name": "deeponet", "dataset": "antiderivative", "out": str(out), "run_id": "r1", "options": {}}
    if trains:
        assert loop.run(args) == "trained"
    else:
        with pytest.raises(CheckpointError, match="already holds a run"):
            loop.run(args)


def test_other_ranks_never_check_or_lock(tmp_path, monkeypatch):
    import zoo.training.loop as loop
    out = tmp_path / "run"
    _state(out, "someone-else")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(loop, "_run", lambda args: "trained")
    assert loop.run({"name": "deeponet", "out": str(out), "run_id": "r1", "options": {}}) == "trained"
    assert sorted(p.name for p in (out / ".train").iterdir()) == ["state.pt"]


def test_a_failed_torchrun_is_reported_by_its_first_worker_error():
    from zoo.training.distributed import failure_line
    report = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n[rank0]: RuntimeError: Gloo connect failed\n"
              "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n" + "=" * 60 + "\n")
    assert failure_line(report, 1) == "distributed run failed (exit 1): [rank0]: RuntimeError: Gloo connect failed"
    assert failure_line("noise\nzoo: the training set is empty\n" + "=" * 60, 1) == "the training set is empty"
    assert failure_line("=" * 60 + "\n", 3) == "distributed run failed (exit 3): "


def test_a_worker_ends_with_its_code_and_its_output_flushed():
    """Workers leave through os._exit (gloo's teardown can abort a finished worker); what they
    printed before that must still arrive, and the exit code must be theirs."""
    code = "from zoo.training.loop import exit_worker; import sys; print('out', end=''); " \
           "print('err', end='', file=sys.stderr); exit_worker(3)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), text=True, capture_output=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out", "err")
