"""Data-parallel SGD over MPI: every rank trains a copy of the model on its own shard of each global batch.

One step on R ranks equals one step of a single process on the concatenated global batch:

1. ``DataParallel.broadcast_parameters`` makes every rank start from rank 0's weights.
2. ``DistributedSampler`` cuts each epoch's permutation (the same on every rank: same seed) into global
   batches of R x B samples and gives rank r the r-th of R near-equal contiguous pieces of each, so the
   ranks' t-th batches together are exactly the single process's t-th batch of R x B.
3. After backward, ``DataParallel.reduce`` (the hook ``minigrad.loop.TrainLoop`` calls between backward and
   the optimizer update) packs every gradient into one flat contiguous buffer, weighted by the rank's local
   sample count (minigrad's loss is the mean over the local batch, and a partial last batch makes local
   counts unequal), with the count itself in the buffer's last element; one sum all-reduce (optionally in
   buckets of ``bucket_bytes``) then gives the global sum and the global count, and dividing one by the
   other leaves the global mean in every rank's gradients. The optimizer then takes the same step everywhere.
4. Evaluation, progress and logging run on rank 0 (``fit``); the other ranks train silently.

Communicators: ``MPICommunicator`` (mpi4py, host arrays; ``init()``), ``NCCLCommunicator`` (cupy.cuda.nccl,
device arrays, one GPU per rank; ``nccl_communicator``). Anything with ``rank``, ``size``, ``allreduce_(buf)``
and ``broadcast_(buf, root)`` serves, which is how the tests drive the logic without MPI or a GPU.

Limits: the all-reduce is not overlapped with the backward pass (buckets are reduced one after another once
backward has finished); batch-norm running statistics stay per rank (rank 0's are the ones evaluated); a
rank that raises (e.g. a NaN loss seen on that rank only) leaves the others waiting in the next collective,
so a launcher must abort the job (``mpiexec`` does when a rank exits with an error after ``MPI.Abort``).
"""

from __future__ import annotations

import os

import numpy as np

from . import backend
from . import train as _train

#: Environment variables that an MPI launcher (MPICH/hydra, Open MPI, PMIx) sets in every rank it starts.
LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
INSTALL_HINT = "pip install 'minigrad[mpi]' (mpi4py with MPICH's mpiexec, from PyPI)"


class MPIUnavailable(RuntimeError):
    """mpi4py (or, for NCCL, cupy and more than one GPU) is not there; the message says what to install."""


