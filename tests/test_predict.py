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
