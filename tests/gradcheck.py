"""Float64 central finite differences against the tape's gradients."""

import numpy as np

import minigrad as mg


def numeric_grad(f, arrays, index, eps=1e-6, coords=None):
    """d f / d arrays[index] by central differences, at every coordinate or at ``coords`` (flat indices)."""
    a = arrays[index]
    flat = a.reshape(-1)
    coords = range(flat.size) if coords is None else coords
    out = {}
    for i in coords:
        old = flat[i]
        flat[i] = old + eps
        fp = f(*arrays)
        flat[i] = old - eps
        fm = f(*arrays)
        flat[i] = old
        out[i] = (fp - fm) / (2 * eps)
    return out


def relative_error(analytic, numeric):
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    denom = max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-12)
    return float(np.linalg.norm(analytic - numeric) / denom)


def gradcheck(op, *arrays, wrt=None, seed=0, max_coords=None):
    """Check ``op(*tensors) -> Tensor`` in float64: the gradient of sum(op(...) * R), R random, with respect to
    each input in ``wrt`` (indices; default all), against central differences. Returns the worst relative error.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    wrt = range(len(arrays)) if wrt is None else wrt
    rng = np.random.default_rng(seed)
    out_shape = op(*[mg.Tensor(a) for a in arrays]).shape
    R = rng.standard_normal(out_shape)

    def scalar(*arrs):
        with mg.no_grad():
            return float((op(*[mg.Tensor(a) for a in arrs]).numpy() * R).sum())

    tensors = [mg.Tensor(a.copy(), requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    out = op(*tensors)
    out.backward(mg.Tensor(R))
    worst = 0.0
    for i in wrt:
        g = tensors[i].grad
        g = np.zeros(arrays[i].shape) if g is None else mg.backend.k.to_numpy(g).astype(np.float64)
        coords = None
        if max_coords is not None and arrays[i].size > max_coords:
            coords = rng.choice(arrays[i].size, size=max_coords, replace=False)
        num = numeric_grad(scalar, arrays, i, coords=coords)
        keys = list(num)
        worst = max(worst, relative_error(g.reshape(-1)[keys], [num[c] for c in keys]))
    return worst
