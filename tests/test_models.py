import numpy as np
import pytest

import minigrad as mg

# parameter counts of the PyTorch definitions (same layers, same biases)
COUNTS = {"mlp": 784 * 256 + 256 + 256 * 10 + 10,
          "lenet5": 6 * 25 + 6 + 16 * 6 * 25 + 16 + 256 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10,
          "convnet": 32 * 9 + 32 + 64 * 32 * 9 + 64 + 9216 * 128 + 128 + 128 * 10 + 10}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_reference_models_shapes_and_counts(backend, name):
    model = mg.models.get_model(name)
    assert model.num_parameters() == COUNTS[name]
    out = model(mg.Tensor(np.zeros((3, 1, 28, 28), np.float32)))
    assert out.shape == (3, 10) and out.dtype == np.float32


def test_float64_models():
    assert all(p.dtype == np.float64 for p in mg.models.lenet5(dtype="float64").parameters())


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model must be one of \['convnet', 'lenet5', 'mlp'\]; got 'resnet'"):
        mg.models.get_model("resnet")
