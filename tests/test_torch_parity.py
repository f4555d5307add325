"""F.* forward and backward against PyTorch (CPU), when torch is importable; skipped cleanly otherwise."""

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F

torch = pytest.importorskip("torch")
tF = torch.nn.functional


def run_both(mg_op, torch_op, arrays, dtype=np.float64, seed=0):
    """Forward both, backprop the same random cotangent; return (mg_out, t_out, mg_grads, t_grads)."""
    arrays = [np.asarray(a, dtype=dtype) for a in arrays]
    mts = [mg.Tensor(a.copy(), requires_grad=True) for a in arrays]
    tts = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    mo, to = mg_op(*mts), torch_op(*tts)
    R = np.random.default_rng(seed).standard_normal(mo.shape).astype(dtype)
    mo.backward(mg.Tensor(R))
    to.backward(torch.tensor(R))
    return (mo.numpy(), to.detach().numpy(), [mg.backend.k.to_numpy(t.grad) for t in mts],
            [t.grad.numpy() for t in tts])


def assert_same(mg_op, torch_op, *arrays, dtype=np.float64, tol=1e-10):
    mo, to, mgs, tgs = run_both(mg_op, torch_op, arrays, dtype)
    np.testing.assert_allclose(mo, to, rtol=tol, atol=tol)
    for a, b in zip(mgs, tgs):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (1, 2)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_conv2d(backend, rng, stride, padding, dtype, tol):
    x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    assert_same(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding),
                lambda x, w, b: tF.conv2d(x, w, b, stride=stride, padding=padding), x, w, b, dtype=dtype, tol=tol)


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (3, 1)])
def test_max_pool2d(backend, rng, kernel, stride):
    x = rng.standard_normal((2, 3, 9, 7))
    assert_same(lambda x: F.max_pool2d(x, kernel, stride), lambda x: tF.max_pool2d(x, kernel, stride), x)


def test_linear_relu_flatten(backend, rng):
    x, w, b = rng.standard_normal((4, 2, 3, 2)), rng.standard_normal((5, 12)), rng.standard_normal(5)
    assert_same(lambda x, w, b: F.relu(F.linear(F.flatten(x), w, b)),
                lambda x, w, b: tF.relu(tF.linear(torch.flatten(x, 1), w, b)), x, w, b)


def test_log_softmax(backend, rng):
    assert_same(lambda x: F.log_softmax(x, dim=1), lambda x: tF.log_softmax(x, dim=1), rng.standard_normal((5, 10)) * 4)


def test_cross_entropy(backend, rng):
    t = rng.integers(0, 10, size=7)
    assert_same(lambda z: F.cross_entropy(z, t), lambda z: tF.cross_entropy(z, torch.tensor(t)),
                rng.standard_normal((7, 10)) * 4)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm2d_including_running_stats(backend, rng, training):
    C = 3
    x, g, b = rng.standard_normal((4, C, 5, 5)) * 2 + 1, rng.standard_normal(C), rng.standard_normal(C)
    rm_mg, rv_mg = mg.backend.k.asarray(np.full(C, 0.5)), mg.backend.k.asarray(np.full(C, 2.0))
    rm_t, rv_t = torch.full((C,), 0.5, dtype=torch.float64), torch.full((C,), 2.0, dtype=torch.float64)
    assert_same(lambda x, g, b: F.batch_norm2d(x, rm_mg, rv_mg, g, b, training=training),
                lambda x, g, b: tF.batch_norm(x, rm_t, rv_t, g, b, training=training), x, g, b)
    np.testing.assert_allclose(mg.backend.k.to_numpy(rm_mg), rm_t.numpy(), rtol=1e-12)
    np.testing.assert_allclose(mg.backend.k.to_numpy(rv_mg), rv_t.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "lenet5", "convnet"])
def test_reference_models_match_torch_architectures_and_initialisation_bounds(name):
    """Same parameter shapes in the same order as the PyTorch definition, and init within PyTorch's bounds."""
    nn = torch.nn
    torch_models = {
        "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)),
        "lenet5": lambda: nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120), nn.ReLU(),
                                        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)),
        "convnet": lambda: nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(),
                                         nn.Linear(128, 10)),
    }
    tm = torch_models[name]()
    ours = mg.models.get_model(name)
    theirs = dict(tm.named_parameters())
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, tuple(p.shape)) for n, p in theirs.items()]
    for (n, p) in ours.named_parameters():
        bound = 1 / np.sqrt(np.prod(theirs[n.replace("bias", "weight")].shape[1:]))
        vals = p.numpy()
        assert np.abs(vals).max() <= bound
        if vals.size >= 1000:  # uniform over the whole range: std of U(-a, a) is a/sqrt(3)
            assert abs(vals.std() / (bound / np.sqrt(3)) - 1) < 0.05, n
    # the same weights give the same logits
    tm.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(ours(mg.Tensor(x)).numpy(), tm(torch.tensor(x)).detach().numpy(), rtol=1e-4,
                               atol=1e-5)


def test_one_sgd_momentum_step_of_lenet5_matches_torch():
    mg.manual_seed(0)
    ours = mg.models.lenet5(dtype="float64")
    nn = torch.nn
    tm = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                       nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                       nn.Linear(84, 10)).double()
    tm.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(1)
    opt = mg.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for _ in range(3):
        x, t = rng.random((4, 1, 28, 28)), rng.integers(0, 10, 4)
        F.cross_entropy(ours(mg.Tensor(x)), t).backward()
        opt.step()
        opt.zero_grad()
        tF.cross_entropy(tm(torch.tensor(x)), torch.tensor(t)).backward()
        topt.step()
        topt.zero_grad()
    for (n, p), (_, tp) in zip(ours.named_parameters(), tm.named_parameters()):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=n)


def test_adam_matches_torch():
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((3, 4))
    p = mg.nn.Parameter(w0.copy())
    tp = torch.tensor(w0.copy(), requires_grad=True)
    opt = mg.optim.Adam([p], lr=0.01, weight_decay=1e-2)
    topt = torch.optim.Adam([tp], lr=0.01, weight_decay=1e-2)
    for _ in range(5):
        g = rng.standard_normal((3, 4))
        p.grad = mg.backend.k.asarray(g.copy())
        tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-10)
