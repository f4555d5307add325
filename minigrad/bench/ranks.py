"""The bench on R ranks (``--ranks R``): data-parallel training measured against one rank.

Every entry (backend, local batch B) is measured twice:

1. on one rank, in the bench's own process, exactly like a study without ``--ranks`` (the baseline);
2. on R ranks: the bench launches ``mpiexec -n R python -m minigrad.bench.ranks DIR`` (``launch``), each rank
   runs the same measurement code (``measure.measure_train``) through ``minigrad.distributed`` (rank 0's
   weights broadcast, the loader sharded, gradients all-reduced every update) on its share of the sample
   budget, and rank 0 writes the row to ``DIR/reply.pkl``. The bench's process keeps the run directory
   (lock, results.jsonl, resume) as for any entry, so only one process ever writes it.

The row is rank 0's, with the job's figures: ``samples`` and ``samples_per_s`` over every rank,
``steady_samples_per_s`` = R x B / step time, ``global_batch_size`` = R x B, the all-reduce per update
(``allreduce_median_s``, ``allreduce_bytes``, ``allreduce_share`` of the step: step time includes it), the
network the job ran on fitted from ``profiling.allreduce.measure`` (``network_latency_s``,
``network_bandwidth_bytes_per_s``), the baseline (``single_rank_*``) and ``scaling_efficiency`` = samples/s on
R ranks / (R x samples/s on one rank), both steady. ``predictions``: the ring all-reduce model carried to
``PREDICT_RANKS`` ranks on the measured network and on the stated ``profiling.allreduce.NETWORKS``.
Training losses are rank 0's local batches'; test figures are rank 0's evaluation (every rank holds the same
weights).
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np

from minigrad.loop import NonFiniteLoss
from minigrad.machine import user_environment

from .child import ChildFailed
from .engines import TORCH, MinigradEngine
from .settings import Settings, UsageError, format_bytes

#: Rank counts that every entry's predictions are made for.
PREDICT_RANKS = (8, 64)
#: Result columns added by --ranks (results.csv order).
COLUMNS = ("ranks", "global_batch_size", "allreduce_median_s", "allreduce_bytes", "allreduce_share",
           "single_rank_step_median_s", "single_rank_samples_per_s", "scaling_efficiency", "network_latency_s",
           "network_bandwidth_bytes_per_s")
#: How long a failed rank other than 0 waits before aborting the job, so that a failure on rank 0 too gets its
#: reply written first (a rank still waiting in a collective never gets there).
ABORT_GRACE_S = 2.0
_ERRORS = {"NonFiniteLoss": NonFiniteLoss, "MemoryError": MemoryError, "UsageError": UsageError}


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the ``.[mpi]`` extra's MPICH), else one on PATH; None without mpi4py."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("mpi4py") is None:
        return None
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def check(settings: Settings) -> None:
    """UsageError for what ``--ranks`` does not measure, or when MPI is not installed."""
    if settings.ranks == 1:
        return
    refused = [("--mode inference", settings.mode != "train"), ("--batch-sizes auto", settings.batch_sizes == "auto"),
               ("--explain", settings.explain), ("--target-accuracy", settings.target_accuracy is not None),
               ("--eval-every", settings.eval_every is not None), ("--backend torch", TORCH in settings.backends),
               ("--backend cupy", "cupy" in settings.backends)]
    used = [name for name, on in refused if on]
    if used:
        raise UsageError(f"--ranks {settings.ranks} measures data-parallel training throughput on the host backends; "
                         f"it cannot be combined with {', '.join(used)}")
    from minigrad.machine import usable_cores

    if settings.ranks * settings.threads > usable_cores():
        raise UsageError(f"--ranks {settings.ranks} x --threads {settings.threads} is more than the {usable_cores()} "
                         f"cores this process may use; give fewer ranks or threads")
    if mpiexec() is None:
        raise UsageError(f"--ranks {settings.ranks} needs mpi4py and mpiexec: pip install 'minigrad[mpi]'")


def measure_entry(engine, settings: Settings, batch_size: int, train_set, test_set, init_state: dict,
                  progress) -> dict:
    """The entry's row: the R-rank measurement with its one-rank baseline and predictions."""
    from minigrad.profiling import allreduce

    from .measure import measure_train

    single = measure_train(engine, settings, batch_size, train_set, test_set, init_state, progress)
    row = launch(settings, engine.name, batch_size, init_state, progress)
    row.update(single_rank_step_median_s=single["step_median_s"],
               single_rank_samples_per_s=single["steady_samples_per_s"],
               scaling_efficiency=row["steady_samples_per_s"] / (settings.ranks * single["steady_samples_per_s"]))
    networks = list(allreduce.NETWORKS)
    if row["network_latency_s"] is not None:
        networks.insert(0, allreduce.Network(row["network_latency_s"], row["network_bandwidth_bytes_per_s"],
                                             f"measured ({settings.ranks} ranks on this machine)"))
    row["predictions"] = [allreduce.predict(single["step_median_s"], batch_size, row["allreduce_bytes"], r, net)
                          for net in networks for r in PREDICT_RANKS]
    return row


