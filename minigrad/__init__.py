"""minigrad: a from-scratch CNN + minibatch-SGD engine built to be measured.

    import minigrad as mg
    import minigrad.functional as F
    mg.set_backend("numpy")            # "numpy" | "numba" | "cupy"; or `with mg.use_backend("numpy"):`
    model = mg.models.lenet5()
    opt = mg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train, test = mg.data.load_mnist()
    history = mg.train.fit(model, mg.data.DataLoader(train, 64, shuffle=True, seed=0), opt, epochs=1)
"""

import os as _os

#: The environment's variable names when minigrad was first imported, before any dependency could add to it
#: (``machine.user_environment`` hands children the user's environment with this).
ENVIRON_AT_IMPORT = frozenset(_os.environ)

from . import backend, functional, models, nn, optim  # noqa: E402,F401
from .backend import available_backends, get_backend, set_backend, use_backend  # noqa: E402,F401
from .rng import manual_seed  # noqa: E402,F401
from .tensor import Tensor, is_grad_enabled, no_grad  # noqa: E402,F401

__version__ = "0.1.0"


def __getattr__(name):
    # data and train pull in tqdm and the dataset code; import them on first use to keep `import minigrad` light.
    if name in ("data", "train"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'minigrad' has no attribute {name!r}")
