"""Programs that tests/test_distributed.py runs on several ranks (``mpiexec -n R python -m tests.distributed_ranks
TASK OUT ...``): each rank writes what it ended with to OUT/rank<r>.npz for the test to compare."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def equivalence(out: Path, batch: int, n: int, epochs: int, accumulate: int, bucket_bytes: int) -> None:
    """Train lenet5 in float64 on ``n`` synthetic samples with local batch ``batch``; every rank starts from
    different weights on purpose (the broadcast must replace them with rank 0's)."""
    import minigrad as mg
    from minigrad import data, distributed, models, optim

    comm = distributed.init()
    mg.set_backend("numpy")
    train_set, _ = data.synthetic_mnist(n_train=n, n_test=8, seed=3)
    mg.manual_seed(comm.rank)
    model = models.get_model("lenet5", dtype="float64")
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = data.DataLoader(train_set, batch, shuffle=True, seed=1, normalize=True, dtype="float64")
    history = distributed.fit(model, loader, opt, comm, epochs=epochs, accumulate=accumulate,
                              bucket_bytes=bucket_bytes or None)
    facts = {"samples": [s.samples for s in history.steps], "updates": history.updates,
             "allreduce_bytes": [s.allreduce_bytes for s in history.steps],
             "allreduce_seconds": [s.allreduce_seconds for s in history.steps],
             "compute_seconds": [s.compute_seconds for s in history.steps]}
    np.savez(out / f"rank{comm.rank}.npz", facts=json.dumps(facts), **model.state_dict())


if __name__ == "__main__":
    task, where, *numbers = sys.argv[1:]
    {"equivalence": equivalence}[task](Path(where), *map(int, numbers))
