"""The detection task: readers (COCO json, YOLO txt) and their one-line errors, letterbox and
augmentations keeping boxes on their objects, the task-aligned assigner, the loss, COCO mAP
through faster-coco-eval, predict pictures, and the trees/shapes datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from zoo.data import coco
from zoo.errors import ConfigError, DataError
from zoo.layers import yolov10_head
from zoo.layers.yolov10_head import task_aligned_assign
from zoo.options import combine, validate
from zoo.tasks import detection
from zoo.tasks.detection import DetectionDataset, DetectionTask, DetectorModel

AUGMENT_KEYS = detection.AUGMENT_DEFAULTS


# ---- fixtures: tiny datasets on disk -----------------------------------------------------------
def _square_image(path: Path, size=(96, 64), box=(20, 10, 50, 40)):
    """Black image with a white rectangle at `box` (xyxy)."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    x1, y1, x2, y2 = box
    arr[y1:y2, x1:x2] = 255
    Image.fromarray(arr).save(path)


def _coco_folder(root: Path, boxes=((20, 10, 50, 40), (5, 30, 40, 60)), category_ids=(7, 3)) -> Path:
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i, (box, cid) in enumerate(zip(boxes, category_ids)):
        name = f"im{i}.png"
        _square_image(root / "images" / "val" / name, box=box)
        images.append({"id": 10 + i, "file_name": name, "width": 96, "height": 64})
        x1, y1, x2, y2 = box
        anns.append({"id": i + 1, "image_id": 10 + i, "category_id": cid, "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(data))
    return root


def _yolo_folder(root: Path, lines: list[str], names=("a", "b")) -> Path:
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    _square_image(root / "images" / "val" / "x.jpg")
    (root / "labels" / "val" / "x.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(json.dumps({"names": list(names)}))
    return root


# ---- readers ------------------------------------------------------------------------------------
def test_coco_reader(tmp_path):
    rec = coco.read_any(_coco_folder(tmp_path), "val")
    assert rec.names == ["three", "seven"] and rec.category_ids == [3, 7]
    assert rec.image_ids == [10, 11] and rec.sizes == [(96, 64), (96, 64)]
    assert rec.boxes[0].tolist() == [[20, 10, 50, 40]] and rec.classes[0].tolist() == [1]
    assert rec.classes[1].tolist() == [0]
    gt = rec.coco_ground_truth()
    assert gt["annotations"][0]["bbox"] == [20.0, 10.0, 30.0, 30.0] and gt["annotations"][0]["category_id"] == 7
    assert rec.split == "val"
    # the test split falls back to val, and says so
    test = coco.read_any(tmp_path, "test")
    assert test.image_ids == [10, 11] and test.split == "val"
    ds = detection.make_dataset(test, "test", None, {})
    assert (ds.split, ds.requested_split, len(ds)) == ("val", "test", 2)
    with pytest.raises(DataError, match="no annotation json for split 'train' .have: instances_val.json"):
        coco.read_any(tmp_path, "train")
    # a bare json file is not a split of anything
    assert coco.read_any(tmp_path / "annotations" / "instances_val.json", "test").split == "all"
    assert len(detection.make_dataset(rec, "val", None, {"limit": 1})) == 1
    assert rec.head(1).coco_ground_truth()["images"] == rec.coco_ground_truth()["images"][:1]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("categories"), "missing field 'categories'"),
    (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\]: missing field 'bbox'"),
    (lambda d: d["images"][1].pop("file_name"), r"images\[1\]: missing field 'file_name'"),
    (lambda d: d["annotations"][1].update(bbox=[80, 10, 30, 10]), "outside the 96x64 image"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"'bbox' must be \[x, y, width, height\]"),
    (lambda d: d["annotations"][0].update(category_id=99), "category_id 99 is not in 'categories'"),
    (lambda d: d["annotations"][0].update(image_id=12345), "image_id 12345, which is not in 'images'"),
])
def test_coco_json_errors_are_one_line(tmp_path, edit, message):
    root = _coco_folder(tmp_path)
    path = root / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as err:
        coco.read_any(root, "val")
    assert "\n" not in str(err.value)


