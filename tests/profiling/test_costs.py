"""FLOP and byte formulas against counts done by hand."""

import numpy as np
import pytest

from minigrad.profiling import costs


def f32(*shape):
    return np.zeros(shape, np.float32)


def test_conv2d_hand_count():
    # 5x5 input, one 3x3 filter, no padding: 3x3 outputs, each a 9-term dot product = 9 multiply-adds
    fwd, bwd = costs.kernel_costs("conv2d_forward", (f32(1, 1, 5, 5), f32(1, 1, 3, 3), None, 1, 0))
    assert fwd.flops == 2 * 9 * 9
    assert fwd.bytes == 4 * (25 + 9 + 9)            # read x and w, write y
    assert bwd.flops == 4 * 9 * 9                    # dx and dw, each as much work as the forward
    assert bwd.bytes == 4 * (9 + 25 + 9 + 25 + 9)    # read dy, x, w; write dx, dw


def test_without_an_input_gradient_a_backward_does_half_the_gemm_work():
    args = (f32(1, 1, 5, 5), f32(1, 1, 3, 3), None, 1, 0)
    dx = costs.input_gradient_cost("conv2d_forward", args)
    assert dx.flops == 2 * 9 * 9 and dx.bytes == 4 * 25          # the dx GEMM and the write of dx
    dx = costs.input_gradient_cost("linear_forward", (f32(2, 3), f32(4, 3), f32(4)))
    assert dx.flops == 2 * 2 * 3 * 4 and dx.bytes == 4 * 6
    assert costs.input_gradient_cost("relu_forward", (f32(3),)).flops == 0


def test_conv2d_with_bias_stride_and_padding():
    # 4x4 input padded by 1 -> 6x6, 3x3 kernel, stride 2 -> 2x2 outputs; 2 filters over 3 channels, bias
    fwd, _ = costs.kernel_costs("conv2d_forward", (f32(2, 3, 4, 4), f32(2, 3, 3, 3), f32(2), 2, 1))
    outputs = 2 * 2 * 2 * 2
    assert fwd.flops == outputs * (2 * 27) + outputs
    assert fwd.bytes == 4 * (2 * 3 * 16 + 2 * 27 + 2 + outputs)


def test_linear_hand_count():
    fwd, bwd = costs.kernel_costs("linear_forward", (f32(2, 3), f32(4, 3), f32(4)))
    assert fwd.flops == 2 * 2 * 3 * 4 + 2 * 4        # 8 dot products of length 3, plus the bias adds
    assert fwd.bytes == 4 * (6 + 12 + 4 + 8)
    assert bwd.flops == 4 * 2 * 3 * 4 + 2 * 4


def test_maxpool_hand_count():
    fwd, bwd = costs.kernel_costs("maxpool2d_forward", (f32(1, 1, 4, 4), 2, 2))
    assert fwd.flops == 4 * 3                        # 4 windows, 3 comparisons each
    assert fwd.bytes == 4 * (16 + 4)
    assert bwd.flops == 4 and bwd.bytes == 4 * (4 + 16)


def test_float64_doubles_bytes_not_flops():
    a, _ = costs.kernel_costs("relu_forward", (f32(10),))
    b, _ = costs.kernel_costs("relu_forward", (np.zeros(10),))
    assert a.flops == b.flops == 10 and b.bytes == 2 * a.bytes == 2 * 4 * 10 * 2


def test_optimizer_updates():
    p = f32(100)
    plain = costs.update_cost("sgd_update", (p, p, None, 0.1, 0.0, False, 0.0))
    assert plain.flops == 200 and plain.bytes == 4 * 100 * 3
    mom = costs.update_cost("sgd_update", (p, p, p, 0.1, 0.9, True, 1e-4))
    assert mom.flops == 100 * 8 and mom.bytes == 4 * 100 * 5
    assert costs.update_cost("adam_update", (p, p, p, p, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)).bytes == 4 * 100 * 7


def test_every_forward_kernel_of_the_contract_has_a_formula():
    from minigrad import backend
    args = {"conv2d": (f32(1, 1, 5, 5), f32(1, 1, 3, 3), None, 1, 0), "maxpool2d": (f32(1, 1, 4, 4), 2, 2),
            "relu_maxpool2d": (f32(1, 1, 4, 4), 2, 2),
            "linear": (f32(2, 3), f32(4, 3), None), "softmax_xent": (f32(2, 3), np.zeros(2, np.int64)),
            "dropout": (f32(3), 0.5, 0), "batchnorm2d": (f32(1, 2, 2, 2), f32(2), f32(2), f32(2), f32(2), True, 0.1,
                                                         1e-5)}
    for name in backend.KERNELS:
        if name.endswith("_forward"):
            op = name[: -len("_forward")]
            fwd, bwd = costs.kernel_costs(name, args.get(op, (f32(2, 3),)))
            assert fwd.flops > 0 and bwd.bytes > 0
    with pytest.raises(KeyError, match="no cost formula"):
        costs.kernel_costs("gelu_forward", (f32(2),))
