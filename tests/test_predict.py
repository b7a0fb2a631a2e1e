"""`zoo predict` takes a file, a folder or a glob (ultralytics' habit): pictures go to an
auto-numbered runs/predict/NAME-N unless --save/--no-save says otherwise; output is tables, not
Python reprs; nothing a user owns is overwritten."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_zoo

MODEL = "mhaf-yolo-n.trees"


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_folder_predicts_each_image_into_an_auto_numbered_folder(images, tmp_path):
    done = run_zoo("predict", MODEL, str(images), "--imgsz", "128", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "{'" not in done.stdout and "inputs: 2" in done.stdout
    first = tmp_path / "runs" / "predict" / f"{MODEL}-1"
    assert sorted(p.name for p in first.iterdir()) == ["a.png", "b.png"]
    again = run_zoo("predict", MODEL, str(images / "*.jpg"), "--imgsz", "128", "--json", cwd=tmp_path)
    res = json.loads(again.stdout)
    assert res["inputs"] == 1 and res["saved"].endswith(f"{MODEL}-2")
    assert (tmp_path / "runs" / "predict" / f"{MODEL}-2" / "b.png").is_file()


def test_no_save_writes_nothing_and_bad_inputs_are_one_line(images, tmp_path):
    done = run_zoo("predict", MODEL, str(images), "--imgsz", "128", "--no-save", "--json", cwd=tmp_path)
    assert done.returncode == 0 and not (tmp_path / "runs").exists()
    assert all("detections" in r for r in json.loads(done.stdout)["results"])
    for args, needle in (((str(tmp_path / "none" / "*.png"),), "matches no"),
                         ((str(images), "--save", str(tmp_path / "x.png")), "need a folder")):
        bad = run_zoo("predict", MODEL, *args, "--imgsz", "128", cwd=tmp_path)
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and needle in bad.stderr


def test_a_users_picture_is_never_overwritten(images, tmp_path):
    out = tmp_path / "pictures"
    out.mkdir()
    (out / "a.png").write_bytes(b"mine")
    done = run_zoo("predict", MODEL, str(images), "--imgsz", "128", "--save", str(out), cwd=tmp_path)
    assert done.returncode != 0 and "exists" in done.stderr
    assert (out / "a.png").read_bytes() == b"mine"


def test_tile_windows_cover_the_image_flush_with_its_end():
    from zoo.tasks.detection import _tile_starts
    assert _tile_starts(500, 640, 512) == [0]
    assert _tile_starts(1280, 640, 512) == [0, 512, 640]
    assert _tile_starts(1280, 640, 640) == [0, 640]


def test_tiled_prediction_finds_small_objects_a_downscaled_pass_misses(tmp_path):
    """Four 640-px aerial tiles stitched into one 1280-px image: at imgsz 640 the whole image is
    halved and small crowns vanish; tiles of 640 see them at full resolution."""
    import zoo
    from zoo.loading import load
    loaded = load(MODEL)
    ds = loaded.task.load_dataset("trees", "train", None, loaded.model, {})
    tiles = [Image.open(f).convert("RGB") for f in ds.records.files]
    tiles = [t for t in tiles if t.size == (640, 640)][:4]
    assert len(tiles) == 4
    big = Image.new("RGB", (1280, 1280))
    for k, t in enumerate(tiles):
        big.paste(t, ((k % 2) * 640, (k // 2) * 640))
    path = tmp_path / "big.png"
    big.save(path)
    whole = zoo.predict(MODEL, str(path))["detections"]
    tiled = zoo.predict(MODEL, str(path), tile=640)["detections"]
    assert len(tiled) > 1.3 * len(whole)
    assert all(0 <= b["box"][0] < b["box"][2] <= 1280 and 0 <= b["box"][1] < b["box"][3] <= 1280 for b in tiled)
