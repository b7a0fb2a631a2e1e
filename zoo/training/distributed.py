"""Past one process: torchrun's command line, and evaluation sharded over processes.

Fine-tuning and evaluation both run under `torch.distributed.run`, whose own rendezvous joins the
nodes: `--standalone` on one machine, `--nnodes/--node-rank/--master-addr/--master-port` (static)
or `--rdzv-endpoint` with the c10d backend (elastic) past it, and `--max-restarts` for workers that
die. Evaluation shards the set in whole evaluation batches, each rank computing per-batch
statistics (`Task.evaluate_shard`); rank 0 gathers them in order and computes the metrics once
(`Task.merge_eval`), so the numbers are those of one process, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

RDZV_BACKENDS = ("static", "c10d", "etcd", "etcd-v2")


@dataclass
class Launch:
    """How the processes of one run find each other (torchrun's rendezvous arguments)."""
    nnodes: str = "1"                  # a count, or MIN:MAX for an elastic c10d job
    node_rank: int | None = None       # static rendezvous: this machine's place (0 = the one that writes)
    master_addr: str | None = None     # static rendezvous: node 0's address
    master_port: int | None = None
    rdzv_endpoint: str | None = None   # HOST:PORT of the c10d store (elastic)
    rdzv_backend: str | None = None
    rdzv_id: str | None = None         # the same on every node of one job
    max_restarts: int = 0              # torchrun restarts the workers this often after a failure

    @classmethod
    def of(cls, **kw) -> "Launch":
        """Checked launch arguments (None values take the defaults); bad ones are one line."""
        from zoo.errors import ConfigError, UnknownNameError
        for key in kw:
            if key not in cls.__dataclass_fields__:
                raise UnknownNameError("launch option", key, cls.__dataclass_fields__)
        launch = cls(**{k: v for k, v in kw.items() if v is not None})
        launch.nnodes = str(launch.nnodes)
        lo, _, hi = launch.nnodes.partition(":")
        if not (lo.isdigit() and int(lo) >= 1 and (not hi or (hi.isdigit() and int(hi) >= int(lo)))):
            raise ConfigError(f"--nnodes must be a whole number of at least 1 or MIN:MAX, not {launch.nnodes}")
        if launch.rdzv_backend is not None and launch.rdzv_backend not in RDZV_BACKENDS:
            raise ConfigError(f"--rdzv-backend must be one of {', '.join(RDZV_BACKENDS)}, not {launch.rdzv_backend}")
        if launch.rdzv_endpoint is not None:
            host, _, port = launch.rdzv_endpoint.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"--rdzv-endpoint must be HOST:PORT, not {launch.rdzv_endpoint}")
            if launch.rdzv_backend in (None, "static"):
                launch.rdzv_backend = "c10d" if launch.rdzv_backend is None else "static"
        if launch.master_port is not None and not 0 < int(launch.master_port) < 65536:
            raise ConfigError(f"--master-port must be in 1..65535, not {launch.master_port}")
        if not isinstance(launch.max_restarts, int) or launch.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be a whole number of at least 0, not {launch.max_restarts}")
        if launch.static_multi_node:
            n = int(lo)
            if hi:
                raise ConfigError("--nnodes MIN:MAX needs an elastic rendezvous: give --rdzv-endpoint HOST:PORT")
            if launch.node_rank is None or not 0 <= launch.node_rank < n:
                raise ConfigError(f"--nnodes {n} needs --node-rank in 0..{n - 1} (0 on the machine that writes --out)")
            if launch.master_addr is None or launch.master_port is None:
                raise ConfigError(f"--nnodes {n} needs --master-addr and --master-port (node 0's address and a "
                                  f"free port there), or --rdzv-endpoint HOST:PORT for an elastic c10d rendezvous")
        elif launch.node_rank is not None and launch.node_rank < 0:
            raise ConfigError(f"--node-rank must be at least 0, not {launch.node_rank}")
        return launch

    @property
    def multi_node(self) -> bool:
        return self.nnodes != "1"

    @property
    def static_multi_node(self) -> bool:
        return self.multi_node and self.rdzv_endpoint is None

    @property
    def writes(self) -> bool:
        """Whether this machine's launcher owns --out (checks and locks it): one node, or node 0 of
        a static rendezvous. An elastic rendezvous orders the nodes itself, so there the worker
        that becomes rank 0 checks and locks its node's --out."""
        return not self.multi_node or (self.rdzv_endpoint is None and not self.node_rank)

    @property
    def needed(self) -> bool:
        """Whether anything here asks for torchrun beyond one local process."""
        return self.multi_node or self.max_restarts > 0 or self.rdzv_endpoint is not None

    def flags(self, nproc: int) -> list[str]:
        """torch.distributed.run's arguments for `nproc` workers on this machine."""
        flags = [f"--nproc-per-node={nproc}", f"--nnodes={self.nnodes}", f"--max-restarts={self.max_restarts}"]
        if self.rdzv_endpoint is not None:
            flags += [f"--rdzv-backend={self.rdzv_backend}", f"--rdzv-endpoint={self.rdzv_endpoint}"]
            if self.rdzv_id is not None:
                flags.append(f"--rdzv-id={self.rdzv_id}")
            if self.node_rank is not None:
                flags.append(f"--node-rank={self.node_rank}")
        elif self.multi_node:
            flags += [f"--node-rank={self.node_rank}", f"--master-addr={self.master_addr}",
                      f"--master-port={self.master_port}"]
        else:
            flags.append("--standalone")   # a private rendezvous on a free local port
        return flags

    def to_dict(self) -> dict:
        return asdict(self)


