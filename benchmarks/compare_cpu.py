"""Training throughput on the CPU, side by side: minigrad-numpy, minigrad-numba and PyTorch (if it imports).

Each reference model (mlp, lenet5, convnet) is trained with SGD (lr 0.01, momentum 0.9) on synthetic
MNIST-shaped float32 data at every batch size, on the same number of threads for every engine. Per engine
and batch size: untimed warm-up steps first (Numba's compile time is measured apart, by
numba_ops.warmup), then the median of a few timed repeats; the engines' workers run in ``--rounds``
interleaved rounds and each point reports its best round (a busy spell of the machine only slows a round
down, and interleaving spreads it over the engines). Printed: samples/s per batch size, the ratios
numba/torch and numba/numpy, the machine's float32 SGEMM peak (a large NumPy matmul, measured in the same
run) and convnet's conv GEMM work at batch >= 32 as a fraction of that peak.

    .venv/bin/python -m benchmarks.compare_cpu                    # full table, a few minutes
    .venv/bin/python -m benchmarks.compare_cpu --models lenet5 --batch-sizes 1,64 --samples 128

Every engine runs in a child process of its own (``--worker ENGINE``), started with the user's
environment, and trains through minigrad's one training loop (``minigrad.loop.TrainLoop``; PyTorch through
``minigrad.torch_peer.ADAPTER``, on a twin of the same minigrad model with the same initial weights): the
time of a repeat is the sum of the loop's ``compute_seconds`` over its steps, the same step time the bench
and the profilers report.

The run checks itself and exits non-zero if a check fails: minigrad-numba's first training step equals
minigrad-numpy's within float32 tolerance, and for every engine and point the loss on a fixed set of 256
training samples is finite after the timed steps and, once at least 1024 samples were trained on, below
what it was before the warm-up (the synthetic labels can be learnt: see synthetic_mnist). The performance target (numba >= torch at every batch size for lenet5 and convnet) is reported,
met or missed, not asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

MODELS = ("mlp", "lenet5", "convnet")
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TARGET_MODELS = ("lenet5", "convnet")
WARMUP_STEPS = 3
EVAL_SAMPLES = 256
LR, MOMENTUM = 0.01, 0.9


def synthetic_mnist(n, seed=0):
    """n images (n, 1, 28, 28) float32: uniform noise in [0, 0.25) plus a bright horizontal stripe whose
    position (rows 4+2k, 5+2k) is the label k. Labelled synthetic data that every model learns within a
    few hundred samples, so that the loss check below means something at every batch size."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32) * 0.25
    y = rng.integers(0, 10, n)
    for k in range(10):
        x[y == k, 0, 4 + 2 * k:6 + 2 * k, :] += 1.0
    return x, y


def batches(x, y, batch_size):
    """Endless cycle of batches over the synthetic set."""
    n = len(x)
    start = 0
    while True:
        idx = np.arange(start, start + batch_size) % n
        start = (start + batch_size) % n
        yield x[idx], y[idx]


def conv_gemm_flops_per_sample(model):
    """Forward + backward (dW and dX) multiply-add work of the model's conv layers, in FLOP per sample."""
    layers = {"lenet5": [(1, 6, 5, 24), (6, 16, 5, 8)], "convnet": [(1, 32, 3, 26), (32, 64, 3, 24)], "mlp": []}
    return sum(3 * 2 * F * C * K * K * OH * OH for C, F, K, OH in layers[model])


# ----------------------------------------------------------------------------------------------------------
# engines: a model, its optimizer and the adapter that lets minigrad's training loop drive it


def make_engine(engine, model_name):
    """(model, optimizer, adapter) of ``engine`` ("minigrad-numpy", "minigrad-numba" or "torch") for one model,
    all from the same seeded minigrad initial weights."""
    import minigrad as mg
    from minigrad.models import get_model

    if engine == "torch":
        from minigrad import torch_peer

        mg.set_backend(torch_peer.PLUMBING_BACKEND)
    else:
        mg.set_backend(engine.split("-")[1])
    mg.manual_seed(0)
    model = get_model(model_name)
    if engine != "torch":
        return model, mg.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM), mg.loop.MINIGRAD

    twin = torch_peer.twin(model)
    return twin, torch_peer.Optimizer(twin, "sgd", LR, MOMENTUM), torch_peer.ADAPTER