def launch(settings: Settings, name: str, batch_size: int, init_state: dict, progress) -> dict:
    """Measure ``name`` at local ``batch_size`` on ``settings.ranks`` ranks under mpiexec; rank 0's row."""
    with tempfile.TemporaryDirectory(prefix="minigrad-ranks-") as where:
        where = Path(where)
        (where / "request.pkl").write_bytes(pickle.dumps({"settings": settings, "backend": name,
                                                          "batch_size": batch_size, "init_state": init_state,
                                                          "progress": progress}))
        command = [mpiexec(), "-n", str(settings.ranks), sys.executable, "-m", "minigrad.bench.ranks", str(where)]
        # A session of its own (a Ctrl-C reaches the bench only); on the way out mpiexec is asked to end its
        # ranks (it forwards SIGTERM), and the whole group is killed if it does not.
        proc = subprocess.Popen(command, env=user_environment(), start_new_session=True)
        try:
            code = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        if code in (130, -signal.SIGINT):
            raise KeyboardInterrupt
        reply_path = where / "reply.pkl"
        if not reply_path.exists():
            raise ChildFailed(f"mpiexec -n {settings.ranks} for {name} B={batch_size} exited with code {code} and no "
                              "reply (the ranks' output is above)")
        reply = pickle.loads(reply_path.read_bytes())
    if "error" in reply:
        kind, message = reply["error"]
        raise _ERRORS.get(kind, ChildFailed)(message)
    return reply["result"]


class RankEngine(MinigradEngine):
    """A minigrad backend on one rank of a data-parallel job: training through ``minigrad.distributed.fit``,
    evaluation on rank 0 only. ``history``: the last fit's (the timed run is the last one measure_train makes)."""

    def __init__(self, name: str, comm):
        super().__init__(name)
        self.comm, self.history = comm, None

    def fit(self, model, loader, optimizer, **kwargs):
        from minigrad import distributed

        self.history = distributed.fit(model, loader, optimizer, self.comm, **kwargs)
        return self.history

    def evaluate(self, model, loader) -> dict:
        if self.comm.rank == 0:
            return super().evaluate(model, loader)
        return {"loss": math.nan, "accuracy": math.nan, "samples": 0}


