import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
from minigrad import data, distributed, models, optim, train

ROOT = Path(__file__).resolve().parents[1]
#: Per-rank BLAS/numba/OpenMP threads: one, so that two ranks fit the machine's cores.
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "NUMBA_NUM_THREADS")}
RANKS_TIMEOUT_S = 180


def mpiexec() -> str | None:
    """The mpiexec next to this Python (pip's mpich), else one on PATH; None without mpi4py or mpiexec."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(mpiexec() is None, reason="MPI tests skipped: mpi4py or mpiexec is missing "
                                                         "(pip install '.[mpi]' installs both)")


def run_ranks(ranks: int, *args: str) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python -m tests.distributed_ranks ARGS``, one thread per rank, with a timeout."""
    proc = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-m", "tests.distributed_ranks", *args],
                          cwd=ROOT, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True,
                          timeout=RANKS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def single_process(batch, n, epochs, accumulate):
    mg.manual_seed(0)
    model = models.get_model("lenet5", dtype="float64")
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = data.DataLoader(data.synthetic_mnist(n_train=n, n_test=8, seed=3)[0], batch, shuffle=True, seed=1,
                             normalize=True, dtype="float64")
    history = train.fit(model, loader, opt, epochs=epochs, accumulate=accumulate, progress=False)
    return model.state_dict(), history


@needs_mpi
@pytest.mark.parametrize("accumulate, bucket_bytes", [(1, 0), (2, 4096)])
def test_two_ranks_equal_one_process_with_the_global_batch(tmp_path, accumulate, bucket_bytes):
    # 41 samples, local batch 8: global batches 16, 16, 9 -> the last one split 5 / 4 (unequal local counts).
    batch, n, epochs = 8, 41, 2
    with mg.use_backend("numpy"):
        expected, history = single_process(2 * batch, n, epochs, accumulate)
    run_ranks(2, "equivalence", str(tmp_path), str(batch), str(n), str(epochs), str(accumulate), str(bucket_bytes))
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        facts = json.loads(str(got["facts"]))
        assert facts["samples"] == [8, 8, 5 - rank] * epochs
        assert facts["updates"] == history.updates
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-10, err_msg=f"rank {rank}: {name}")
        # every update all-reduced the whole flat buffer (parameters + the count); other steps reduced nothing
        size = 8 * (sum(v.size for v in expected.values()) + 1)
        reduced = [b for b in facts["allreduce_bytes"] if b]
        assert reduced == [size] * history.updates
        assert all(a <= c for a, c in zip(facts["allreduce_seconds"], facts["compute_seconds"]))


# ------------------------------------------------------------------------------------- without MPI


@pytest.mark.parametrize("n, batch, ranks", [(41, 8, 2), (40, 8, 2), (33, 8, 2), (100, 7, 3), (5, 4, 4), (12, 1, 4),
                                             (9, 16, 2)])
def test_the_sampler_covers_each_epoch_exactly_once_in_the_global_batches(n, batch, ranks):
    samplers = [distributed.DistributedSampler(r, ranks) for r in range(ranks)]
    spans = [s.spans(n, batch) for s in samplers]
    assert len({len(s) for s in spans}) == 1  # every rank takes the same number of steps
    taken = [i for rank in spans for a, b in rank for i in range(a, b)]
    assert sorted(taken) == list(range(n))  # disjoint, and the whole epoch
    for step, (start, stop) in enumerate(samplers[0].global_spans(n, batch)):
        pieces = [rank[step] for rank in spans]
        assert pieces[0][0] == start and pieces[-1][1] == stop
        assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))  # contiguous, in rank order
        sizes = [b - a for a, b in pieces]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_the_sampler_folds_a_last_global_batch_smaller_than_the_ranks_into_the_previous_one():
    # 33 samples, 2 ranks x 8: 16, 16, 1 -> the lone sample joins the second global batch (17 = 9 + 8)
    assert distributed.DistributedSampler(0, 2).global_spans(33, 8) == [(0, 16), (16, 33)]
    assert distributed.DistributedSampler(1, 2).spans(33, 8) == [(8, 16), (25, 33)]


def test_the_sampler_refuses_bad_arguments():
    with pytest.raises(ValueError, match="rank must be an integer in \\[0, 2\\)"):
        distributed.DistributedSampler(2, 2)
    with pytest.raises(ValueError, match="ranks must be a positive integer"):
        distributed.DistributedSampler(0, 0)
    with pytest.raises(ValueError, match="fewer than the 3 ranks"):
        distributed.DistributedSampler(0, 3).spans(2, 8)


def test_a_sharded_loader_yields_its_ranks_piece_of_the_same_permutation():
    train_set, _ = data.synthetic_mnist(n_train=41, n_test=8, seed=3)
    whole = data.DataLoader(train_set, 16, shuffle=True, seed=5)
    parts = [distributed.shard(data.DataLoader(train_set, 8, shuffle=True, seed=5), _Rank(r, 2)) for r in (0, 1)]
    with mg.use_backend("numpy"):
        merged = [np.concatenate([a[1], b[1]]) for a, b in zip(*parts)]
        assert [len(p) for p in parts] == [3, 3] and parts[0].n_samples + parts[1].n_samples == 41
        for got, (_, y) in zip(merged, whole, strict=True):
            np.testing.assert_array_equal(got, y)


