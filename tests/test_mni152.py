"""The one real anatomy sub-task that ships offline: nilearn's MNI152 template slices with
grey/white-matter masks, trained and evaluated through the CLI as a user would."""

import json

import pytest

from tests.conftest import run_zoo

TINY = ('config={"encoder": "efficientnet-b0", "img_size": 64, "pyramid_channels": 32, '
        '"segmentation_channels": 32, "tasks": {"brain_tissue": ["segmentation", 3]}}')


def test_mni152_slices_have_three_tissue_classes():
    from zoo.data.ultrasound import mni152_tissue
    train, test = mni152_tissue("train", img=32), mni152_tissue("test", img=32)
    assert len(train) == len(test) == 55
    labels = set()
    for i in range(len(train)):
        labels |= set(train[i]["mask"].unique().tolist())
    assert labels == {0, 1, 2}
    # even slices train, odd slices test: the two splits are different images
    assert not (train[20]["image"] == test[20]["image"]).all()


@pytest.mark.slow
def test_finetune_and_eval_on_mni152(tmp_path):
    out = tmp_path / "mni"
    done = run_zoo("finetune", "fm-uia-baseline", "--dataset", "mni152-tissue", "--scratch", "--steps", "2",
                   "--batch-size", "4", "-o", TINY, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    ev = run_zoo("eval", str(out), "--dataset", "mni152-tissue", "--json")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)["metrics"]
    assert 0.0 <= metrics["brain_tissue/dsc"] <= 1.0 and metrics["brain_tissue/hd95"] >= 0.0
    assert metrics["samples"] == 55