def torchrun(flags: list[str], module: str, argv: list[str], env: dict, preexec_fn=None) -> None:
    """Run `python -m module argv` under torch.distributed.run; a failure is one line: the
    workers' own `zoo: ...` message when they printed one, else torchrun's last line."""
    from zoo.errors import ZooError
    cmd = [sys.executable, "-m", "torch.distributed.run", *flags, "-m", module, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **env}
    done = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    if done.returncode != 0:
        raise ZooError(failure_line(done.stderr, done.returncode))


def failure_line(stderr: str, code: int) -> str:
    """One line for a failed torchrun: a worker's own `zoo: ...` message, else the first Python
    error a worker raised (torchrun's report around it is a frame of rules), else its last line."""
    import re
    lines = [ln.strip() for ln in stderr.splitlines() if set(ln.strip()) - set("=-")]
    zoo_lines = [ln for ln in lines if ln.startswith("zoo: ")]
    if zoo_lines:
        return zoo_lines[-1][5:]
    errors = [ln for ln in lines if re.match(r"^(\[rank\d+\]: )?[\w.]*(Error|Exception)\b", ln)
              and "ChildFailedError" not in ln]
    why = errors[0] if errors else (lines[-1] if lines else "")
    return f"distributed run failed (exit {code}): {why[:300]}"


# ---- sharded evaluation --------------------------------------------------------------------------

def task_of(name: str, dataset: str | None):
    """The task of a model name or checkpoint folder, found without building anything."""
    import zoo.registry as reg
    from zoo.loading import is_checkpoint_dir
    from zoo.tasks import get_task
    if is_checkpoint_dir(name):
        from zoo.checkpoint import read_config
        meta = read_config(name)
        return get_task(meta.get("task") or reg.load_registry().models[meta["model"]].task)
    return get_task(reg.resolve(name, dataset)[1].task)


def evaluate_distributed(args: dict, nproc: int, launch: Launch | None = None) -> dict:
    """`zoo eval` over `nproc` processes (per node): refused for a task without the shard/merge
    contract; the result is rank 0's, in evaluate's own form."""
    from zoo.errors import ConfigError
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc-per-node must be a whole number of at least 1, not {nproc}")
    launch = launch or Launch()
    task = task_of(args["name"], args.get("dataset"))
    if not task.shards_eval():
        raise ConfigError(f"distributed evaluation (--nproc-per-node {nproc}) is not implemented for "
                          f"{task.name} models; evaluate with one process")
    with tempfile.TemporaryDirectory(prefix="zoo-eval-") as tmp:
        spec, result = Path(tmp) / "eval.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(args))
        torchrun(launch.flags(nproc), "zoo.training.distributed", [str(spec), str(result)], {})
        if not result.is_file():   # a node other than rank 0's: the metrics are printed there
            return {"model": args["name"], "metrics": {}, "note": "the metrics are reported by the node of rank 0"}
        return json.loads(result.read_text())


def _eval_worker(args: dict) -> dict | None:
    import torch
    import torch.distributed as dist

    from zoo.loading import dataset_for, is_checkpoint_dir, load, options_for, resolve_device
    from zoo.tasks.base import evaluate_sharded

    device = resolve_device(args.get("device"))
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    # gloo carries only the final gather of statistics, wherever the model runs
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        name = args["name"]
        loaded = load(name, dataset=args.get("dataset"), hub=args.get("hub"),
                      require_weights=not is_checkpoint_dir(name), device=device)
        opts = options_for(loaded, "eval", args.get("options"))
        ds, dataset = dataset_for(loaded, args.get("dataset"), args.get("data"), args.get("split", "test"), opts)
        with torch.inference_mode():
            metrics = evaluate_sharded(loaded.task, loaded.model, ds, opts, rank, world)
        if rank != 0:
            return None
        return {"model": loaded.full_name, "dataset": dataset or str(args.get("data")),
                "split": getattr(ds, "split", args.get("split", "test")), "metrics": metrics,
                "backend": "eager", "world_size": world}
    finally:
        dist.destroy_process_group()


def _main(argv: list[str]) -> int:
    from zoo.errors import ZooError
    spec, result_path = Path(argv[0]), Path(argv[1])
    try:
        result = _eval_worker(json.loads(spec.read_text()))
    except ZooError as err:
        print(f"zoo: {err}", file=sys.stderr)
        return err.exit_code
    if result is not None:
        from zoo._io import atomic_write_text
        atomic_write_text(result_path, json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    from zoo.training.loop import exit_worker
    exit_worker(_main(sys.argv[1:]))
