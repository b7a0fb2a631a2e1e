"""The detection verbs as a user runs them (fresh processes): our trees checkpoints evaluate to the
metrics the registry records, predict draws a picture, and bad input is one line with a non-zero
exit code, never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_zoo

pytestmark = pytest.mark.slow


def _one_line_error(done, *needles):
    assert done.returncode != 0
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("name", ["mhaf-yolo-n", "mhaf-yolo-s"])
def test_eval_reproduces_the_registry_metrics(name):
    from zoo import registry
    entry = registry.load_registry().models[name]
    recorded = entry.checkpoints["trees"].metrics
    done = run_zoo("eval", name, "--dataset", "trees", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    measured = result["metrics"]
    for key in ("mAP50-95", "mAP50"):
        assert measured[key] == pytest.approx(recorded[key], abs=1e-6)
    # trees has no test split: the default split is reported as the val split it really is, with
    # the number of images behind the numbers
    assert result["split"] == "val" and measured["images"] == 5


def test_eval_with_nms_and_unknown_options():
    done = run_zoo("eval", "mhaf-yolo-n", "--dataset", "trees", "--json", "-o", "nms=true", "-o", "iou=0.7")
    assert done.returncode == 0, done.stderr
    plain = 0.11544338125713725  # the registry's mAP50-95 without NMS
    assert json.loads(done.stdout)["metrics"]["mAP50-95"] > plain
    _one_line_error(run_zoo("eval", "mhaf-yolo-n", "--dataset", "trees", "-o", "no_fuse=true"),
                    "unknown option 'no_fuse'", "'fuse'")


def test_predict_draws_trees(tmp_path):
    from zoo.data import trees
    tile = sorted((trees.prepare() / "images" / "val").glob("*.png"))[0]
    out = tmp_path / "pred.png"
    done = run_zoo("predict", "mhaf-yolo-n", str(tile), "--save", str(out), "--json")
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout)
    assert res["detections"] and all(d["label"] == "tree" and d["score"] >= 0.25 for d in res["detections"])
    assert out.is_file() and out.stat().st_size > 10_000


def test_predict_on_something_that_is_not_an_image(tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_text("not a jpeg")
    _one_line_error(run_zoo("predict", "mhaf-yolo-n", str(bad)), "photo.jpg: not an image")


def test_eval_on_bad_data_folders(tmp_path):
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    from PIL import Image
    Image.new("RGB", (64, 64)).save(yolo / "images" / "a.png")
    (yolo / "labels" / "a.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    (yolo / "classes.txt").write_text("tree\n")
    _one_line_error(run_zoo("eval", "mhaf-yolo-n", "--data", str(yolo)), "a.txt:1", "class id 3 is out of range")
    (yolo / "labels" / "a.txt").write_text("0 0.9 0.5 0.4 0.2\n")
    _one_line_error(run_zoo("eval", "mhaf-yolo-n", "--data", str(yolo)), "extends outside the image")
    cocojson = tmp_path / "instances_val.json"
    cocojson.write_text(json.dumps({"images": [], "categories": []}))
    _one_line_error(run_zoo("eval", "mhaf-yolo-n", "--data", str(cocojson)), "missing field 'annotations'")
    empty = tmp_path / "empty" / "images"
    empty.mkdir(parents=True)
    _one_line_error(run_zoo("eval", "mhaf-yolo-n", "--data", str(empty.parent)), "no images")
