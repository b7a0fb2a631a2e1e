import h5py
import numpy as np
import pytest
import scipy.io
import torch

from zoo.data import antiderivative, darcy
from zoo.errors import DataError
from zoo.layers.field_stats import OutputStats
from zoo.tasks.operator import ArrayDataset, OperatorTask, fit_darcy_to_grid
from tests.conftest import run_zoo


def test_antiderivative_generator_is_seeded_and_exact():
    a = antiderivative.generate(50, seed=3)
    b = antiderivative.generate(50, seed=3)
    assert np.array_equal(a["u"], b["u"]) and a["u"].shape == (50, 100)
    # s(y) = integral of the interpolated input: compare with a fine trapezoid rule
    from scipy.interpolate import CubicSpline
    xs = np.linspace(0, 1, 1000)
    for i in range(3):
        y = a["y"][i, 0]
        spline = CubicSpline(np.linspace(0, 1, 100), a["u"][i])
        grid = np.linspace(0, y, 4001)
        assert abs(np.trapezoid(spline(grid), grid) - a["s"][i, 0]) < 5e-3
    assert not np.array_equal(antiderivative.generate(50, seed=4)["u"], a["u"])
    del xs


def test_darcy_solver_matches_a_constant_coefficient_check():
    # a = 1 everywhere: -Lap u = 1; the centre value of the unit-square Poisson problem is ~0.07367
    s = 65
    u = darcy.solve_darcy(np.ones((s, s)))
    assert abs(u[s // 2, s // 2] - 0.07367) < 1e-3
    assert np.all(u[0] == 0) and np.all(u[:, -1] == 0)


def test_darcy_generator_thresholds_to_12_and_3():
    d = darcy.generate(3, seed=0, resolution=29, subsample=1)
    assert set(np.unique(d["coeff"])) <= {3.0, 12.0}
    assert d["sol"].shape == (3, 29, 29) and d["sol"].max() > 0


def test_darcy_generation_shows_progress_on_stderr(monkeypatch, capsys):
    import zoo.progress
    monkeypatch.setattr(zoo.progress, "PROGRESS_EVERY_S", 0.0)
    darcy.generate(3, seed=0, resolution=17, subsample=1)
    assert "solving 3 Darcy problems: 1/3" in capsys.readouterr().err
    darcy.generate(3, seed=0, resolution=17, subsample=1, show_progress=False)
    assert capsys.readouterr().err == ""


@pytest.fixture()
def fno_arrays():
    rng = np.random.default_rng(0)
    coeff = np.where(rng.random((4, 57, 57)) > 0.5, 12.0, 3.0)
    sol = rng.random((4, 57, 57))
    return coeff, sol


def test_mat_v5_and_v73_readers_agree(tmp_path, fno_arrays):
    coeff, sol = fno_arrays
    scipy.io.savemat(tmp_path / "v5.mat", {"coeff": coeff, "sol": sol})
    with h5py.File(tmp_path / "v73.mat", "w") as f:  # MATLAB v7.3 stores arrays column-major
        f["coeff"] = coeff.T
        f["sol"] = sol.T
    a, b = darcy.read_mat(tmp_path / "v5.mat"), darcy.read_mat(tmp_path / "v73.mat")
    assert np.allclose(a["coeff"], coeff) and np.allclose(b["coeff"], coeff) and np.allclose(b["sol"], sol)


def test_pt_reader(tmp_path, fno_arrays):
    coeff, sol = fno_arrays
    torch.save({"x": torch.tensor(coeff > 5)[:, None], "y": torch.tensor(sol)[:, None]}, tmp_path / "d.pt")
    d = darcy.read_pt(tmp_path / "d.pt")
    assert d["coeff"].shape == (4, 57, 57)


def test_subsampling_follows_the_paper_and_other_grids_are_resampled(fno_arrays):
    coeff, sol = fno_arrays
    c, u, s = fit_darcy_to_grid(coeff, sol, 29)  # 57 = 2*28 + 1: every 2nd point
    assert c.shape == (4, 29, 29) and s == 29 and np.array_equal(u, sol[:, ::2, ::2])
    c, u, s = fit_darcy_to_grid(coeff[:, :32, :32], sol[:, :32, :32], 29)
    assert c.shape == (4, 29, 29) and u.shape == (4, 32, 32) and s == 32


@pytest.mark.parametrize("content, needle", [
    ({"coeff": np.zeros((2, 9, 9))}, "missing field(s) sol"),
    ({"coeff": np.zeros((2, 9, 9)), "sol": np.zeros((2, 8, 8))}, "does not match"),
    ({"coeff": np.zeros((2, 9)), "sol": np.zeros((2, 9))}, "expected coefficients of shape"),
    ({"coeff": np.full((2, 9, 9), np.nan), "sol": np.zeros((2, 9, 9))}, "NaN"),
])
def test_bad_darcy_files_give_one_line(tmp_path, content, needle):
    scipy.io.savemat(tmp_path / "bad.mat", content)
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        darcy.read_mat(tmp_path / "bad.mat")


def test_not_a_mat_file_and_missing_file(tmp_path):
    (tmp_path / "x.mat").write_text("hello")
    with pytest.raises(DataError, match="not a MATLAB"):
        darcy.read_mat(tmp_path / "x.mat")
    with pytest.raises(DataError, match="not found"):
        darcy.read_file(tmp_path / "nope.mat")
    with pytest.raises(DataError, match="unknown Darcy format"):
        (tmp_path / "y.csv").write_text("1,2")
        darcy.read_file(tmp_path / "y.csv")


class _Const(OutputStats):
    """An operator model that predicts 2 everywhere (fulfils OperatorModel)."""
    branch_input, input_grid = "sensors", None

    def __init__(self):
        super().__init__()
        self.init_output_stats()

    def forward(self, a, p):
        return torch.ones(a.shape[0], p.shape[-2]) * 2.0

    def example_input(self, batch=8):
        return torch.zeros(batch, 3), torch.zeros(batch, 4, 1)


def test_metrics_mse_and_relative_l2():
    task = OperatorTask()
    assert isinstance(_Const(), task.model_protocol)
    ds = ArrayDataset(np.zeros((2, 3)), np.zeros((4, 1)), np.ones((2, 4)))
    m = task.evaluate(_Const(), ds, {})
    assert m["mse"] == pytest.approx(1.0) and m["rel_l2"] == pytest.approx(1.0)
    assert set(m) <= set(task.metric_definitions)


def test_relative_l2_is_normalised_over_the_set_when_the_dataset_says_so():
    """Targets near zero: per-sample ratios explode, the ratio over the whole set does not."""
    task = OperatorTask()
    values = np.array([[1e-3], [2.0], [2.0], [2.0]])          # prediction 2 everywhere
    per = ArrayDataset(np.zeros((4, 3)), np.zeros((1, 1)), values, meta={"rel_l2": "per-sample"})
    whole = ArrayDataset(np.zeros((4, 3)), np.zeros((1, 1)), values, meta={"rel_l2": "global"})
    m_per, m_whole = task.evaluate(_Const(), per, {}), task.evaluate(_Const(), whole, {})
    assert m_per["rel_l2"] == pytest.approx((2 - 1e-3) / 1e-3 / 4, rel=1e-4)   # ~500: one tiny target
    assert m_whole["rel_l2"] == pytest.approx((2 - 1e-3) / np.sqrt(1e-6 + 12), rel=1e-4)
    assert m_per["rel_l2_median"] == m_whole["rel_l2_median"] == 0.0


def _pretrained(name):
    from zoo.loading import load
    return load(name).model


@pytest.mark.parametrize("which, split, opts", [("16", "test", {}), ("32", "test", {"resolution": 32}),
                                                ("16-train", "train", {})])
def test_each_shipped_real_file_gives_the_same_metrics_as_the_built_in_set(which, split, opts):
    """Issue 12: a user's copy of a real file (--data) is read exactly as the darcy-neuralop set."""
    task = OperatorTask()
    model = _pretrained("deeponet.darcy-neuralop")
    path = str(darcy.real_file(which))
    built_in = task.evaluate(model, task.load_dataset("darcy-neuralop", split, None, model, opts), {})
    as_file = task.evaluate(model, task.load_dataset(None, split, path, model, {}), {})
    named_file = task.evaluate(model, task.load_dataset("darcy-neuralop", split, path, model, {}), {})
    assert built_in == as_file == named_file
    assert built_in["rel_l2"] < 0.3  # a model that learnt something, not the 3.76 of an unmapped mask


def test_a_file_in_other_units_is_refused_not_computed():
    task = OperatorTask()
    fno_model = _pretrained("deeponet.darcy")           # trained on FNO-unit solutions (~5e-3)
    path = str(darcy.real_file("32"))                   # neuraloperator units (~0.5)
    with pytest.raises(DataError, match="the darcy-neuralop format, whose solution units differ"):
        task.load_dataset("darcy", "test", path, fno_model, {})
    ds = task.load_dataset(None, "test", path, fno_model, {})
    with pytest.raises(DataError, match="not in the units this model was trained on"):
        task.evaluate(fno_model, ds, {})


def test_pt_coefficients_other_than_a_mask_are_refused(tmp_path, fno_arrays):
    coeff, sol = fno_arrays
    torch.save({"x": torch.tensor(coeff), "y": torch.tensor(sol)}, tmp_path / "d.pt")
    with pytest.raises(DataError, match="not a 0/1 mask"):
        darcy.read_pt(tmp_path / "d.pt")
    scipy.io.savemat(tmp_path / "mask.mat", {"coeff": (coeff > 5).astype(float), "sol": sol})
    with pytest.raises(DataError, match="values <= 0"):
        darcy.read_mat(tmp_path / "mask.mat")


def test_antiderivative_headline_is_the_relative_l2_over_the_whole_set():
    task = OperatorTask()
    model = _pretrained("deeponet.antiderivative")
    ds = task.load_dataset("antiderivative", "test", None, model, {"size": 2000})
    m = task.evaluate(model, ds, {})
    with torch.no_grad():
        pred = model(ds.inputs, ds.points[:, :1, :].reshape(-1, 1, 1))
    whole = float((pred[:, :1] - ds.values).norm() / ds.values.norm())
    assert m["rel_l2"] == pytest.approx(whole, rel=1e-4) and m["rel_l2"] < 0.02


def test_datasets_are_a_table_and_models_fulfil_the_protocol():
    from zoo.models.deeponet import deeponet
    from zoo.models.mt_deeponet import mt_deeponet
    task = OperatorTask()
    assert set(task.DATASETS) == {"antiderivative", "darcy", "darcy-neuralop", "fisher", "multi-geometry-darcy"}
    for m in (deeponet(), deeponet(branch="cnn", branch_layers=[8, 8], trunk_layers=[8], coord_dim=2, grid=29),
              mt_deeponet("fisher"), mt_deeponet("darcy", grid=16), mt_deeponet("heated-plate")):
        assert isinstance(m, task.model_protocol)
        x, pts = task.example_input(m, {"batch_size": 2})
        assert m(x, pts).shape[0] == 2
    with pytest.raises(DataError, match="Darcy|2-D coefficient field"):
        task.load_dataset("darcy", "test", None, deeponet(), {})


def test_cli_bad_data_file_is_one_line(tmp_path):
    (tmp_path / "bad.mat").write_text("not matlab")
    done = run_zoo("eval", "deeponet", "--dataset", "darcy", "--data", str(tmp_path / "bad.mat"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "not a MATLAB" in done.stderr
    done = run_zoo("eval", "deeponet", "--dataset", "darkcy")
    assert done.returncode == 2 and "did you mean 'darcy'" in done.stderr


@pytest.mark.parametrize("which, split, opts", [("16", "test", {}), ("32", "test", {"resolution": 32})])
def test_zoo_evaluate_gives_equal_metrics_for_the_built_in_set_and_the_same_file(which, split, opts):
    import zoo
    built_in = zoo.evaluate("deeponet", dataset="darcy-neuralop", split=split, **opts)
    as_file = zoo.evaluate("deeponet.darcy-neuralop", data=str(darcy.real_file(which)), split=split)
    assert built_in["model"] == as_file["model"] == "deeponet.darcy-neuralop"
    assert built_in["metrics"] == as_file["metrics"]
    with pytest.raises(DataError, match="use --dataset darcy-neuralop"):
        zoo.evaluate("deeponet", dataset="darcy", data=str(darcy.real_file(which)), split=split)
