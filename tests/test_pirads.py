"""pirads-dual-path (our reconstruction of arXiv 2309.12970), its single-branch baseline, the
segmentation task, the prostate phantom and the NIfTI / DICOM-SEG readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import run_zoo
from zoo.data import prostate
from zoo.errors import DataError
from zoo.models.pirads_dual_path import GROUP_A, GROUP_B, pirads_dual_path, pirads_single_unet
from zoo.tasks.segmentation import segmentation_metrics

OURS = dict(img_size=64, widths=[8, 16, 32, 64])


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_of_our_configuration():
    # nothing was published: these pin our reconstruction at the registry config
    assert _count(pirads_dual_path(**OURS)) == 242_712
    assert _count(pirads_single_unet(**OURS)) == 121_069


def test_branch_groups_share_only_tz_and_cover_every_zone():
    assert set(GROUP_A) & set(GROUP_B) == {2}
    assert set(GROUP_A) | set(GROUP_B) == {1, 2, 3, 4}


def test_stage_two_adds_the_consistency_loss_only_after_stage1_steps():
    torch.manual_seed(0)
    m = pirads_dual_path(img_size=32, widths=[4, 8], stage1_steps=5)
    x, y = torch.rand(2, 1, 32, 32), torch.randint(0, 5, (2, 32, 32))
    _, logs1 = m.segmentation_loss(x, y, step=4)
    _, logs2 = m.segmentation_loss(x, y, step=5)
    assert logs1["stage"] == 1.0 and "consistency" not in logs1
    assert logs2["stage"] == 2.0 and logs2["consistency"] > 0


def test_consistency_is_zero_when_the_branches_agree_with_the_fusion():
    big = 30.0
    a = torch.full((1, 3, 4, 4), -big); a[:, 2] = big          # A says TZ everywhere
    b = torch.full((1, 4, 4, 4), -big); b[:, 1] = big          # B says TZ everywhere
    f = torch.full((1, 5, 4, 4), -big); f[:, 2] = big          # fusion says TZ
    m = pirads_dual_path(img_size=32, widths=[4, 8])
    assert float(m.consistency({"a": a, "b": b, "fused": f})) < 1e-8
    b2 = b.clone(); b2[:, 1], b2[:, 2] = -big, big             # B now says DPU
    assert float(m.consistency({"a": a, "b": b2, "fused": f})) > 0.5


def test_phantom_is_seeded_and_not_every_zone_is_in_every_slice():
    a, b = prostate.phantom("test", seed=3, cases=2, size=48), prostate.phantom("test", seed=3, cases=2, size=48)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, prostate.phantom("train", seed=3, cases=2, size=48).images[:len(a)])
    present = torch.stack([(a.masks == c).flatten(1).any(1) for c in range(1, 5)], 1)
    assert present.any(0).all()               # every zone somewhere
    assert not present.all(1).all()           # but not in every slice
    assert not present[:, 2].all() or not present[:, 3].all()


def test_metrics_perfect_and_missed_class():
    truth = torch.zeros(1, 32, 32, dtype=torch.long)
    truth[0, 8:20, 8:20] = 1
    m = segmentation_metrics(truth, truth, 2, ["bg", "fg"])
    assert m["dice_fg"] == pytest.approx(1.0) and m["hd95_fg"] == 0 and m["masd_fg"] == 0
    missed = segmentation_metrics(torch.zeros_like(truth), truth, 2, ["bg", "fg"])
    assert missed["dice_fg"] == 0 and missed["masd_fg"] == pytest.approx(np.hypot(32, 32))


def _volumes(tmp_path, shift_affine=False, bad_label=False, ndim=3):
    ds = prostate.phantom("test", seed=1, cases=1, size=64)
    img = ds.images[:, 0].permute(1, 2, 0).numpy()          # (H, W, slices)
    lab = ds.masks.permute(1, 2, 0).numpy().astype(np.int16)
    if ndim == 2:
        img, lab = img[..., 5], lab[..., 5]
    if bad_label:
        lab[0, 0] = 9
    aff = np.eye(4)
    prostate.write_nifti(tmp_path / "case.nii.gz", img.astype(np.float32), aff)
    aff2 = aff.copy()
    if shift_affine:
        aff2[0, 3] = 5.0
    prostate.write_nifti(tmp_path / "zones.nii.gz", lab, aff2)
    return tmp_path / "case.nii.gz", tmp_path / "zones.nii.gz"


def test_nifti_reader_slices_a_volume_and_says_so(tmp_path):
    img, lab = _volumes(tmp_path)
    ds = prostate.read_nifti(img, lab)
    assert len(ds) == 12 and ds.image_size == (64, 64)
    assert any("3-D volume" in n and "12 axial 2-D slices" in n for n in ds.notes)
    img2, lab2 = _volumes(tmp_path / "two", ndim=2)
    assert len(prostate.read_nifti(img2, lab2)) == 1


def test_nifti_reader_refuses_a_different_affine_and_bad_labels(tmp_path):
    img, lab = _volumes(tmp_path / "a", shift_affine=True)
    with pytest.raises(DataError, match="different affine"):
        prostate.read_nifti(img, lab)
    img, lab = _volumes(tmp_path / "b", bad_label=True)
    with pytest.raises(DataError, match="label values 0..9"):
        prostate.read_nifti(img, lab)
    with pytest.raises(DataError, match="label volume"):
        prostate.read_nifti(img, None)


def test_mask_of_another_size_is_refused():
    with pytest.raises(DataError, match="do not match"):
        prostate.SegmentationSlices(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 9, dtype=torch.long), "x", "test", ["a"])


def test_dicom_seg_reader_on_pydicoms_shipped_seg():
    from pydicom.data import get_testdata_file
    labels, names = prostate.read_dicom_seg(get_testdata_file("liver_1frame.dcm"))
    assert names == ["Liver"] and labels.shape == (1, 512, 512)
    assert set(np.unique(labels)) == {0, 1} and int((labels > 0).sum()) == 36233
    with pytest.raises(DataError, match="not a DICOM Segmentation"):
        prostate.read_dicom_seg(get_testdata_file("CT_small.dcm"))


def test_cli_eval_on_nifti_with_labels(tmp_path):
    img, lab = _volumes(tmp_path)
    r = run_zoo("eval", "pirads-dual-path", "--data", str(img), "-o", f"labels={lab}", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["metrics"]
    assert m["slices"] == 12 and m["dice_mean"] > 0.8   # percentile rescaling shifts contrast a little
    assert "3-D volume" in r.stderr
    img, lab = _volumes(tmp_path / "bad", shift_affine=True)
    r = run_zoo("eval", "pirads-dual-path", "--data", str(img), "-o", f"labels={lab}")
    assert r.returncode != 0 and "different affine" in r.stderr and "Traceback" not in r.stderr


def test_cli_predict_draws_an_overlay(tmp_path):
    out = tmp_path / "p.png"
    r = run_zoo("predict", "pirads-dual-path", "--dataset", "prostate-phantom", "-o", "index=5", "--save", str(out), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert out.stat().st_size > 1000 and res["pixels"]["PZ"] > 0 and "metrics" in res


def test_finetune_resumes_into_stage_two(tmp_path):
    out = tmp_path / "run"
    cfg = json.dumps({"img_size": 32, "widths": [4, 8], "stage1_steps": 2})
    common = ["pirads-dual-path", "--dataset", "prostate-phantom", "--scratch", "--batch-size", "2",
              "-o", f"config={cfg}", "-o", "size=1", "-o", "no_eval=true", "--out", str(out)]
    r = run_zoo("finetune", *common, "--steps", "2")
    assert r.returncode == 0, r.stderr
    state = torch.load(out / ".train" / "state.pt", weights_only=True)
    assert int(state["module"]["step"]) == 2
    r = run_zoo("finetune", *common, "--steps", "4", "--resume")
    assert r.returncode == 0, r.stderr
    assert int(torch.load(out / ".train" / "state.pt", weights_only=True)["module"]["step"]) == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pirads-dual-path", "pirads-single-unet"])
def test_registry_metrics_are_reproduced(name):
    import zoo.registry as reg
    want = reg.load_registry().models[name].checkpoints["prostate-phantom"].metrics
    r = run_zoo("eval", name, "--dataset", "prostate-phantom", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["metrics"]
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-4), k