def test_yolo_reader(tmp_path):
    lines = ["1 0.36458 0.390625 0.3125 0.46875", "0 0.1 0.1 0.1 0.1 0.3 0.3"]
    rec = coco.read_any(_yolo_folder(tmp_path, lines), "val")
    assert rec.names == ["a", "b"]
    np.testing.assert_allclose(rec.boxes[0][0], [20, 10, 50, 40], atol=0.01)
    np.testing.assert_allclose(rec.boxes[0][1], [9.6, 6.4, 28.8, 19.2], atol=0.01)  # polygon -> its box
    assert rec.classes[0].tolist() == [1, 0]


@pytest.mark.parametrize("line, message", [
    ("2 0.5 0.5 0.1 0.1", r"class id 2 is out of range \(0..1\)"),
    ("-1 0.5 0.5 0.1 0.1", "class id -1 is out of range"),
    ("0.5 0.5 0.5 0.1 0.1", "class id 0.5 is out of range"),
    ("0 1.5 0.5 0.1 0.1", r"fractions in \[0, 1\]"),
    ("0 0.95 0.5 0.2 0.1", "extends outside the image"),
    ("0 0.5 0.5", "expected 'class cx cy w h'"),
    ("0 a b c d", "expected numbers"),
])
def test_yolo_label_errors_name_the_line(tmp_path, line, message):
    root = _yolo_folder(tmp_path, ["0 0.5 0.5 0.1 0.1", line])
    with pytest.raises(DataError, match=message) as err:
        coco.read_any(root, "val")
    assert "x.txt:2" in str(err.value) and "\n" not in str(err.value)


def test_not_an_image_and_empty_folders(tmp_path):
    root = _yolo_folder(tmp_path / "y", ["0 0.5 0.5 0.1 0.1"])
    (root / "images" / "val" / "x.jpg").write_text("this is not a jpeg")
    with pytest.raises(DataError, match="x.jpg: not an image"):
        coco.read_any(root, "val")
    empty = tmp_path / "e" / "images"
    empty.mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        coco.read_any(tmp_path / "e", "val")
    with pytest.raises(DataError, match="neither a COCO folder"):
        coco.read_any(empty, "val")
    with pytest.raises(DataError, match="no such file"):
        coco.read_any(tmp_path / "missing", "val")


# ---- letterbox and augmentation -----------------------------------------------------------------
def test_letterbox_and_back(tmp_path):
    rec = coco.read_any(_coco_folder(tmp_path), "val")
    ds = DetectionDataset(rec, imgsz=128)
    item = ds[0]
    assert item["image"].shape == (3, 128, 128)
    # 96x64 -> 128x85 (ratio 4/3), padded 21 px top and bottom
    assert item["meta"]["ratio"] == pytest.approx(4 / 3) and item["meta"]["pad"] == (0, 21)
    box = item["boxes"][0]
    np.testing.assert_allclose(box, [20 * 4 / 3, 10 * 4 / 3 + 21, 50 * 4 / 3, 40 * 4 / 3 + 21], atol=1e-4)
    det = torch.tensor([[*box.tolist(), 0.9, 1.0]])
    np.testing.assert_allclose(detection.to_original(det, item["meta"])[0, :4], [20, 10, 50, 40], atol=1e-4)


def _white_fraction(img: torch.Tensor, box) -> float:
    x1, y1, x2, y2 = [int(round(float(v))) for v in box]
    inner = img[:, y1 + 2:y2 - 2, x1 + 2:x2 - 2].float()
    return float((inner > 200).float().mean()) if inner.numel() else 1.0