class _Rank:
    """A stand-in communicator: rank/size, and collectives that record what they were given."""

    def __init__(self, rank, size, others=None):
        self.rank, self.size, self.others, self.sent = rank, size, others, []

    def allreduce_(self, buf):
        self.sent.append(buf.copy())
        if self.others is not None:  # what the other ranks put in this same collective
            buf += self.others.pop(0)

    def broadcast_(self, buf, root=0):
        self.sent.append(buf.copy())


def _grads_of(model, x, y, scale=None):
    model.zero_grad()
    mg.functional.cross_entropy(model(mg.Tensor(x)), y).backward(scale)


@pytest.mark.parametrize("summed", [False, True])
def test_data_parallel_weights_each_rank_by_its_sample_count(summed):
    # Rank 1's reduce runs first against a recording stand-in; rank 0's then adds what rank 1 sent, which is
    # what a sum all-reduce gives it. 5 and 3 samples: equal weights would be wrong.
    with mg.use_backend("numpy"):
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((8, 1, 28, 28)), rng.integers(0, 10, 8)
        mg.manual_seed(0)
        model = models.get_model("mlp", dtype="float64")
        _grads_of(model, x, y)
        expected = [p.grad.copy() for p in model.parameters()]
        rank1 = _Rank(1, 2)
        _grads_of(model, x[5:], y[5:], 3.0 if summed else None)
        distributed.DataParallel(model, rank1, bucket_bytes=1000).reduce(3, summed)
        rank0 = _Rank(0, 2, others=list(rank1.sent))
        _grads_of(model, x[:5], y[:5], 5.0 if summed else None)
        nbytes = distributed.DataParallel(model, rank0, bucket_bytes=1000).reduce(5, summed)
        assert len(rank0.sent) > 1 and rank0.sent[-1][-1] == 5  # in buckets; the count travels last
        assert nbytes == 8 * (sum(p.data.size for p in model.parameters()) + 1)
        for p, g in zip(model.parameters(), expected):
            np.testing.assert_allclose(p.grad, g, rtol=0, atol=1e-12)


def test_data_parallel_broadcast_copies_the_roots_buffer_into_the_parameters():
    with mg.use_backend("numpy"):
        model = models.get_model("mlp", dtype="float64")

        class _FromRoot(_Rank):
            def broadcast_(self, buf, root=0):
                buf[:] = np.arange(buf.size)

        distributed.DataParallel(model, _FromRoot(1, 2)).broadcast_parameters()
        flat = np.concatenate([p.data.reshape(-1) for p in model.parameters()])
        np.testing.assert_array_equal(flat, np.arange(flat.size))


def test_data_parallel_refuses_bad_arguments():
    with mg.use_backend("numpy"):
        model = models.get_model("mlp")
        with pytest.raises(ValueError, match="bucket_bytes must be a positive integer"):
            distributed.DataParallel(model, _Rank(0, 1), bucket_bytes=0)


class _FakeNccl:
    """cupy.cuda.nccl's names that NCCLCommunicator uses, recording every call."""

    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0
    calls: list

    def get_unique_id(self):
        return (1, 2, 3)

    def NcclCommunicator(self, ndev, uid, rank):  # noqa: N802 (cupy's name)
        self.calls = [("init", ndev, uid, rank)]
        outer = self

        class Comm:
            def allReduce(self, *args):  # noqa: N802
                outer.calls.append(("allReduce", *args))

            def bcast(self, *args):
                outer.calls.append(("bcast", *args))

        return Comm()


class _FakeCupy:
    class cuda:  # noqa: N801
        class _Stream:
            ptr, synced = 99, 0

            def synchronize(self):
                self.synced += 1

        stream = _Stream()

        @classmethod
        def get_current_stream(cls):
            return cls.stream


class _DeviceArray:
    def __init__(self, size, dtype):
        self.size, self.dtype = size, np.dtype(dtype)
        self.data = type("Pointer", (), {"ptr": 1234})()


def test_nccl_communicator_passes_the_buffer_and_gets_the_id_from_rank_0():
    nccl, mpi = _FakeNccl(), _Rank(1, 2)
    mpi.broadcast_object = lambda obj, root=0: (1, 2, 3) if obj is None else pytest.fail("rank 1 made an id")
    comm = distributed.NCCLCommunicator(mpi, nccl, _FakeCupy)
    comm.allreduce_(_DeviceArray(10, "float64"))
    comm.broadcast_(_DeviceArray(4, "float32"), root=0)
    assert nccl.calls == [("init", 2, (1, 2, 3), 1), ("allReduce", 1234, 1234, 10, 8, 0, 99),
                          ("bcast", 1234, 4, 7, 0, 99)]
    assert _FakeCupy.cuda.stream.synced == 2
    with pytest.raises(TypeError, match="float32 or float64; got int32"):
        comm.allreduce_(_DeviceArray(3, "int32"))


def test_nccl_needs_more_than_one_gpu_or_says_why():
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy, or no driver
        count = None
    if count is not None and count > 1:
        pytest.skip(f"{count} GPUs: NCCL would start; the refusal is for fewer")
    with pytest.raises(distributed.MPIUnavailable, match="cupy|more than one GPU"):
        distributed.nccl_communicator(_Rank(0, 1))


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(distributed.MPIUnavailable, match=r"minigrad\[mpi\]"):
        distributed.init()