def under_launcher() -> bool:
    """True in a process started by ``mpiexec`` (or another MPI launcher)."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise MPIUnavailable(f"minigrad.distributed needs mpi4py and an MPI library ({exc}); {INSTALL_HINT}") \
            from None
    return MPI


class MPICommunicator:
    """The MPI world (or ``comm``) through mpi4py; collectives in place on contiguous host arrays."""

    def __init__(self, comm=None):
        self.MPI = _mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def allreduce_(self, buf: np.ndarray) -> None:
        """``buf`` becomes the element-wise sum of every rank's ``buf``."""
        self.comm.Allreduce(self.MPI.IN_PLACE, _host(buf, "allreduce_"), op=self.MPI.SUM)

    def broadcast_(self, buf: np.ndarray, root: int = 0) -> None:
        """``buf`` becomes rank ``root``'s ``buf`` on every rank."""
        self.comm.Bcast(_host(buf, "broadcast_"), root=root)

    def broadcast_object(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """End every rank of the job (a rank that failed must not leave the others waiting in a collective)."""
        self.comm.Abort(code)


def _host(buf, what: str) -> np.ndarray:
    if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous:
        raise TypeError(f"MPICommunicator.{what}: buf must be a C-contiguous numpy array (device arrays go "
                        f"through NCCLCommunicator); got {type(buf).__name__}")
    return buf


def init() -> MPICommunicator:
    """The communicator of the MPI job this process belongs to (a job of one when not started by mpiexec).
    Raises MPIUnavailable naming the ``.[mpi]`` extra when mpi4py is missing."""
    return MPICommunicator()


class NCCLCommunicator:
    """Collectives on CuPy device arrays through NCCL, one GPU per rank; MPI only hands out NCCL's unique id.

    ``nccl`` and ``cupy`` are the modules (``cupy.cuda.nccl`` and ``cupy``), passed in so that the call
    sequence is testable without a GPU.
    """

    def __init__(self, mpi: MPICommunicator, nccl, cupy):
        self.rank, self.size, self.nccl, self.cupy = mpi.rank, mpi.size, nccl, cupy
        uid = mpi.broadcast_object(nccl.get_unique_id() if mpi.rank == 0 else None)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def _type(self, buf):
        dtype = np.dtype(buf.dtype)
        if dtype not in self._types:
            raise TypeError(f"NCCLCommunicator: buf must be float32 or float64; got {dtype}")
        return self._types[dtype]

    def allreduce_(self, buf) -> None:
        stream = self.cupy.cuda.get_current_stream()
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._type(buf), self.nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()

    def broadcast_(self, buf, root: int = 0) -> None:
        stream = self.cupy.cuda.get_current_stream()
        self.comm.bcast(buf.data.ptr, buf.size, self._type(buf), root, stream.ptr)
        stream.synchronize()


def nccl_communicator(mpi: MPICommunicator) -> NCCLCommunicator:
    """NCCL for the cupy backend: rank r uses GPU r mod (GPUs on its node). Raises MPIUnavailable, saying why,
    where cupy or NCCL is missing or fewer than two GPUs are present (data parallelism on one GPU would only
    time-share it)."""
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as exc:
        raise MPIUnavailable(f"NCCL data parallelism needs cupy with NCCL ({exc}); pip install 'minigrad[gpu]'") \
            from None
    count = cupy.cuda.runtime.getDeviceCount()
    if count < 2:
        raise MPIUnavailable(f"NCCL data parallelism needs more than one GPU; this machine has {count} (run the "
                             f"host backends over MPI instead)")
    cupy.cuda.Device(int(os.environ.get("MPI_LOCALRANKID", mpi.rank)) % count).use()
    return NCCLCommunicator(mpi, nccl, cupy)


class DistributedSampler:
    """Rank ``rank`` of ``ranks``: its disjoint shard of every epoch, one span of the epoch's order per step.

    The order is cut into global batches of ``ranks x batch_size``; each is split into ``ranks`` contiguous
    pieces whose sizes differ by at most one (the first ``m mod ranks`` ranks of a last global batch of ``m``
    samples get one more), and rank r takes piece r. Every rank thus takes the same number of steps and the
    ranks' pieces of a step are exactly that step's global batch. The remainder rule: a last global batch of
    fewer samples than ranks (which would leave a rank with nothing to train on) joins the previous one, so
    the epoch is still covered exactly once.
    """

    def __init__(self, rank: int, ranks: int):
        if isinstance(ranks, bool) or not isinstance(ranks, (int, np.integer)) or ranks < 1:
            raise ValueError(f"DistributedSampler: ranks must be a positive integer; got {ranks!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < ranks:
            raise ValueError(f"DistributedSampler: rank must be an integer in [0, {ranks}); got {rank!r}")
        self.rank, self.ranks = int(rank), int(ranks)

    def global_spans(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        """The epoch's global batches as (start, stop) into its order."""
        if n < self.ranks:
            raise ValueError(f"DistributedSampler: the dataset has {n} samples, fewer than the {self.ranks} ranks; "
                             f"use fewer ranks or more data")
        size = self.ranks * batch_size
        spans = [(s, min(s + size, n)) for s in range(0, n, size)]
        if len(spans) > 1 and spans[-1][1] - spans[-1][0] < self.ranks:
            spans[-2:] = [(spans[-2][0], n)]
        return spans

    def spans(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        """This rank's piece of every global batch (the DataLoader's ``sampler`` protocol)."""
        out = []
        for start, stop in self.global_spans(n, batch_size):
            q, r = divmod(stop - start, self.ranks)
            first = start + self.rank * q + min(self.rank, r)
            out.append((first, first + q + (self.rank < r)))
        return out


def shard(loader, comm):
    """A DataLoader like ``loader`` (same data, local batch size, shuffle, seed, dtype) that yields only this
    rank's shard (``DistributedSampler``). Every rank must give the same seed (or seed minigrad alike)."""
    from .data import DataLoader

    return DataLoader(loader.dataset, loader.batch_size, shuffle=loader.shuffle, seed=loader.seed,
                      normalize=loader.normalize, dtype=loader.dtype,
                      sampler=DistributedSampler(comm.rank, comm.size))


class DataParallel:
    """The gradient all-reduce of ``model``'s parameters over ``comm``, through one flat contiguous buffer.

    bucket_bytes: reduce the buffer in pieces of at most this many bytes, one collective each (None: one
        collective for the whole buffer). The pieces are reduced after backward, not overlapped with it.
    ``bytes_per_reduce`` is the payload of one reduce (the buffer, including the count).
    """

    def __init__(self, model, comm, bucket_bytes: int | None = None):
        params = model.parameters()
        if not params:
            raise ValueError("DataParallel: the model has no parameters to reduce")
        dtypes = {np.dtype(p.data.dtype) for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"DataParallel: parameters must share one dtype; got {sorted(map(str, dtypes))}")
        if bucket_bytes is not None and (isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int)
                                         or bucket_bytes < 1):
            raise ValueError(f"DataParallel: bucket_bytes must be a positive integer or None; got {bucket_bytes!r}")
        self.model, self.comm, self.params = model, comm, params
        self.total = sum(int(p.data.size) for p in params)
        self.buffer = backend.k.zeros((self.total + 1,), dtypes.pop())  # gradients, then the sample count
        offsets = np.cumsum([0] + [int(p.data.size) for p in params])
        self.slices = [(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        per = self.buffer.size if bucket_bytes is None else max(1, bucket_bytes // self.buffer.itemsize)
        self.buckets = [(a, min(a + per, self.buffer.size)) for a in range(0, self.buffer.size, per)]
        self.bytes_per_reduce = int(self.buffer.nbytes)

    def broadcast_parameters(self, root: int = 0) -> None:
        """Every rank's parameters become rank ``root``'s (through the same flat buffer)."""
        flat = self.buffer[:self.total]
        for p, (a, b) in zip(self.params, self.slices):
            flat[a:b] = p.data.reshape(-1)
        self.comm.broadcast_(flat, root)
        for p, (a, b) in zip(self.params, self.slices):
            p.data[...] = flat[a:b].reshape(p.data.shape)

    def reduce(self, samples: int, summed: bool) -> int:
        """The loop's hook: this rank's gradients (the mean over its ``samples``, or their sum when ``summed``)
        become the mean over every rank's samples; returns the bytes reduced."""
        buf, flat = self.buffer, self.buffer[:self.total]
        for p, (a, b) in zip(self.params, self.slices):
            if p.grad is None:
                flat[a:b] = 0
            else:
                flat[a:b] = p.grad.reshape(-1)
        if not summed:
            flat *= buf.dtype.type(samples)
        buf[self.total] = samples
        for a, b in self.buckets:
            self.comm.allreduce_(buf[a:b])
        flat *= buf.dtype.type(1.0 / float(buf[self.total]))
        # Views into the buffer: the optimizer reads them before zero_grad drops them and the next reduce refills it.
        for p, (a, b) in zip(self.params, self.slices):
            p.grad = flat[a:b].reshape(p.data.shape)
        return self.bytes_per_reduce


def fit(model, loader, optimizer, comm, *, eval_loader=None, progress=None, bucket_bytes: int | None = None,
        **kwargs) -> _train.History:
    """``minigrad.train.fit`` on ``comm.size`` ranks: rank 0's weights broadcast, ``loader`` sharded
    (``shard``), gradients all-reduced every update; ``eval_loader`` and the progress bar on rank 0 only
    (the other ranks' History has no test figures). Every rank must call it with the same arguments."""
    parallel = DataParallel(model, comm, bucket_bytes)
    parallel.broadcast_parameters()
    rank0 = comm.rank == 0
    return _train.fit(model, shard(loader, comm), optimizer, eval_loader=eval_loader if rank0 else None,
                      progress=progress if rank0 else False, reduce=parallel.reduce, **kwargs)
