"""The published fm-uia-baseline checkpoint end to end: ONNX export of all 27 heads with parity per
head (the exported file is read back with onnxruntime here, head by head), and `zoo eval --data` on
a challenge layout (csv_files/*.csv + image folders) written by the test for every official task id."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_zoo
from zoo.models.fm_uia import OFFICIAL_TASKS


@pytest.mark.slow
def test_onnx_export_of_the_checkpoint_has_every_head_within_tolerance(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from zoo.loading import load

    out = tmp_path / "fm.onnx"
    r = run_zoo("export", "fm-uia-baseline", "--format", "onnx", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["model"] == "fm-uia-baseline.us-synth" and out.is_file()
    assert list(res["per_output"]) == list(OFFICIAL_TASKS)            # zoo export's own per-head parity
    assert max(res["per_output"].values()) == pytest.approx(res["max_abs_err"])
    loaded = load("fm-uia-baseline", device="cpu")
    model = loaded.model.eval()
    assert model.output_names() == list(OFFICIAL_TASKS)
    x = loaded.task.example_input(model, {"batch_size": 2})[0]   # batch 2: the batch axis is dynamic
    with torch.inference_mode():
        ref = model(x)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    assert len(got) == len(ref) == 27
    worst = {}
    for tid, r_, g in zip(model.task_ids, ref, got):
        assert tuple(g.shape) == tuple(r_.shape), tid
        worst[tid] = float(np.abs(g - r_.numpy()).max())
        scale = float(r_.abs().max())
        assert worst[tid] <= 1e-4 + 1e-4 * scale, (tid, worst[tid])
    print("per-head max abs error:", json.dumps(worst))
    assert max(worst.values()) <= res["max_abs_err"] * 10 + 1e-6


@pytest.mark.slow
def test_eval_of_the_checkpoint_on_a_challenge_folder(tmp_path):
    from zoo.data import ultrasound as us

    tasks = {k: tuple(v) for k, v in OFFICIAL_TASKS.items()}
    ds = us.us_synth("test", tasks, per_task=2, img=96, seed=7)   # 96 px: the reader resizes to the model's 64
    root = us.write_challenge(tmp_path / "challenge" / "val", ds, tasks)
    r = run_zoo("eval", "fm-uia-baseline", "--data", str(root), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["metrics"]
    assert m["samples"] == 2 * len(tasks)
    for tid, (kind, _) in tasks.items():
        key = {"segmentation": "dsc", "classification": "acc", "detection": "iou", "regression": "mre_px"}[kind]
        assert f"{tid}/{key}" in m, tid
    dsc = [m[f"{t}/dsc"] for t, (k, _) in tasks.items() if k == "segmentation"]
    assert all(0.0 <= v <= 1.0 for v in dsc)
    # a row for a task id the checkpoint has no head for: one line, no traceback
    import csv
    path = next((root / "csv_files").glob("*.csv"))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["task_id"] = "thyroid_nodule_x"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = run_zoo("eval", "fm-uia-baseline", "--data", str(root))
    assert r.returncode != 0 and "unknown task id" in r.stderr and "Traceback" not in r.stderr
