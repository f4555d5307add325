import numpy as np
import pytest

import minigrad as mg
from minigrad import nn


def test_parameters_are_found_in_definition_order_with_torch_names():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert m.num_parameters() == 2 * 9 + 2 + 8 * 3 + 3


def test_a_relu_before_a_max_pool_runs_fused_with_the_same_values_and_gradients(rng):
    model = nn.Sequential(nn.Conv2d(1, 3, 3, dtype="float64"), nn.ReLU(), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                          nn.ReLU())
    assert [tuple(type(m).__name__ for m in run) for run in model.runs()] == [
        ("Conv2d",), ("ReLU", "MaxPool2d"), ("ReLU",), ("Flatten",), ("ReLU",)]
    x = mg.Tensor(rng.standard_normal((2, 1, 9, 9)))
    calls = []
    mg.backend.set_kernel_hook(lambda name, fn: (lambda *a: calls.append(name) or fn(*a)))
    try:
        y = model(x)
        y.sum().backward()
    finally:
        mg.backend.set_kernel_hook(None)
    assert "relu_maxpool2d_forward" in calls and "maxpool2d_forward" not in calls
    fused_grad = np.array(model[0].weight.grad)
    model.zero_grad()
    z = x
    for layer in model:  # the same layers one by one, unfused
        z = layer(z)
    np.testing.assert_array_equal(z.data, y.data)
    z.sum().backward()
    np.testing.assert_allclose(model[0].weight.grad, fused_grad, rtol=1e-12)


def test_bias_false_has_no_bias_parameter():
    assert [n for n, _ in nn.Linear(4, 2, bias=False).named_parameters()] == ["weight"]
    y = nn.Conv2d(1, 2, 3, bias=False)(mg.Tensor(np.ones((1, 1, 4, 4), np.float32)))
    assert y.shape == (1, 2, 2, 2)


def test_manual_seed_makes_init_reproducible():
    mg.manual_seed(7)
    a = mg.models.lenet5().state_dict()
    mg.manual_seed(7)
    b = mg.models.lenet5().state_dict()
    mg.manual_seed(8)
    c = mg.models.lenet5().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def test_state_dict_round_trip_and_errors():
    m1, m2 = mg.models.mlp(), mg.models.mlp()
    m2.load_state_dict(m1.state_dict())
    x = mg.Tensor(np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32))
    np.testing.assert_array_equal(m1(x).numpy(), m2(x).numpy())
    state = m1.state_dict()
    del state["1.bias"]
    with pytest.raises(KeyError, match=r"missing \['1.bias'\]"):
        m2.load_state_dict(state)


def test_train_eval_propagate_and_dropout_obeys_them():
    m = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.5)))
    m.eval()
    assert not m[1][0].training
    x = mg.Tensor(np.ones((4, 4), np.float32))
    np.testing.assert_array_equal(m(x).numpy(), x.numpy())
    m.train()
    assert m[1][0].training
    assert (m(x).numpy() != 1).any()


def test_batchnorm2d_updates_running_stats_and_round_trips_them():
    bn = nn.BatchNorm2d(3, dtype="float64")
    x = mg.Tensor(np.random.default_rng(0).standard_normal((8, 3, 4, 4)) * 2 + 5)
    bn(x)
    rm = mg.backend.k.to_numpy(bn.running_mean)
    np.testing.assert_allclose(rm, 0.1 * x.numpy().mean(axis=(0, 2, 3)), rtol=1e-12)
    state = bn.state_dict()
    assert set(state) == {"weight", "bias", "running_mean", "running_var"}
    bn2 = nn.BatchNorm2d(3, dtype="float64")
    bn2.load_state_dict(state)
    bn.eval(), bn2.eval()
    np.testing.assert_allclose(bn(x).numpy(), bn2(x).numpy())


def test_astype_casts_parameters_and_buffers():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).astype("float64")
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert m[1].running_var.dtype == np.float64


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="in_channels must be a positive integer"):
        nn.Conv2d(0, 2, 3)
    with pytest.raises(ValueError, match="out_features must be a positive integer"):
        nn.Linear(3, -1)
    with pytest.raises(TypeError, match="layer 1 must be a Module"):
        nn.Sequential(nn.ReLU(), "relu")
    with pytest.raises(ValueError, match=r"Dropout: p must lie in \[0, 1\]"):
        nn.Dropout(2.0)


def test_wrong_input_channels_is_a_clear_error():
    m = mg.models.lenet5()
    with pytest.raises(ValueError, match="conv2d: w has 1 input channels but x has 3"):
        m(mg.Tensor(np.zeros((2, 3, 28, 28), np.float32)))
    with pytest.raises(ValueError, match=r"conv2d: x must be 4-D \(N, C, H, W\); got shape \(28, 28\)"):
        m(mg.Tensor(np.zeros((28, 28), np.float32)))
    with pytest.raises(TypeError, match="x must be float32 or float64; got uint8"):
        m(mg.Tensor(np.zeros((1, 1, 28, 28), np.uint8)))


@pytest.fixture
def elsewhere_backend(monkeypatch):
    """A registered backend whose arrays claim to live on another device (numpy's kernels underneath)."""
    import sys
    import types

    from minigrad import backend
    from minigrad.kernels import numpy_ops

    module = types.ModuleType("elsewhere_ops")
    for name in backend.CONTRACT:
        setattr(module, name, getattr(numpy_ops, name))
    module.DEVICE = "elsewhere"
    monkeypatch.setitem(sys.modules, "elsewhere_ops", module)
    monkeypatch.setitem(backend._REGISTRY, "elsewhere", "elsewhere_ops")
    yield "elsewhere"


def test_a_module_knows_its_backend_and_moves_freely_between_host_backends():
    with mg.use_backend("reference"):
        model = mg.models.mlp()
    assert (model.backend, model.device) == ("reference", "host")
    with mg.use_backend("numpy"):
        y = model(mg.Tensor(np.zeros((2, 1, 28, 28), np.float32)))  # host arrays: no move needed
    assert y.shape == (2, 10)


def test_calling_a_module_under_a_backend_on_another_device_names_both(elsewhere_backend):
    with mg.use_backend("numpy"):
        model = mg.models.mlp()
    x = np.zeros((2, 1, 28, 28), np.float32)
    with mg.use_backend(elsewhere_backend):
        with pytest.raises(nn.BackendMismatch, match=r"host arrays \(made under backend 'numpy'\) but the live "
                                                     r"backend is 'elsewhere' \(elsewhere arrays\); call "
                                                     r"\.to_backend\(\)"):
            model(mg.Tensor(x))
        model.to_backend()
        assert all(m.device == "elsewhere" for _, m in model._modules_with_prefix())
        assert model(mg.Tensor(x)).shape == (2, 10)
    with mg.use_backend("numpy"), pytest.raises(nn.BackendMismatch, match="made under backend 'elsewhere'"):
        model(mg.Tensor(x))
