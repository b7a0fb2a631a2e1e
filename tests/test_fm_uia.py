"""fm-uia-baseline (arXiv 2602.01055, official model factory composition), the multi-task task, the
challenge csv layout and the us-synth generator."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tests.conftest import run_zoo
from zoo.data import ultrasound as us
from zoo.errors import DataError
from zoo.models.fm_uia import OFFICIAL_TASKS, fm_uia_baseline
from zoo.tasks.multi_task import MultiTaskTask, UniformTaskBatches, detection_loss, pick_box

SMALL = dict(encoder="efficientnet-b0", img_size=64, pyramid_channels=32, segmentation_channels=32)


@pytest.fixture(scope="module")
def official():
    return fm_uia_baseline()


def test_official_parameter_count_is_pinned(official):
    # spec: 20.27M = encoder 17.55M + FPN 1.80M + heads 0.92M (official factory, instantiated)
    assert official.parameter_breakdown() == {"encoder": 17_548_616, "fpn": 1_803_008, "heads": 917_220,
                                              "total": 20_268_844}
    assert list(official.encoder.out_channels) == [3, 48, 32, 56, 160, 448]


def test_the_27_subtasks_and_their_sizes(official):
    kinds = [t.kind for t in official.tasks.values()]
    assert len(official.tasks) == 27
    assert (kinds.count("regression"), kinds.count("classification"), kinds.count("detection"),
            kinds.count("segmentation")) == (3, 9, 3, 12)
    assert official.tasks["fetal_abdomen_multi"].size == 5 and official.tasks["fetal_head_pos_cls"].size == 8
    assert official.tasks["IUGC"].size == 3


def test_routing_and_output_shapes_at_256(official):
    official.eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        fpn, deep = official.features(x)
        assert fpn.shape == (1, 128, 64, 64) and deep.shape == (1, 448, 8, 8)
        assert official.head("cardiac_multi", fpn, deep).shape == (1, 4, 256, 256)
        assert official.head("fetal_plane_cls", fpn, deep).shape == (1, 6)
        assert official.head("IUGC", fpn, deep).shape == (1, 6)
        assert official.head("thyroid_nodule_det", fpn, deep).shape == (1, 5, 64, 64)


def test_official_groups_leave_out_the_fpn_when_asked():
    m = fm_uia_baseline(**SMALL, tasks={"a": ["classification", 2]})
    fpn = {id(p) for p in m.decoder.parameters()}
    groups = m.parameter_groups(1e-4, train_fpn=False)
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert not fpn & {id(p) for g in groups for p in g["params"]}
    assert len(m.parameter_groups(1e-4, train_fpn=True)) == 3


def test_detection_loss_supervises_only_the_centre_cell():
    out = torch.zeros(1, 5, 4, 4, requires_grad=True)
    box = torch.tensor([[0.5, 0.5, 1.0, 1.0]])          # centre (0.75, 0.75) -> cell (3, 3)
    detection_loss(out, box).backward()
    touched = (out.grad.abs().sum(1)[0] > 0).nonzero().tolist()
    assert touched == [[3, 3]]
    picked = torch.zeros(1, 5, 4, 4)
    picked[0, 4, 1, 2] = 5.0
    picked[0, :4, 1, 2] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert pick_box(picked).tolist() == [pytest.approx([0.1, 0.2, 0.3, 0.4])]


def test_uniform_sampler_gives_one_task_per_batch_deterministically():
    tasks = {"s": ("segmentation", 3), "c": ("classification", 4), "d": ("detection", 1), "r": ("regression", 2)}
    ds = UniformTaskBatches(us.us_synth("train", tasks, per_task=4, img=32))
    task = MultiTaskTask()
    seen = set()
    for start in range(0, 16):
        idx = [(start * 3 + j) % len(ds) for j in range(4)]
        b1 = task.collate([ds[i] for i in idx])
        b2 = task.collate([ds[i] for i in idx])
        assert b1["task_id"] == b2["task_id"] and torch.equal(b1["image"], b2["image"])
        seen.add(b1["task_id"])
    assert seen == set(tasks)


def test_generator_covers_every_kind_and_targets_fit():
    tasks = {k: v for k, v in OFFICIAL_TASKS.items()}
    ds = us.us_synth("test", tasks, per_task=1, img=32)
    assert len(ds) == 27
    for s in ds.samples:
        kind, size = tasks[s["task_id"]]
        assert s["image"].shape == (3, 32, 32) and 0 <= float(s["image"].min()) <= float(s["image"].max()) <= 1
        if kind == "segmentation":
            assert int(s["mask"].max()) < size
        elif kind == "classification":
            assert 0 <= s["label"] < size
        elif kind == "regression":
            assert s["points"].shape == (size, 2)
        else:
            assert (s["box"][2:] > s["box"][:2]).all()


TASKS = {"seg": ("segmentation", 3), "cls": ("classification", 4), "det": ("detection", 1), "reg": ("regression", 2)}


def test_challenge_layout_round_trip(tmp_path):
    ds = us.us_synth("test", TASKS, per_task=3, img=32)
    us.write_challenge(tmp_path / "val", ds, TASKS)
    assert sorted(p.name for p in (tmp_path / "val" / "csv_files").glob("*.csv")) == ["cls.csv", "det.csv", "reg.csv", "seg.csv"]
    back = us.read_challenge(tmp_path / "val", TASKS, 32)
    assert len(back) == 12
    by = {(s["task_id"], i): s for i, s in enumerate(back.samples)}
    for (tid, i), s in by.items():
        orig = ds.samples[i]
        assert s["task_id"] == orig["task_id"]
        if "mask" in s:
            assert torch.equal(s["mask"], orig["mask"])
        if "label" in s:
            assert s["label"] == orig["label"]
        if "box" in s:
            assert torch.allclose(s["box"], orig["box"], atol=1e-3)
        if "points" in s:
            assert torch.allclose(s["points"], orig["points"], atol=1e-3)


def _rewrite(path, change):
    rows = list(csv.DictReader(open(path)))
    change(rows)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_bad_challenge_files_are_one_line_errors(tmp_path):
    from PIL import Image
    ds = us.us_synth("test", TASKS, per_task=2, img=32)
    root = us.write_challenge(tmp_path / "v", ds, TASKS)
    csvd = root / "csv_files"
    # a mask whose size differs from its image
    mask = csvd / next(csv.DictReader(open(csvd / "seg.csv")))["mask_path"]
    good = mask.read_bytes()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(mask)
    with pytest.raises(DataError, match="is 20x20 but its image is 32x32"):
        us.read_challenge(root, TASKS, 32)
    # label values outside the class count
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(mask)
    with pytest.raises(DataError, match="label value 7 but task seg has 3 classes"):
        us.read_challenge(root, TASKS, 32)
    mask.write_bytes(good)
    # a row pointing to a missing image
    _rewrite(csvd / "cls.csv", lambda rows: rows[0].update(image_path="../nowhere.png"))
    with pytest.raises(DataError, match="cls.csv line 2: image not found"):
        us.read_challenge(root, TASKS, 32)
    # an unknown task id
    _rewrite(csvd / "cls.csv", lambda rows: [r.update(task_id="clz", image_path=rows[1]["image_path"]) for r in rows])
    with pytest.raises(DataError, match="unknown task id 'clz'.*cls"):
        us.read_challenge(root, TASKS, 32)


def test_cli_eval_of_a_challenge_folder_and_bad_input(tmp_path):
    cfg = json.dumps({**SMALL, "tasks": {k: list(v) for k, v in TASKS.items()}})
    run = tmp_path / "run"
    r = run_zoo("finetune", "fm-uia-baseline", "--dataset", "us-synth", "--scratch", "--steps", "2", "--batch-size", "2",
                "-o", f"config={cfg}", "-o", "per_task=2", "--out", str(run))
    assert r.returncode == 0, r.stderr
    ds = us.us_synth("test", TASKS, per_task=2, img=64, seed=5)
    root = us.write_challenge(tmp_path / "val", ds, TASKS)
    r = run_zoo("eval", str(run), "--data", str(root), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["metrics"]
    assert {"seg/dsc", "seg/hd95", "cls/auc", "cls/acc", "cls/f1_macro", "cls/mcc", "det/iou", "reg/mre_px",
            "score"} <= set(m) and m["samples"] == 8
    _rewrite(root / "csv_files" / "cls.csv", lambda rows: [r.update(task_id="organ") for r in rows])
    r = run_zoo("eval", str(run), "--data", str(root))
    assert r.returncode != 0 and "unknown task id 'organ'" in r.stderr and "Traceback" not in r.stderr
    img = tmp_path / "x.png"
    from PIL import Image
    Image.fromarray((ds.samples[0]["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(img)
    out = tmp_path / "o.png"
    r = run_zoo("predict", str(run), str(img), "-o", "task_id=seg", "--save", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "segmentation" and out.stat().st_size > 1000
    r = run_zoo("predict", str(run), str(img), "-o", "task_id=fetal_head")
    assert r.returncode != 0 and "task id" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_registry_metrics_are_reproduced():
    import zoo.registry as reg
    want = reg.load_registry().models["fm-uia-baseline"].checkpoints["us-synth"].metrics
    r = run_zoo("eval", "fm-uia-baseline", "--dataset", "us-synth", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["metrics"]
    assert set(got) == set(want)
    for k, v in want.items():
        if v == v:   # NaN (an undefined AUC) stays NaN
            assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-4), k
