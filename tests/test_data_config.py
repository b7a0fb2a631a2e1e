"""timm's habits: `zoo.data_config(name)` says what inputs look like, `zoo.transforms(name)` prepares
a user's own file or array, and the created model carries its config in `.zoo_cfg`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import zoo


def test_detector_data_config_and_transform_match_what_eval_feeds(tmp_path):
    cfg = zoo.data_config("mhaf-yolo-n.trees")
    assert cfg["input_size"] == [3, 640, 640] and cfg["class_names"] == ["tree"] and cfg["stride"] == 32
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((100, 200, 3), 255, np.uint8)).save(path)
    x = zoo.transforms("mhaf-yolo-n.trees")(path)
    assert x.shape == (1, 3, 640, 640) and x.dtype == torch.float32
    # letterboxed: the image fills the width, grey padding above and below, values in [0, 1]
    assert float(x[0, :, 320, 320].min()) == 1.0 and abs(float(x[0, 0, 0, 0]) - 114 / 255) < 1e-6
    same = zoo.transforms("mhaf-yolo-n.trees")(np.asarray(Image.open(path)))
    assert torch.equal(x, same)


def test_classifier_transform_takes_any_image_and_the_model_carries_its_config(tmp_path):
    cfg = zoo.data_config("resnet32")
    c, s, _ = cfg["input_size"]
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(path)
    x = zoo.transforms("resnet32")(path)
    assert x.shape == (1, c, s, s)
    model = zoo.create_model("resnet32", pretrained=True)   # the default checkpoint, as data_config
    assert model.zoo_cfg["data"] == cfg and model.zoo_cfg["task"] == "classification"
    assert model(x).shape == (1, cfg["num_classes"])


def test_a_task_without_file_inputs_says_so():
    assert zoo.data_config("deeponet.darcy")["input_grid"] == 29
    with pytest.raises(NotImplementedError, match="no single-file input"):
        zoo.transforms("deeponet.darcy")