def measure(engine, model_name, batch_size, samples, repeats, data):
    """{"rate": samples/s (median of repeats), "loss_start"/"loss_end": loss on a fixed set of EVAL_SAMPLES
    of the training data before the warm-up and after the timed steps, "repeats": [seconds...]}; a repeat's
    seconds are the sum of the loop's step times (compute_seconds) over its steps."""
    from minigrad import loop as mg_loop

    model, opt, adapter = make_engine(engine, model_name)
    held = [(data[0][:EVAL_SAMPLES], data[1][:EVAL_SAMPLES])]
    loss_start = mg_loop.evaluate(model, held, adapter)["loss"]
    stream = batches(*data, batch_size)
    steps = max(3, samples // batch_size)
    trainer = mg_loop.TrainLoop(model, opt, adapter=adapter)
    list(trainer.epoch([next(stream) for _ in range(WARMUP_STEPS)]))
    times = []
    for _ in range(repeats):
        records = list(trainer.epoch([next(stream) for _ in range(steps)]))
        times.append(sum(r.compute_seconds for r in records))
    return {"rate": batch_size * steps / statistics.median(times), "loss_start": loss_start,
            "loss_end": mg_loop.evaluate(model, held, adapter)["loss"], "repeats": times,
            "trained": batch_size * (WARMUP_STEPS + repeats * steps)}


ENGINES = ("minigrad-numpy", "minigrad-numba", "torch")


def worker(args) -> dict:
    """What one child process reports: its engine's results (or the parity check), with its threads."""
    from minigrad.machine import set_threads

    if args.worker == "parity":
        return {"worst": first_step_parity(args.models)}
    if args.worker == "minigrad-numba":
        from minigrad import backend

        backend.load_module("numba")  # loaded first, so that set_threads sets its threads too
    set_threads(args.threads, peer=args.worker == "torch")
    out = {}
    if args.worker == "minigrad-numba":
        from minigrad.kernels import numba_ops, numba_runtime

        out["compile"] = numba_ops.warmup(("float32",))
        out["threads"] = numba_runtime.get_threads()
    if args.worker == "torch":
        import torch

        out["version"] = torch.__version__
    data = synthetic_mnist(max(1024, max(args.batch_sizes)))
    out["results"] = run_engine(args.worker, args, data)
    return out


def spawn(name, args) -> dict | None:
    """Run ``--worker name`` in a child process with the user's environment; its JSON (None: torch missing)."""
    from minigrad.machine import user_environment

    child = subprocess.run([sys.executable, "-m", "benchmarks.compare_cpu", "--worker", name,
                            "--models", ",".join(args.models), "--batch-sizes", ",".join(map(str, args.batch_sizes)),
                            "--samples", str(args.samples), "--repeats", str(args.repeats),
                            "--threads", str(args.threads)],
                           env=user_environment(), stdout=subprocess.PIPE, text=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if child.returncode != 0:
        if name == "torch" and importlib.util.find_spec("torch") is None:
            return None
        raise RuntimeError(f"the {name} worker failed (its stderr is above)")
    return json.loads(child.stdout)


def run_engine(engine, args, data):
    results = {}
    for model_name in args.models:
        results[model_name] = {}
        for batch_size in args.batch_sizes:
            results[model_name][batch_size] = measure(engine, model_name, batch_size, args.samples, args.repeats,
                                                      data)
            print(f"  {engine:15s} {model_name:8s} B={batch_size:<4d} "
                  f"{results[model_name][batch_size]['rate']:9.0f} samples/s", file=sys.stderr, flush=True)
    return results


# ----------------------------------------------------------------------------------------------------------
# the run


def sgemm_gflops(n=2048, repeats=5):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def first_step_parity(models):
    """Check that minigrad-numba's first training step equals minigrad-numpy's: the loss and every updated
    parameter, within float32 tolerance (1e-5 relative to each array's magnitude). Returns the worst
    relative difference seen."""
    import minigrad as mg
    import minigrad.functional as F
    from minigrad.models import get_model

    x, y = synthetic_mnist(8, seed=1)
    worst = 0.0
    for model_name in models:
        state = {}
        for backend_name in ("numpy", "numba"):
            with mg.use_backend(backend_name):
                mg.manual_seed(0)
                model = get_model(model_name)
                opt = mg.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
                loss = F.cross_entropy(model(mg.Tensor(x)), y)
                loss.backward()
                opt.step()
                state[backend_name] = [np.asarray(loss.item())] + [p.numpy().copy() for p in model.parameters()]
        for a, b in zip(state["numpy"], state["numba"]):
            scale = max(1e-3, float(np.abs(a).max()))
            diff = float(np.abs(a - b).max()) / scale
            worst = max(worst, diff)
            if diff > 1e-5:
                raise AssertionError(f"{model_name}: numba's first step differs from numpy's by {diff:.2e} "
                                     "(relative), beyond float32 tolerance")
    return worst



def loss_failures(results: dict) -> list[str]:
    """Points ({engine: {model: {batch: row}}}) whose held-out loss is not finite, or did not fall although
    4 x EVAL_SAMPLES were trained on (LeNet at lr 0.01 sits on its initial plateau for the first ~800 samples
    at batch 1-2)."""
    failures = []
    for engine, per_model in results.items():
        for model_name, per_batch in per_model.items():
            for batch_size, r in per_batch.items():
                judged = r["trained"] >= 4 * EVAL_SAMPLES
                if not math.isfinite(r["loss_end"]) or (judged and r["loss_end"] >= r["loss_start"]):
                    failures.append(f"{engine} {model_name} B={batch_size}: loss {r['loss_start']:.4f} -> "
                                    f"{r['loss_end']:.4f} (must be finite and lower)")
    return failures


def conclude(failures: list[str], checks: str) -> int:
    """The comparison's exit status: 1 with the failed checks on stderr, else 0 after naming what passed."""
    if failures:
        print("\nCHECK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"\n# checks passed: {checks}")
    return 0


def parse_or_serve(parser, argv, models, serve):
    """The comparison's arguments, with ``--models`` checked against ``models``; or, in a worker process
    (``--worker``), None after printing ``serve(args)``'s report as JSON on stdout."""
    args = parser.parse_args(argv)
    for m in args.models:
        if m not in models:
            parser.error(f"--models: unknown model {m!r}; expected some of {list(models)}")
    if args.worker:
        print(json.dumps(serve(args)))
        return None
    return args


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=list(BATCH_SIZES))
    parser.add_argument("--samples", type=int, default=256,
                        help="samples per timed repeat (at least 3 steps each; default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per point; the median is reported")
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of every engine's worker, interleaved; each point reports its best round "
                             "(default 2)")
    parser.add_argument("--worker", choices=ENGINES + ("parity",), help=argparse.SUPPRESS)
    args = parse_or_serve(parser, argv, MODELS, worker)
    if args is None:
        return 0

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads, user_api="blas"):
        peak = sgemm_gflops()
    worst = spawn("parity", args)["worst"]
    results, notes = {}, {}
    for _ in range(args.rounds):  # interleaved: a slow spell of the machine hits one round of each engine
        for engine in ENGINES:
            if notes.get(engine) == "not installed":
                continue
            out = spawn(engine, args)
            if out is None:
                notes[engine] = "not installed"
                continue
            notes.setdefault(engine, out)  # the first round's notes: Numba's compile times are in it
            for m, per_batch in out["results"].items():
                best = results.setdefault(engine, {}).setdefault(m, {})
                for b, r in per_batch.items():
                    if int(b) not in best or r["rate"] > best[int(b)]["rate"]:
                        best[int(b)] = r
    threads = notes["minigrad-numba"]["threads"]
    compile_times = notes["minigrad-numba"]["compile"]
    compile_total = sum(compile_times.values())
    torch_note = (f"torch {notes['torch']['version']}, {args.threads} threads, own process" if "torch" in results
                  else "torch not installed")

    failures = loss_failures(results)

    print(f"# compare_cpu: {args.samples} samples per repeat, median of {args.repeats} repeats, best of "
          f"{args.rounds} interleaved rounds, {WARMUP_STEPS} warm-up steps; threads {threads}; {torch_note}")
    print(f"# float32 SGEMM peak (2048^3 NumPy matmul, {args.threads} BLAS threads; the OpenBLAS the Numba kernels "
          f"call): {peak:.1f} GFLOP/s")
    print(f"# Numba warmup (compile, or load from cache) {compile_total:.2f} s, not counted below; per kernel: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(compile_times.items(), key=lambda kv: -kv[1])[:6])
          + ", ...")
    print(f"# first training step numba vs numpy: max relative difference {worst:.1e} (float32 tolerance 1e-5)")
    has_torch = "torch" in results
    for model_name in args.models:
        print(f"\n## {model_name} (samples/s)")
        header = f"{'batch':>6s}{'numpy':>10s}{'numba':>10s}"
        header += f"{'torch':>10s}{'numba/torch':>13s}" if has_torch else ""
        print(header + f"{'numba/numpy':>13s}")
        for batch_size in args.batch_sizes:
            npy = results["minigrad-numpy"][model_name][batch_size]["rate"]
            nba = results["minigrad-numba"][model_name][batch_size]["rate"]
            row = f"{batch_size:6d}{npy:10.0f}{nba:10.0f}"
            if has_torch:
                trc = results["torch"][model_name][batch_size]["rate"]
                row += f"{trc:10.0f}{nba / trc:12.2f}x"
            print(row + f"{nba / npy:12.2f}x")
    if "convnet" in args.models:
        flops = conv_gemm_flops_per_sample("convnet")
        print(f"\n## convnet conv GEMM work ({flops / 1e6:.1f} MFLOP per sample, fwd+bwd) as a fraction of "
              f"the {peak:.0f} GFLOP/s SGEMM peak")
        print(f"{'batch':>6s}" + "".join(f"{e:>16s}" for e in results))
        for batch_size in [b for b in args.batch_sizes if b >= 32]:
            print(f"{batch_size:6d}" + "".join(
                f"{results[e]['convnet'][batch_size]['rate'] * flops / 1e9 / peak:15.0%} " for e in results))
    if has_torch:
        print("\n## target: minigrad-numba >= 1.0x torch at every batch size (lenet5, convnet)")
        for model_name in [m for m in TARGET_MODELS if m in args.models]:
            ratios = {b: results["minigrad-numba"][model_name][b]["rate"] / results["torch"][model_name][b]["rate"]
                      for b in args.batch_sizes}
            missed = {b: r for b, r in ratios.items() if r < 1.0}
            verdict = "met" if not missed else "missed at " + ", ".join(f"B={b} ({r:.2f}x)" for b, r in missed.items())
            print(f"{model_name}: {verdict}; worst {min(ratios.values()):.2f}x, best {max(ratios.values()):.2f}x")
    return conclude(failures, "first-step parity, every engine's loss finite and decreasing")


if __name__ == "__main__":
    sys.exit(main())
