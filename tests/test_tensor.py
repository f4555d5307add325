import re

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F


def test_tensor_basics():
    t = mg.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert t.shape == (2, 3) and t.dtype == np.float32 and t.ndim == 2 and len(t) == 2
    np.testing.assert_array_equal(t.numpy(), np.arange(6).reshape(2, 3))
    assert not t.requires_grad and t.grad is None
    assert mg.Tensor([1.0, 2.0], dtype="float32").dtype == np.float32
    assert "requires_grad=True" in repr(mg.Tensor([1.0], requires_grad=True))


def test_gradients_accumulate_across_backward_calls():
    w = mg.Tensor(np.ones(3), requires_grad=True)
    (w * 2.0).sum().backward()
    (w * 3.0).sum().backward()
    np.testing.assert_allclose(w.grad, [5.0, 5.0, 5.0])
    w.zero_grad()
    assert w.grad is None


def test_a_tensor_used_twice_gets_both_contributions():
    a = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (a * a + a).sum().backward()  # d/da = 2a + 1
    np.testing.assert_allclose(a.grad, [3.0, 5.0])


def test_no_grad_records_nothing_and_nests():
    a = mg.Tensor(np.ones(2), requires_grad=True)
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        with mg.no_grad():
            b = a * 2.0
        c = a * 2.0
    assert mg.is_grad_enabled()
    assert not b.requires_grad and not c.requires_grad and b._ctx is None

    @mg.no_grad()
    def f(x):
        return x * 2.0
    assert not f(a).requires_grad


def test_backward_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.Tensor(np.ones(2)).sum().backward()
    a = mg.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="grad must be given for a non-scalar"):
        (a * 2.0).backward()
    with pytest.raises(ValueError, match=r"grad must have shape \(2,\)"):
        (a * 2.0).backward(mg.Tensor(np.ones(3)))


def test_no_silent_broadcasting():
    a, b = mg.Tensor(np.ones((2, 3))), mg.Tensor(np.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        a + b


def test_non_differentiable_inputs_get_no_grad():
    x = mg.Tensor(np.ones((2, 4)))
    w = mg.Tensor(np.ones((3, 4)), requires_grad=True)
    F.linear(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


def test_deep_graphs_do_not_recurse():
    x = mg.Tensor(np.ones(1), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_detach_cuts_the_graph():
    x = mg.Tensor(np.ones(2), requires_grad=True)
    d = (x * 2.0).detach()
    assert not d.requires_grad and d._ctx is None


@pytest.mark.parametrize("data", ["abc", ["a", "b"], np.array(["x", "yz"]), [1.0, None], np.array([True, False]),
                                  np.array([1 + 2j]), b"ab"])
def test_non_numeric_data_is_refused_naming_the_dtype(data):
    dtype = np.asarray(data).dtype
    with pytest.raises(TypeError, match=rf"Tensor: data must be numeric \(floating point, or integers such as "
                                        rf"class targets\); got dtype {re.escape(str(dtype))}$"):
        mg.Tensor(data)


def test_numeric_data_is_kept_and_a_non_numeric_dtype_argument_is_refused():
    assert mg.Tensor(np.arange(3)).dtype.kind == "i"  # integer class targets
    assert mg.Tensor(np.arange(3, dtype=np.uint8)).dtype == np.uint8
    assert mg.Tensor(2.5).dtype == np.float64 and mg.Tensor(3).shape == ()
    with pytest.raises(TypeError, match="got dtype <U1"):
        mg.Tensor([1.0, 2.0], dtype="U1")


def test_a_second_backward_through_the_same_graph_is_refused_and_leaves_grads_alone():
    w = mg.Tensor(np.ones(3), requires_grad=True)
    loss = (w * 2.0).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="this graph was already used by a backward"):
        loss.backward()
    np.testing.assert_allclose(w.grad, [2.0, 2.0, 2.0])  # not doubled, not partly updated


def test_a_second_backward_through_a_shared_subgraph_is_refused():
    x = mg.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    (h * 1.0).sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        (h * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_retain_graph_allows_one_more_backward():
    w = mg.Tensor(np.ones(2), requires_grad=True)
    loss = (w * w).sum()
    loss.backward(retain_graph=True)
    loss.backward()  # d/dw = 2w, twice
    np.testing.assert_allclose(w.grad, [4.0, 4.0])
    with pytest.raises(RuntimeError, match="already used by a backward"):
        loss.backward()


def test_a_new_forward_per_micro_batch_accumulates_freely():
    """Gradient accumulation (minigrad.loop, profiling.noise_scale) builds a new graph for each backward."""
    w = mg.Tensor(np.ones(2), requires_grad=True)
    for _ in range(3):
        (w * 2.0).sum().backward()
    np.testing.assert_allclose(w.grad, [6.0, 6.0])