def test_augmentations_keep_boxes_on_their_objects(tmp_path):
    """Mosaic, zoom/shift, flips and training crops move the white rectangles and their boxes
    together: the inside of every box stays white, and no white blob is left without a box."""
    rec = coco.read_any(_coco_folder(tmp_path), "val")
    # zoom <= 1.25: rectangles stay under 55 px, so a dropped sliver (<10% of a box) is < 6 px thick
    aug = dict(detection.AUGMENT_DEFAULTS, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, scale=0.25)
    torch.manual_seed(0)
    for crop in (None, 64):
        ds = DetectionDataset(rec, imgsz=128, augment=aug, crop=crop)
        boxes_seen = 0
        for _ in range(16):
            item = ds[int(torch.randint(0, 2, ()))]
            img = item["image"]
            assert img.shape[-1] == (crop or 128)
            covered = torch.zeros(img.shape[1:], dtype=torch.bool)
            for box in item["boxes"]:
                assert _white_fraction(img, box) > 0.9
                x1, y1, x2, y2 = [int(round(float(v))) for v in box]
                covered[max(0, y1 - 1):y2 + 1, max(0, x1 - 1):x2 + 1] = True
                boxes_seen += 1
            # white left without a box may only be what remains of a rectangle cut at a border
            # (a box keeping under 10% of its area is dropped, as ultralytics does): under 10% of
            # the largest rectangle (53 px a side at zoom 1.25), while the smallest is 30 x 30
            assert ((img[0] > 200) & ~covered).sum() < 0.1 * 53 * 53
        assert boxes_seen > 5


def test_example_input_honours_imgsz():
    from zoo.models.mhaf_yolo import mhaf_yolo
    task = DetectionTask()
    model = mhaf_yolo("lite-n", num_classes=2)
    (x,) = task.example_input(model, {"imgsz": 320})
    assert x.shape == (1, 3, 320, 320)
    assert task.example_input(model, {"batch_size": 2})[0].shape == (2, 3, 640, 640)
    with pytest.raises(ConfigError, match="multiple of 32"):
        task.example_input(model, {"imgsz": 100})
    batch = task.example_batch(model, {"imgsz": 64})
    assert batch["images"].shape == (2, 3, 64, 64) and int(batch["cls"].max()) < 2


def test_options_are_typed_and_fuse_has_one_spelling():
    schema = combine(DetectionTask.Options)
    assert validate({"conf": "0.5", "max-det": "10", "fuse": "false"}, schema, "eval") == \
        {"conf": 0.5, "max_det": 10, "fuse": False}
    with pytest.raises(ConfigError, match="unknown option 'no_fuse'.*'fuse'"):
        validate({"no_fuse": True}, schema, "eval")
    with pytest.raises(ConfigError, match="option 'conf'"):
        validate({"conf": 2}, schema, "eval")
    assert set(AUGMENT_KEYS) <= set(schema.model_fields)


# ---- assigner and loss ---------------------------------------------------------------------------
def _grid(n=8, stride=8):
    yy, xx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    return torch.stack((xx, yy), -1).view(-1, 2) * stride


def test_task_aligned_assigner_top_k_and_overlap_resolution():
    anchors = _grid()                                                          # 64 anchors on a 64 px image
    a = anchors.shape[0]
    gt = torch.tensor([[[8.0, 8.0, 40.0, 40.0], [24.0, 24.0, 56.0, 56.0]]])  # overlapping objects
    # every anchor predicts the first object's box with score 0.5 for both classes
    boxes = gt[0, 0].expand(1, a, 4).clone()
    scores = torch.full((1, a, 2), 0.5)
    cls, mask = torch.tensor([[0, 1]]), torch.tensor([[True, True]])
    for topk in (1, 10):
        tb, ts, fg = task_aligned_assign(scores, boxes, anchors, cls, gt, mask, topk)
        centres = anchors[fg[0]]
        inside_any = ((centres[:, None] > gt[0, None, :, :2]) & (centres[:, None] < gt[0, None, :, 2:])).all(-1).any(-1)
        assert inside_any.all()
        per_object = [(tb[0, fg[0]] == gt[0, j]).all(-1).sum().item() for j in range(2)]
        assert all(1 <= n <= topk for n in per_object)
        # targets carry the class of the object they were assigned to, scaled to its best IoU (1 here)
        assert ts[0, fg[0]].amax().item() == pytest.approx(1.0, abs=1e-5)
        assert (ts[0, ~fg[0]] == 0).all()
    # an anchor inside both objects, predicting object 0 exactly, goes to object 0 (higher IoU)
    shared = ((anchors > 24) & (anchors < 40)).all(-1)
    tb, ts, fg = task_aligned_assign(scores, boxes, anchors, cls, gt, mask, topk=64)
    assert (tb[0, shared & fg[0]] == gt[0, 0]).all() and (ts[0, shared & fg[0], 1] == 0).all()


