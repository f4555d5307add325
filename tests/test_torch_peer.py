"""The torch peer: the same architecture, weights and training rule as minigrad (skipped without torch)."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import data, models, optim, train

torch = pytest.importorskip("torch")
from minigrad import torch_peer  # noqa: E402  (needs torch)


@pytest.fixture(autouse=True)
def numpy_backend():
    with mg.use_backend("numpy"):  # the peer takes numpy arrays
        yield


@pytest.mark.parametrize("name", ["mlp", "lenet5", "convnet"])
def test_twin_has_the_same_layers_weights_and_outputs(name):
    mg.manual_seed(3)
    model = models.get_model(name, dtype="float64")
    twin = torch_peer.twin(model, "float64")
    assert list(twin.state_dict()) == list(model.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    expected = model(mg.Tensor(x)).numpy()
    np.testing.assert_allclose(torch_peer.predict(twin.eval(), x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("opt_name,accumulate", [("sgd", 1), ("sgd", 3), ("adam", 2)])
def test_fit_matches_minigrad_step_for_step(opt_name, accumulate):
    train_set, _ = data.synthetic_mnist(n_train=80, n_test=1, seed=1)
    mg.manual_seed(0)
    model = models.get_model("lenet5", dtype="float64")
    twin = torch_peer.twin(model, "float64")

    def loader():
        return data.DataLoader(train_set, 16, shuffle=True, seed=5, dtype="float64")

    mg_opt = (optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "sgd"
              else optim.Adam(model.parameters(), lr=0.01))
    t_opt = torch_peer.Optimizer(twin, opt_name, lr=0.05 if opt_name == "sgd" else 0.01, momentum=0.9)
    kw = dict(epochs=2, accumulate=accumulate, max_steps=9, progress=False)
    ours = train.fit(model, loader(), mg_opt, warmup=optim.LinearWarmup(mg_opt, 3), **kw)
    theirs = train.fit(twin, loader(), t_opt, warmup=optim.LinearWarmup(t_opt, 3), adapter=torch_peer.ADAPTER, **kw)
    np.testing.assert_allclose([s.loss for s in theirs.steps], [s.loss for s in ours.steps], rtol=1e-9)
    assert [s.update for s in theirs.steps] == [s.update for s in ours.steps]
    assert [(e.samples, e.updates) for e in theirs.epochs] == [(e.samples, e.updates) for e in ours.epochs]
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(twin.state_dict()[name].numpy(), value, rtol=1e-8, atol=1e-10)


def test_evaluate_matches_minigrad_and_restores_the_mode():
    _, test_set = data.synthetic_mnist(n_train=1, n_test=50, seed=2)
    model = models.get_model("mlp")
    twin = torch_peer.twin(model)
    ours = train.evaluate(model, data.DataLoader(test_set, 20))
    theirs = train.evaluate(twin, data.DataLoader(test_set, 20), torch_peer.ADAPTER)
    assert theirs["accuracy"] == ours["accuracy"] and theirs["samples"] == 50
    assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-5)
    assert twin.training


def test_optimizer_lr_drives_every_param_group_and_non_finite_loss_stops():
    twin = torch_peer.twin(models.get_model("mlp"))
    opt = torch_peer.Optimizer(twin, "sgd", lr=0.1, momentum=0.0)
    opt.lr = 0.5
    assert all(g["lr"] == 0.5 for g in opt.torch.param_groups) and opt.lr == 0.5
    with torch.no_grad():
        next(twin.parameters()).fill_(float("nan"))
    train_set, _ = data.synthetic_mnist(n_train=8, n_test=1)
    with pytest.raises(train.NonFiniteLoss, match="at step 1"):
        train.fit(twin, data.DataLoader(train_set, 4), opt, progress=False, adapter=torch_peer.ADAPTER)


def test_unknown_layer_is_refused():
    with pytest.raises(TypeError, match="no PyTorch equivalent"):
        torch_peer.twin(mg.nn.Sequential(mg.nn.Flatten(), _Odd()))


class _Odd(mg.nn.Module):
    def forward(self, x):
        return x