def _serve(comm, request: dict) -> dict | None:
    """Every rank: measure; rank 0 returns the job's row, the others None."""
    from minigrad import backend
    from minigrad.machine import set_threads
    from minigrad.profiling import allreduce

    from .measure import measure_train
    from .settings import load_data

    settings, name, batch_size = request["settings"], request["backend"], request["batch_size"]
    if name == "numba":
        backend.load_module("numba")  # before its threads are set
    set_threads(settings.threads)
    train_set, test_set = load_data(settings)
    engine = RankEngine(name, comm)
    share = settings if settings.samples is None else replace(settings, samples=math.ceil(settings.samples / comm.size))
    row = measure_train(engine, share, batch_size, train_set, test_set, request["init_state"],
                        request["progress"] if comm.rank == 0 else False)
    total = np.array([float(row["samples"])])
    comm.allreduce_(total)
    try:
        network = allreduce.fit(comm.size, *zip(*[(m["bytes"], m["seconds"]) for m in allreduce.measure(comm)]))
    except ValueError:
        network = None
    if comm.rank != 0:
        return None
    steps = [s for s in engine.history.steps if s.allreduce_bytes]
    samples = int(total[0])
    row.update(ranks=comm.size, global_batch_size=comm.size * batch_size, samples=samples,
               samples_per_s=samples / row["train_seconds"],
               steady_samples_per_s=comm.size * batch_size / row["step_median_s"],
               allreduce_median_s=float(np.median([s.allreduce_seconds for s in steps])),
               allreduce_bytes=steps[0].allreduce_bytes,
               allreduce_share=float(np.median([s.allreduce_seconds / s.compute_seconds for s in steps])),
               network_latency_s=network.latency_s if network else None,
               network_bandwidth_bytes_per_s=network.bandwidth_bytes_per_s if network else None)
    if not row["epoch_measured"]:
        row["epoch_seconds"] = len(train_set) / row["samples_per_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    """One rank of ``launch``'s job (``python -m minigrad.bench.ranks DIR`` under mpiexec)."""
    from minigrad import distributed

    where = Path((sys.argv[1:] if argv is None else argv)[0])
    comm = distributed.init()
    try:
        reply = {"result": _serve(comm, pickle.loads((where / "request.pkl").read_bytes()))}
    except KeyboardInterrupt:
        return 130
    except (NonFiniteLoss, UsageError) as exc:
        reply = {"error": (type(exc).__name__, str(exc))}
    except MemoryError as exc:
        reply = {"error": ("MemoryError", f"{type(exc).__name__}: {exc}")}
    except Exception as exc:
        reply = {"error": ("ChildFailed", f"rank {comm.rank}: " + "".join(traceback.format_exception(exc)))}
    if comm.rank == 0:
        (where / "reply.tmp").write_bytes(pickle.dumps(reply))
        (where / "reply.tmp").rename(where / "reply.pkl")
    if "error" in reply and comm.size > 1:  # the other ranks may be waiting in a collective: end the job
        print(f"rank {comm.rank}: {reply['error'][1]}", file=sys.stderr, flush=True)
        if comm.rank:
            time.sleep(ABORT_GRACE_S)
        comm.abort(1)
    return 0


def findings_lines(rows: list[dict]) -> list[str]:
    """The --ranks findings (report.md and the terminal): measured scaling per entry, then the predictions."""
    lines = []
    for r in rows:
        if r.get("status") != "ok" or r.get("ranks") is None:
            continue
        head = f"{r['backend']} B={r['batch_size']} x {r['ranks']} ranks (global batch {r['global_batch_size']})"
        lines.append(f"{head}: {r['steady_samples_per_s']:,.0f} samples/s against "
                     f"{r['single_rank_samples_per_s']:,.0f} on one rank, scaling efficiency "
                     f"{r['scaling_efficiency']:.0%}; the all-reduce of {format_bytes(r['allreduce_bytes'])} takes "
                     f"{1e3 * r['allreduce_median_s']:.2f} ms, {r['allreduce_share']:.0%} of the step (waiting for "
                     f"the slower rank included).")
        by_network: dict[str, list[dict]] = {}
        for p in r.get("predictions", []):
            by_network.setdefault(p["network"], []).append(p)
        for network, predictions in by_network.items():
            lines.append(f"{head}, predicted on {network}: " + "; ".join(
                f"{p['ranks']} ranks {p['samples_per_s']:,.0f} samples/s, efficiency {p['scaling_efficiency']:.0%} "
                f"(all-reduce {1e3 * p['allreduce_s']:.2f} ms, {p['allreduce_share']:.0%} of the step)"
                for p in predictions) + ".")
    return lines


if __name__ == "__main__":
    sys.exit(main())