def test_assigner_without_objects():
    tb, ts, fg = task_aligned_assign(torch.rand(2, 64, 3), torch.rand(2, 64, 4), _grid(),
                                     torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, 4),
                                     torch.zeros(2, 0, dtype=torch.bool), 10)
    assert not fg.any() and ts.sum() == 0


def test_loss_equals_the_official_v8_detection_loss():
    """Reference values from the official code on this seeded input: ultralytics' v8DetectionLoss
    (the MHAF-YOLO repo's ultralytics 8.1.34 fork, TaskAlignedAssigner alpha 0.5 beta 6, gains
    7.5/0.5/1.5), run once outside the zoo with tal_topk=10 (one-to-many) and 1 (one-to-one)."""
    g = torch.Generator().manual_seed(0)
    nc, imgsz, bs = 3, 128, 3
    maps = [torch.randn(bs, 64 + nc, imgsz // s, imgsz // s, generator=g) for s in (8, 16, 32)]
    xy = torch.rand(9, 2, generator=g) * 90
    wh = torch.rand(9, 2, generator=g) * 40 + 6
    batch = {"batch_idx": torch.tensor([0, 0, 0, 0, 1, 2, 2, 2, 2]),
             "cls": torch.randint(0, nc, (9,), generator=g),
             "boxes": torch.cat((xy, (xy + wh).clamp(max=imgsz)), 1)}
    official = {10: (6.89548, 827.246, 4.62465), 1: (3.39734, 1222.04, 2.18493)}  # box, cls, dfl (gained)
    for topk, expected in official.items():
        total, parts = yolov10_head.detection_loss(maps, batch, nc, topk)
        np.testing.assert_allclose(parts.numpy(), expected, rtol=2e-5)
        assert total.item() == pytest.approx(sum(expected), rel=2e-5)


def test_loss_trains_the_model_on_a_fixed_batch():
    from zoo.models.mhaf_yolo import mhaf_yolo
    torch.manual_seed(0)
    model = mhaf_yolo("lite-n", num_classes=2).train()
    task = DetectionTask()
    batch = {"images": torch.rand(2, 3, 64, 64), "batch_idx": torch.tensor([0, 1, 1]),
             "cls": torch.tensor([0, 1, 0]),
             "boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0], [20.0, 20.0, 60.0, 60.0], [2.0, 2.0, 20.0, 20.0]])}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, logs = task.loss(model, batch)
        assert set(logs) == {"box", "cls", "dfl", "o2o_box", "o2o_cls", "o2o_dfl"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
    empty = dict(batch, batch_idx=torch.zeros(0, dtype=torch.long), cls=torch.zeros(0, dtype=torch.long),
                 boxes=torch.zeros(0, 4))
    loss, logs = task.loss(model, empty)  # images without objects: only the class loss
    assert np.isfinite(loss.item()) and logs["box"] == 0 and logs["cls"] > 0


# ---- evaluation and predict ---------------------------------------------------------------------
class _Oracle(nn.Module):
    """Returns given detections (letterboxed pixels) per image, in dataset order."""

    fused = True
    stride = torch.tensor([8.0, 16.0, 32.0])

    def __init__(self, per_image: list[torch.Tensor], num_classes: int, names=None):
        super().__init__()
        self.per_image, self.num_classes, self.calls = per_image, num_classes, 0
        self.class_names = names or [str(i) for i in range(num_classes)]

    def detect(self, images):
        out = []
        for _ in range(images.shape[0]):
            out.append(self.per_image[self.calls % len(self.per_image)])
            self.calls += 1
        return torch.stack(out)

    def loss(self, batch):
        raise NotImplementedError

    def example_input(self, batch, imgsz):
        return torch.zeros(batch, 3, imgsz, imgsz)

    def fuse(self):
        return self


def _oracle_for(ds: DetectionDataset, shift: float = 0.0) -> _Oracle:
    dets = []
    for i in range(len(ds)):
        item = ds[i]
        d = torch.zeros(3, 6)  # padded with zero-score rows, as top-k output is
        for j, (b, c) in enumerate(zip(item["boxes"], item["cls"])):
            d[j, :4], d[j, 4], d[j, 5] = b + shift, 0.9, float(c)
        dets.append(d)
    return _Oracle(dets, len(ds.names))


def test_evaluate_scores_perfect_and_wrong_boxes(tmp_path):
    task = DetectionTask()
    ds = DetectionDataset(coco.read_any(_coco_folder(tmp_path), "val"), imgsz=128)
    assert isinstance(_oracle_for(ds), DetectorModel)
    perfect = task.evaluate(_oracle_for(ds), ds, {})
    assert perfect["mAP50-95"] == pytest.approx(1.0)
    # counts are integers: how many images the numbers came from, how many detections were scored
    assert perfect["images"] == 2 and type(perfect["images"]) is int and perfect["detections"] == 2
    assert set(perfect) <= set(task.metric_definitions)
    far = task.evaluate(_oracle_for(ds, shift=30.0), ds, {})
    assert far["mAP50"] == 0.0 and far["mAP50-95"] == 0.0
    with pytest.raises(DataError, match=r"has 2 classes \(three, seven\) but the model predicts 1"):
        task.evaluate(_Oracle([torch.zeros(3, 6)], 1), ds, {})


def test_predict_draws_boxes(tmp_path):
    task = DetectionTask()
    img = tmp_path / "a.png"
    _square_image(img, size=(200, 100), box=(20, 10, 50, 40))
    # letterboxed to 64: ratio 0.32, 16 px padding on top
    det = torch.tensor([[6.4, 19.2, 16.0, 28.8, 0.8, 1.0], [0, 0, 10, 10, 0.1, 0.0]])
    out = tmp_path / "out.png"
    res = task.predict(_Oracle([det], 2, names=["bg", "square"]), str(img), None, out, {"imgsz": 64})
    assert [d["label"] for d in res["detections"]] == ["square"]  # 0.1 is under the 0.25 default
    np.testing.assert_allclose(res["detections"][0]["box"], [20, 10, 50, 40], atol=0.2)
    drawn = np.asarray(Image.open(out))
    assert drawn.shape == (100, 200, 3) and (drawn[:, :, 0] == 255).any() and (drawn[:, :, 1] < 100).any()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(DataError, match="bad.png: not an image"):
        task.predict(_Oracle([det], 2), str(bad), None, None, {})


def test_nms_option_removes_near_duplicates_and_max_det_caps(tmp_path):
    task = DetectionTask()
    img = tmp_path / "a.png"
    _square_image(img, size=(64, 64))
    det = torch.tensor([[10.0, 10.0, 40.0, 40.0, 0.9, 0.0], [11.0, 10.0, 41.0, 40.0, 0.8, 0.0],   # IoU 0.94
                        [11.0, 10.0, 41.0, 40.0, 0.7, 1.0], [50.0, 50.0, 60.0, 60.0, 0.6, 0.0]])
    plain = task.predict(_Oracle([det], 2), str(img), None, None, {"imgsz": 64})
    assert [d["score"] for d in plain["detections"]] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    kept = task.predict(_Oracle([det], 2), str(img), None, None, {"imgsz": 64, "nms": True})
    # the same-class duplicate goes, the other class at the same place stays
    assert [d["score"] for d in kept["detections"]] == pytest.approx([0.9, 0.7, 0.6])
    loose = task.predict(_Oracle([det], 2), str(img), None, None, {"imgsz": 64, "nms": True, "iou": 0.95})
    assert len(loose["detections"]) == 4
    capped = task.predict(_Oracle([det], 2), str(img), None, None, {"imgsz": 64, "max_det": 2, "conf": 0.0})
    assert len(capped["detections"]) == 2
    with pytest.raises(DataError, match="is a folder"):
        task.predict(_Oracle([det], 2), str(tmp_path), None, None, {})


def test_inference_runs_the_fused_copy_unless_fuse_is_false():
    from zoo.models.mhaf_yolo import mhaf_yolo
    model = mhaf_yolo("lite-n", num_classes=2)
    deploy = detection._deploy_copy(model, {})
    assert deploy is not model and deploy.fused and not model.fused
    assert detection._deploy_copy(model, {"fuse": False}) is model
    assert detection._deploy_copy(deploy, {}) is deploy


def test_detection_files_import_in_one_direction():
    """Models and layers import no task and no data module; the task imports no concrete model."""
    import ast
    root = Path(__file__).resolve().parent.parent / "zoo"
    rules = {"models/mhaf_yolo.py": ("zoo.tasks", "zoo.data", "zoo.api"),
             "layers/yolov10_head.py": ("zoo.tasks", "zoo.data", "zoo.models", "zoo.api"),
             "tasks/detection.py": ("zoo.models", "zoo.api")}
    for file, banned in rules.items():
        names = []
        for node in ast.walk(ast.parse((root / file).read_text())):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names.append(node.module or "")
        assert names and not [n for n in names if n == "zoo" or n.startswith(banned)], file


# ---- datasets -----------------------------------------------------------------------------------
def test_shapes_is_seeded_and_cached(tmp_path, monkeypatch):
    from zoo.data import shapes
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    a = shapes.prepare(num_images=8, seed=3)
    b = shapes.prepare(num_images=8, seed=3)
    c = shapes.prepare(num_images=8, seed=4)
    assert a == b != c
    ja = json.loads((a / "annotations" / "instances_train.json").read_text())
    assert len(ja["images"]) == 8 and ja["annotations"]
    train_json = "annotations/instances_train.json"
    assert (a / train_json).read_text() != (c / train_json).read_text()
    train, val = coco.read_any(a, "train"), coco.read_any(a, "val")
    assert len(val) == 2 and set(train.files).isdisjoint(val.files)
    for boxes, (w, h) in zip(train.boxes, train.sizes):  # objects never overlap and stay inside
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


def test_tree_tiles_never_share_pixels_across_splits():
    """The split rule on the four deepforest images (sizes from their VOC files)."""
    from zoo.data import trees
    sizes = [(400, 400), (400, 400), (1249, 1035), (2299, 2472)]
    counts = {"train": 0, "val": 0}
    for w, h in sizes:
        wins = trees.windows(w, h)
        area = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in wins)
        assert area == w * h  # a tiling: every pixel in exactly one window
        splits = trees.split_of_windows(len(wins))
        assert splits == trees.split_of_windows(len(wins))  # fixed
        for s in splits:
            counts[s] += 1
    assert counts == {"train": 17, "val": 5}


def test_tree_wheel_with_a_wrong_hash_is_refused(tmp_path, monkeypatch):
    import subprocess

    from zoo.data import trees
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))

    def fake_download(cmd, **kw):  # what a tampered mirror would serve
        folder = Path(cmd[cmd.index("-d") + 1])
        (folder / trees.WHEEL).write_bytes(b"not the real wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_download)
    with pytest.raises(DataError, match="does not match the pinned"):
        trees.wheel_path()
    assert not list(tmp_path.rglob(trees.WHEEL))


@pytest.mark.slow
def test_trees_dataset_from_the_wheel():
    """Downloads deepforest 2.1.0 once (20 MB, sha256-pinned) into the data cache."""
    from zoo.data import trees
    root = trees.prepare()
    splits = {s: json.loads((root / "annotations" / f"instances_{s}.json").read_text()) for s in ("train", "val")}
    assert [len(splits[s]["images"]) for s in ("train", "val")] == [17, 5]
    assert sum(len(splits[s]["annotations"]) for s in splits) > 900
    for v in splits["val"]["images"]:
        for t in splits["train"]["images"]:
            if t["source"] == v["source"]:
                (a0, b0, a1, b1), (c0, d0, c1, d1) = v["window"], t["window"]
                assert a1 <= c0 or c1 <= a0 or b1 <= d0 or d1 <= b0  # windows do not intersect
    ds = DetectionTask().load_dataset("trees", "val", None, None, {})
    assert ds.names == ["tree"] and ds[0]["image"].shape == (3, 640, 640)
    test = DetectionTask().load_dataset("trees", "test", None, None, {})
    assert (test.split, test.requested_split, len(test)) == ("val", "test", 5)
