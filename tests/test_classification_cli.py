"""The local-learning entries through the CLI and the fine-tune loop: bad input is one line with a
non-zero exit; resume and DDP work with methods that run their own backward passes."""

import json

import pytest
import torch

import zoo
from tests.conftest import run_zoo
from tests.test_classification import make_cifar, make_fashion_mnist
from zoo.data import image_classification as icd
from zoo.tasks.classification import ClassificationTask


def _one_line_error(done, *fragments):
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture()
def fmnist(tmp_path):
    make_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=16)
    return tmp_path / "fmnist"


def test_k_that_does_not_split_the_network(fmnist, tmp_path):
    done = run_zoo("finetune", "man-resnet32", "--dataset", "fashion-mnist", "--data", str(fmnist), "--local-blocks",
                   "5", "--steps", "1", "--out", str(tmp_path / "run"))
    _one_line_error(done, "K=5 does not split CifarResNet (16 layers)", "choose K from 1, 2, 3, 4, 8, 16")


def test_aux_depth_larger_than_the_layers_after_a_block(fmnist, tmp_path):
    done = run_zoo("finetune", "auglocal-resnet32", "--dataset", "fashion-mnist", "--data", str(fmnist),
                   "--aux-depth", "15", "--steps", "1", "--out", str(tmp_path / "run"))
    _one_line_error(done, "--aux-depth 15 is larger than the layers after a block allow for K=16")


def test_truncated_idx_file(fmnist, tmp_path):
    path = fmnist / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-5])
    done = run_zoo("finetune", "resnet32", "--dataset", "fashion-mnist", "--data", str(fmnist), "--steps", "1",
                   "--out", str(tmp_path / "run"))
    _one_line_error(done, "train-labels-idx1-ubyte.gz")


def test_images_of_the_wrong_channel_count_for_a_checkpoint(tmp_path):
    from zoo.checkpoint import save_checkpoint

    cfg = {"depth": 32, "in_chans": 1, "img_size": 28, "mean": [0.286], "std": [0.353]}
    folder = save_checkpoint(tmp_path / "ckpt", zoo.create_model("resnet32", **cfg),
                             {"model": "resnet32", "tag": "fashion-mnist", "task": "classification",
                              "dataset": "fashion-mnist", "config": cfg, "metrics": {}, "license": "MIT"})
    make_cifar(tmp_path / "cifar-10-batches-bin")
    done = run_zoo("eval", str(folder), "--data", str(tmp_path / "cifar-10-batches-bin"))
    _one_line_error(done, "cifar10 images are 3x32x32", "the model expects 1x28x28")


@pytest.mark.slow
def test_man_resume_after_a_crash_ends_like_an_uninterrupted_run(fmnist, tmp_path, monkeypatch):
    kwargs = dict(dataset="fashion-mnist", data=str(fmnist), steps=6, batch_size=8, save_every=2, progress=False,
                  local_blocks=4, no_eval=True)
    reference = zoo.finetune("man-resnet32", out=tmp_path / "ref", **kwargs)
    ref_state = torch.load(tmp_path / "ref" / ".train" / "state.pt", weights_only=True)

    calls = {"n": 0}
    collate = ClassificationTask.collate

    def crash_at_step_5(self, items):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return collate(self, items)

    monkeypatch.setattr(ClassificationTask, "collate", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        zoo.finetune("man-resnet32", out=tmp_path / "run", **kwargs)
    monkeypatch.undo()
    assert torch.load(tmp_path / "run" / ".train" / "state.pt", weights_only=True)["step"] == 4
    resumed = zoo.finetune("man-resnet32", out=tmp_path / "run", resume=True, **kwargs)
    state = torch.load(tmp_path / "run" / ".train" / "state.pt", weights_only=True)
    assert resumed["final_loss"] == pytest.approx(reference["final_loss"], abs=1e-6)
    ema_keys = [k for k in ref_state["module"] if k.startswith("ema_copy.")]
    assert ema_keys   # the EMA copies (and all aux nets) are part of the resumable training state
    for key, value in ref_state["module"].items():
        assert torch.allclose(state["module"][key].float(), value.float(), atol=1e-6), key


@pytest.mark.slow
def test_auglocal_under_ddp_with_two_processes(fmnist, tmp_path):
    out = tmp_path / "ddp"
    done = run_zoo("finetune", "auglocal-resnet32", "--dataset", "fashion-mnist", "--data", str(fmnist),
                   "--steps", "3", "-b", "8", "--nproc-per-node", "2", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["world_size"] == 2 and summary["steps"] == 3
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["local_learning"]["method"] == "auglocal" and "top1" in cfg["metrics"]
    # the checkpoint is the plain backbone: no auxiliary weights in it
    from safetensors.torch import load_file

    keys = load_file(str(out / "model.safetensors")).keys()
    assert "head.fc.weight" in keys and not any(k.startswith(("aux_nets", "model.")) for k in keys)


REAL_FMNIST = pytest.mark.skipif(not icd.FASHION_MNIST_DIR.is_dir(),
                                 reason="Debian package dataset-fashion-mnist not installed")


@pytest.mark.slow
@REAL_FMNIST
@pytest.mark.parametrize("name", ["resnet32", "auglocal-resnet32", "man-resnet32"])
def test_registry_accuracy_is_what_our_eval_measures(name):
    from zoo import registry

    entry = registry.load_registry().models[name]
    if "fashion-mnist" not in entry.checkpoints:
        pytest.skip(f"{name} has no fashion-mnist checkpoint registered")
    done = run_zoo("eval", name, "--dataset", "fashion-mnist", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout)["metrics"]
    assert measured["samples"] == 10_000
    for key in ("top1", "top5"):
        assert measured[key] == pytest.approx(entry.checkpoints["fashion-mnist"].metrics[key], abs=1e-9)


@pytest.mark.slow
def test_bench_train_compares_peak_memory_and_step_time_in_one_run():
    done = run_zoo("bench", "man-resnet32", "--train", "--compare", "resnet32", "-b", "32", "--repeats", "2",
                   "-o", "warmup=1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(done.stdout)
    names = [r["model"] for r in res["results"]]
    assert names[0].startswith("man-resnet32") and names[1].startswith("resnet32")
    ratio = next(v for k, v in res["ratios"].items() if k.startswith("peak memory"))
    assert ratio < 0.8, res   # MAN frees each local module's activations before the next one runs
