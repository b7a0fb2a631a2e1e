"""The habits a timm/ultralytics user brings (issue 12): run folders wherever a name is, fine-tuning
from the checkpoint into auto-numbered runs, --version/-h, wildcards, output that fits 80 columns,
counts as integers, metric definitions, and messages that say what happened."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_zoo

NARROW = {"COLUMNS": "80"}
FAST = ["--steps", "3", "-b", "16", "-o", "no_eval=true", "-o", "size=200"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("habits")
    done = run_zoo("finetune", "deeponet", "--dataset", "antiderivative", *FAST, "--out", str(tmp / "a"))
    assert done.returncode == 0, done.stderr
    return tmp / "a"


def _fits(text: str, width: int = 80) -> None:
    long = [ln for ln in text.splitlines() if len(ln) > width]
    assert not long, long


# ---- the basics ---------------------------------------------------------------------------------

def test_version_and_short_help():
    from zoo._version import __version__
    done = run_zoo("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"zoo {__version__}"
    done = run_zoo("eval", "-h")
    assert done.returncode == 0 and "--dataset" in done.stdout


def test_list_pattern_and_80_columns():
    done = run_zoo("list", "mhaf*", env=NARROW)
    assert done.returncode == 0, done.stderr
    names = re.findall(r"^(\S+)\s", done.stdout, re.M)
    assert {"mhaf-yolo-n", "mhaf-yolo-s", "mhaf-yolo-lite-n", "mhaf-yolo-m"} <= set(names)
    assert "deeponet" not in names
    full = run_zoo("list", env=NARROW)
    _fits(full.stdout)
    every = [r["name"] for r in json.loads(run_zoo("list", "--json").stdout)]
    for name in every:   # no name cut with an ellipsis
        assert re.search(rf"^{re.escape(name)}\s", full.stdout, re.M), name
    assert "…" not in full.stdout


def test_info_fits_80_columns_and_counts_are_integers():
    for name in ("deeponet", "mhaf-yolo-n", "drift-net", "versatileffn-mini"):
        done = run_zoo("info", name, env=NARROW)
        assert done.returncode == 0, done.stderr
        _fits(done.stdout)
        assert "…" not in done.stdout
    text = run_zoo("info", "mhaf-yolo-n", env=NARROW).stdout
    assert "2.2M" in text and "2200000" not in text
    data = json.loads(run_zoo("info", "mhaf-yolo-n", "--json").stdout)
    params = [r["value"] for r in data["reported"] if r["metric"] == "params"]
    assert params and all(isinstance(v, int) for v in params)
    # checkpoint names whole on one line
    assert re.search(r"^mhaf-yolo-n\.trees \(default\)", text, re.M)
    # and the checkpoint's note (how it was trained, what its curve says) is shown, not only in --json
    note = next(ck["note"] for ck in data["checkpoints"].values())
    assert " ".join(note.split()[:6]) in " ".join(text.split())


def test_info_shows_metric_definitions_without_importing_torch():
    done = run_zoo("info", "deeponet")
    assert "rel_l2: relative L2 error" in " ".join(done.stdout.split())
    data = json.loads(run_zoo("info", "deeponet", "--json").stdout)
    assert set(data["metric_definitions"]) >= {"rel_l2", "mse"}
    for args in (["info", "deeponet"], ["list"], ["info", "deeponet", "--json"]):
        t = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", *args], capture_output=True,
                           text=True, cwd=ROOT)
        assert t.returncode == 0
        assert not [ln for ln in t.stderr.splitlines() if re.search(r"\|\s+torch(\.|$)", ln)], args


def test_metric_definitions_read_from_source_equal_the_imported_tasks():
    import zoo.tasks as tasks
    for name in tasks.task_names():
        if name in ("pinn", "text-classification"):
            continue
        try:
            task = tasks.get_task(name)
        except Exception:   # a planned task without a class yet
            continue
        assert tasks.metric_definitions(name) == task.metric_definitions, name


def test_bench_table_fits_80_columns(run_dir):
    done = run_zoo("bench", str(run_dir), "--repeats", "2", "--device", "cpu", env=NARROW)
    assert done.returncode == 0, done.stderr
    _fits(done.stdout)
    assert str(run_dir) in done.stdout


# ---- run folders wherever a name is -------------------------------------------------------------

def test_info_of_a_run_folder(run_dir):
    done = run_zoo("info", str(run_dir), env=NARROW)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(run_dir))
    assert "a run of deeponet" in done.stdout and "zoo finetune deeponet" in done.stdout
    data = json.loads(run_zoo("info", str(run_dir), "--json").stdout)
    assert data["run"] is True and data["name"] == str(run_dir) and data["model"] == "deeponet"
    assert "rel_l2" in data["metric_definitions"]


def test_pull_of_a_run_folder_says_it_is_local(run_dir):
    done = run_zoo("pull", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert "already local" in done.stdout + done.stderr
    assert len((done.stdout + done.stderr).strip().splitlines()) == 1


def test_eval_of_a_run_is_reported_under_its_path(run_dir):
    done = run_zoo("eval", str(run_dir), "-o", "size=200", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == str(run_dir)


# ---- finetune starts from the checkpoint, runs are auto-numbered --------------------------------

def test_finetune_default_pretrained_and_auto_numbered_runs(tmp_path):
    first = run_zoo("finetune", "deeponet", "--dataset", "antiderivative", *FAST, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "from the checkpoint" in first.stdout
    assert "runs/finetune/deeponet-1" in first.stdout
    meta = json.loads((tmp_path / "runs/finetune/deeponet-1/config.json").read_text())
    assert "--pretrained" in meta["command"]
    second = run_zoo("finetune", "deeponet", "--dataset", "antiderivative", "--scratch", *FAST, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "from random init" in second.stdout and "runs/finetune/deeponet-2" in second.stdout
    meta = json.loads((tmp_path / "runs/finetune/deeponet-2/config.json").read_text())
    assert "--scratch" in meta["command"]
    # pretrained ends far below random init after the same 3 steps
    loss = lambda out: float(re.search(r"final loss ([0-9.e+-]+)", out).group(1))
    assert loss(first.stdout) < loss(second.stdout) / 10


def test_finetune_without_a_checkpoint_for_the_dataset_notes_scratch(tmp_path):
    from zoo.verbs.finetune import default_pretrained, next_run_dir
    assert default_pretrained("deeponet", "darcy") == (True, None)
    ok, note = default_pretrained("mhaf-yolo-n", "shapes")
    assert not ok and "no checkpoint for dataset 'shapes'" in note
    assert next_run_dir("deeponet", tmp_path).name == "deeponet-1"
    assert next_run_dir("deeponet", tmp_path).name == "deeponet-2"


def test_resume_without_out_is_one_line(tmp_path):
    done = run_zoo("finetune", "deeponet", "--dataset", "antiderivative", "--resume", cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--resume needs --out" in done.stderr
    assert not (tmp_path / "runs").exists()


# ---- messages that say what happened ------------------------------------------------------------

def test_a_folder_given_as_a_file_says_so(tmp_path):
    folder = tmp_path / "adir"
    folder.mkdir()
    done = run_zoo("convert", "mhaf-yolo-n", "--from", str(folder), "--out", str(tmp_path / "x"))
    assert done.returncode != 0 and "is a folder" in done.stderr and "not found" not in done.stderr
    done = run_zoo("eval", "gpt-mini", "--data", str(folder))
    assert done.returncode != 0 and "is a folder" in done.stderr and "Traceback" not in done.stderr


def test_predict_with_an_input_the_task_does_not_take(tmp_path):
    done = run_zoo("predict", "deeponet.antiderivative", "picture.png")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "take no INPUT ('picture.png')" in done.stderr and "predict needs a dataset" in done.stderr


def test_export_safetensors_of_a_fused_detector_and_whole_messages(tmp_path):
    out = tmp_path / "m.safetensors"
    done = run_zoo("export", "mhaf-yolo-n", "--format", "safetensors", "--out", str(out), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    from zoo.verbs.export import one_line
    assert one_line("Error(s) in loading state_dict for M:\n\tMissing key(s): a") == \
        "Error(s) in loading state_dict for M: Missing key(s): a"


def test_export_and_bench_say_they_are_working_on_stderr(tmp_path):
    done = run_zoo("export", "deeponet.antiderivative", "--format", "onnx", "--out", str(tmp_path / "d.onnx"),
                   "--json", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "exporting deeponet.antiderivative to onnx" in done.stderr
    json.loads(done.stdout)   # stdout stays machine-readable
    done = run_zoo("bench", "deeponet.antiderivative", "--repeats", "2", "--device", "cpu")
    assert done.returncode == 0 and "benchmarking deeponet.antiderivative" in done.stderr


@pytest.mark.parametrize("args, needle", [
    (("finetune", "deeponet", "--dataset", "antiderivative", "--steps", "-5"), "--steps must be"),
    (("finetune", "deeponet", "--dataset", "antiderivative", "--batch-size", "0"), "--batch-size must be"),
    (("finetune", "deeponet", "--dataset", "antiderivative", "--lr", "nan"), "--lr must be"),
    (("finetune", "deeponet", "--dataset", "antiderivative", "--seed", "100000000000000000000"), "--seed must be"),
    (("eval", "deeponet", "--dataset", "antiderivative", "--batch-size", "-1"), "batch_size"),
    (("bench", "deeponet", "--repeats", "0"), "repeats"),
])
def test_nonsense_numbers_are_one_line_before_any_work(args, needle, tmp_path):
    done = run_zoo(*args, cwd=tmp_path)
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert done.returncode != 0 and len(errors) == 1 and needle in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()
