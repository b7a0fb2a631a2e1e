"""MT-DeepONet: official layer sizes per problem, the geometry mask, the Fisher and multi-geometry
Darcy data, and the operator task with both."""

import numpy as np
import pytest
import torch

from zoo.models.mt_deeponet import mt_deeponet


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("problem,count", [
    # Fisher: 68 -> 128 (LN) -> 128 (LN) -> 300 | 2 -> 128 -> 128 -> 128 -> 300
    ("fisher", 64_556 + 72_108),
    # Darcy: 4 convs 5x5 (16, 32, 64, 64) on 100x100x2, pools to 6x6 -> 128 -> 128 -> 150
    #        | trunk 2 -> 64 -> 128 -> 128 -> 128 -> 150
    ("darcy", 498_278 + 60_886),
    # heated plate: 2 -> 32, 64, 128, 128 (BN) -> 200 | 3 -> 9 BN layers + 7 projections -> 200 (trainable only)
    ("heated-plate", 53_544 + 184_904),
])
def test_official_layer_sizes(problem, count):
    assert n_params(mt_deeponet(problem)) == count


def test_shapes_and_no_bias():
    m = mt_deeponet("fisher").eval()
    assert m(torch.randn(3, 68), torch.rand(1280, 2)).shape == (3, 1280)
    assert m(torch.randn(3, 68), torch.rand(3, 50, 2)).shape == (3, 50)
    plate = mt_deeponet("heated-plate").eval()
    assert plate(torch.randn(4, 2), torch.rand(500, 3)).shape == (4, 500)
    # the output is sum_k b_k t_k with no bias: a zero branch gives exactly zero
    with torch.no_grad():
        m.branch.net[-1].weight.zero_()
        m.branch.net[-1].bias.zero_()
    assert torch.count_nonzero(m(torch.randn(2, 68), torch.rand(10, 2))) == 0


def test_darcy_prediction_is_zero_outside_the_geometry():
    from zoo.tasks.operator import grid_points
    m = mt_deeponet("darcy").eval()
    x = torch.randn(2, 2, 100, 100)
    x[:, 1] = (torch.rand(2, 100, 100) > 0.4).float()
    pts = torch.as_tensor(grid_points(100))
    y = m(x, pts)
    inside = x[:, 1].flatten(1) > 0
    assert torch.all(y[~inside] == 0) and torch.all(y[inside] != 0)
    # an explicit mask wins over the one read from the branch input
    assert torch.all(m(x, pts, mask=torch.ones(2, 10000)) != 0)


def test_unknown_problem_and_option():
    from zoo.errors import ConfigError, UnknownNameError
    with pytest.raises(UnknownNameError):
        mt_deeponet("burgers")
    with pytest.raises(ConfigError):
        mt_deeponet("fisher", kernel=3)


# ---- data ------------------------------------------------------------------------------------

def test_fisher_forms_and_solver_against_the_logistic_solution():
    from zoo.data import fisher
    assert np.allclose(fisher.reaction_coefficients(1, 0.5), [0.5, -0.5, 0, 0])
    assert np.allclose(fisher.reaction_coefficients(2, 1.0), [1, 0, -1, 0])
    b = 1.0
    assert np.allclose(fisher.reaction_coefficients(4, 1.0, b), np.exp(-b) * np.array([1, 0, -0.5, -0.5]))
    # flat initial data and zero-flux ends: u_t = a(u - u^2), u(t) = u0 e^{at} / (1 - u0 + u0 e^{at})
    a, u0 = 0.8, 0.2
    u = fisher.solve(np.full((1, fisher.NX), u0), np.array([[a, -a, 0, 0]]), diffusion=0.01)
    t = np.linspace(0, 1, fisher.NT)
    exact = u0 * np.exp(a * t) / (1 - u0 + u0 * np.exp(a * t))
    assert np.abs(u[0, :, 10] - exact).max() < 1e-8


@pytest.fixture()
def small_fisher(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    return {"per_form": [20, 20, 40]}


def test_fisher_sets_and_the_operator_task(small_fisher, tmp_path):
    from zoo.data import fisher
    from zoo.errors import DataError
    from zoo.tasks import get_task

    d = fisher.load("train", **small_fisher)
    assert d["inputs"].shape == (64, 68) and d["values"].shape == (64, 1280) and d["points"].shape == (1280, 2)
    assert set(np.unique(d["form"])) == {1, 2, 4}
    assert np.abs(d["inputs"][:, 4:].mean(0)).max() < 1e-5  # IC standardised with the training statistics
    assert (tmp_path / "fisher").is_dir()
    again = fisher.load("train", **small_fisher)
    assert np.array_equal(again["values"], d["values"])  # from the cache, identical

    task = get_task("operator")
    model = mt_deeponet("fisher")
    assert isinstance(model, task.model_protocol)
    opts = dict(small_fisher)  # `-o per_form=[20,20,40]` on the command line
    train = task.load_dataset("fisher", "train", None, model, opts)
    test = task.load_dataset("fisher", "test", None, model, opts)
    with pytest.raises(DataError, match="needs a model whose branch reads a \\(log K, geometry mask\\) image, "
                                        "e.g. the MT-DeepONet 'darcy' network"):
        task.load_dataset("multi-geometry-darcy", "test", None, model, opts)
    with pytest.raises(DataError, match="needs a model whose branch reads reaction-polynomial"):
        task.load_dataset("fisher", "test", None, mt_deeponet("darcy", grid=16), opts)
    assert len(train) == 64 and len(test) == 16
    assert model.output_stats() is None
    task.prepare(model, train, {})
    assert model.output_stats() == pytest.approx((float(train.values.mean()), float(train.values.std())))
    batch = task.collate([train[i] for i in range(8)])
    loss, logs = task.loss(model, batch)
    loss.backward()
    metrics = task.evaluate(model, test, {})
    assert {"mse", "rel_l2"} <= set(metrics) and np.isfinite(metrics["rel_l2"])
    # Fisher's relative L2 is the official script's one ratio over the whole test set
    with torch.no_grad():
        pred = model(test.inputs, test.points)
    whole = float((pred - test.values).norm() / test.values.norm())
    assert metrics["rel_l2"] == pytest.approx(whole, rel=1e-4)
    out = task.predict(model, None, test, tmp_path / "fisher.png", {})
    assert (tmp_path / "fisher.png").stat().st_size > 0 and out["reaction_form"] in (1, 2, 4)
    x, pts = task.example_input(model, {"batch_size": 2})
    assert model(x, pts).shape == (2, 256)


def test_multi_geometry_darcy_generator_and_reader(tmp_path):
    from scipy.io import savemat

    from zoo.data import multi_geometry_darcy as mgd

    d = mgd.generate(("square", "circle", "triangle", "square-cross"), 1, seed=0)
    assert d["k"].shape == (4, 100, 100) and (d["k"] > 0).all()
    # zero outside (and on the boundary of) each geometry, positive inside (f = 1 > 0)
    outside = d["mask"] < 0.5
    assert np.all(d["u"][outside] == 0) and np.all(d["u"][~outside] > 0)
    assert len({float(m.sum()) for m in d["mask"]}) == 4  # four different shapes
    # the official .mat layout, written and read back
    n = 3
    mat = {f"{k}_{s}": v for s in ("train", "test") for k, v in
           (("k", np.exp(np.random.rand(n, 100, 100))), ("u", np.random.rand(n, 100, 100)),
            ("shape", (np.random.rand(n, 100, 100) > 0.5).astype(float)))}
    savemat(tmp_path / "Dataset_sq_mask.mat", mat)
    sets = mgd.load("test", data_path=str(tmp_path / "Dataset_sq_mask.mat"))
    assert sets["inputs"].shape == (3, 2, 100, 100) and sets["values"].shape == (3, 10000)
    assert np.allclose(sets["values"], mat["u_test"].reshape(3, -1) * 10, atol=1e-5)
    assert np.array_equal(sets["inputs"][:, 1], mat["shape_test"])
