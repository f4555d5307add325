"""Training throughput on a GPU, side by side: minigrad's cupy backend and PyTorch CUDA eager.

Five engines: ``minigrad-cupy`` (the training loop as it runs by default: its step replayed from a CUDA graph,
``minigrad.graphs``, IEEE float32 arithmetic), ``minigrad-cupy-tf32`` (the same with its convolutions' GEMMs
allowed TF32, ``cupy_ops.ALLOW_TF32``), ``minigrad-cupy-eager`` (the default step launched kernel by kernel,
``capture=False``), ``torch-cuda`` (PyTorch's defaults, under which cuDNN may run convolutions in TF32 and
matmuls stay fp32) and ``torch-cuda-fp32`` (TF32 off for convolutions and matmuls). The like-for-like pairs
are minigrad-cupy / torch-cuda-fp32 (IEEE fp32 on both sides) and minigrad-cupy-tf32 / torch-cuda (TF32
convolutions on both sides); minigrad-cupy / torch-cuda is reported too.
lenet5 and convnet are trained with SGD (lr 0.01, momentum 0.9) in float32 on synthetic MNIST-shaped data
(``compare_cpu.synthetic_mnist``) staged on the device once, so a step is the training work alone: each
batch is a slice of device memory for every engine (minigrad's replayed step copies it into the graph's
input arrays, inside the timed step). Per engine, model and batch size: untimed warm-up steps
first (NVRTC compilation, cuBLAS/cuDNN handles and the memory pools), then the median of a few timed
repeats. A repeat's time is the sum of minigrad's training loop's ``compute_seconds`` over its steps
(``minigrad.loop.TrainLoop``, driving torch through an adapter): forward, loss fetched to the host and
checked, backward and update, synchronised, for both engines alike.

    python -m benchmarks.compare_gpu                                 # the table of the target, a few minutes
    python -m benchmarks.compare_gpu --models lenet5 --batch-sizes 1,64 --json out.json

Each engine runs in a child process of its own (``--worker ENGINE``), so neither sees the other's memory
pool, streams or libraries. Without a usable GPU (no cupy, no CUDA device) it prints one line saying what is
missing and exits 0. The run checks itself and exits 1 when a check fails: for every engine and point the
loss on a fixed set of 256 training samples is finite after the timed steps and, once 1024 samples were
trained on, below what it was before the warm-up. The target (cupy >= 1.0x torch at every batch size) is
reported for each pair, met or missed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks.compare_cpu import (EVAL_SAMPLES, LR, MOMENTUM, WARMUP_STEPS, conclude, loss_failures,
                                     parse_or_serve, synthetic_mnist)

MODELS = ("lenet5", "convnet")
BATCH_SIZES = (1, 16, 64, 256, 1024, 4096)
ENGINES = ("minigrad-cupy", "minigrad-cupy-tf32", "minigrad-cupy-eager", "torch-cuda", "torch-cuda-fp32")
#: (minigrad engine, PyTorch engine) pairs the target is judged on
PAIRS = (("minigrad-cupy", "torch-cuda-fp32"), ("minigrad-cupy-tf32", "torch-cuda"), ("minigrad-cupy", "torch-cuda"))
DATA_SAMPLES = 8192  # staged on the device once; batches are contiguous slices of it
MIN_STEPS, MAX_STEPS = 10, 200


def steps_per_repeat(batch_size: int, samples: int) -> int:
    """Timed steps in one repeat: ``samples`` worth, at least MIN_STEPS (big batches still time several
    steps) and at most MAX_STEPS (batch 1 does not spend the run on launch-bound steps)."""
    return max(MIN_STEPS, min(MAX_STEPS, samples // batch_size))


def gpu_unavailable() -> str | None:
    """Why this machine cannot run the comparison (the cupy backend's own reason), or None."""
    from minigrad.kernels import _host, cupy_ops

    try:
        cupy_ops.check_available()
    except _host.BackendUnavailable as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------------------------------------
# engines (each in its own child process)


def _torch_cuda_adapter():
    """torch_peer's adapter for batches that are already CUDA tensors, synchronising the device."""
    import torch

    from minigrad import torch_peer

    class CudaAdapter(torch_peer.TorchAdapter):
        name = "torch-cuda"

        def forward(self, model, x):
            return model(x)

        def loss(self, logits, y):
            return torch.nn.functional.cross_entropy(logits, y)

        def correct(self, logits, y) -> int:
            return int((logits.argmax(dim=1) == y).sum().item())

        def synchronize(self) -> None:
            torch.cuda.synchronize()

    return CudaAdapter()


def make_engine(engine: str, model_name: str, x, y):
    """(model, optimizer, adapter, x and y on the device) for ``engine``, from the same seeded minigrad
    initial weights for both engines."""
    import minigrad as mg
    from minigrad.models import get_model

    if engine.startswith("minigrad-cupy"):
        mg.set_backend("cupy")
        mg.manual_seed(0)
        model = get_model(model_name)
        k = mg.backend.k
        return (model, mg.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM), mg.loop.MINIGRAD,
                k.asarray(x), k.asarray(y))
    import torch

    from minigrad import torch_peer

    mg.set_backend(torch_peer.PLUMBING_BACKEND)
    mg.manual_seed(0)
    twin = torch_peer.twin(get_model(model_name)).to("cuda")
    return (twin, torch_peer.Optimizer(twin, "sgd", LR, MOMENTUM), _torch_cuda_adapter(),
            torch.from_numpy(x).to("cuda"), torch.from_numpy(y).to("cuda"))


def measure(engine: str, model_name: str, batch_size: int, samples: int, repeats: int) -> dict:
    """{"rate": samples/s (median of repeats), "loss_start"/"loss_end" on a fixed set of EVAL_SAMPLES,
    "repeats": [seconds...], "trained": samples trained on}."""
    from minigrad import loop as mg_loop

    x, y = synthetic_mnist(max(DATA_SAMPLES, batch_size))
    model, opt, adapter, dx, dy = make_engine(engine, model_name, x, y)
    held = [(dx[:EVAL_SAMPLES], dy[:EVAL_SAMPLES])]
    loss_start = mg_loop.evaluate(model, held, adapter)["loss"]
    starts = iter(range(0, 10**9, batch_size))

    def batches(n):
        return [(dx[s:s + batch_size], dy[s:s + batch_size])
                for s in (next(starts) % (len(x) - batch_size + 1) for _ in range(n))]

    trainer = mg_loop.TrainLoop(model, opt, adapter=adapter, capture=engine != "minigrad-cupy-eager")
    list(trainer.epoch(batches(WARMUP_STEPS)))
    steps = steps_per_repeat(batch_size, samples)
    records = [list(trainer.epoch(batches(steps))) for _ in range(repeats)]
    times = [sum(r.compute_seconds for r in rs) for rs in records]
    return {"rate": batch_size * steps / statistics.median(times), "loss_start": loss_start,
            "loss_end": mg_loop.evaluate(model, held, adapter)["loss"], "repeats": times,
            "trained": batch_size * (WARMUP_STEPS + repeats * steps),
            "captured_steps": sum(r.captured for rs in records for r in rs), "timed_steps": repeats * steps}


def worker(args) -> dict:
    """What one child process reports: its engine's results per model and batch size, and its versions."""
    if args.worker.startswith("torch-cuda"):
        import torch

        if not torch.cuda.is_available():
            return {"unavailable": f"torch {torch.__version__} sees no CUDA device"}
        if args.worker == "torch-cuda-fp32":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        info = {"version": f"torch {torch.__version__} (CUDA {torch.version.cuda})",
                "device": torch.cuda.get_device_name(0),
                "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}}
    else:
        import cupy

        from minigrad.kernels import cupy_ops

        cupy_ops.ALLOW_TF32 = args.worker == "minigrad-cupy-tf32"
        info = {"version": f"cupy {cupy.__version__}",
                "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
                "tf32": {"conv": cupy_ops.ALLOW_TF32, "matmul": False}}
    results = {}
    for model_name in args.models:
        results[model_name] = {}
        for batch_size in args.batch_sizes:
            r = measure(args.worker, model_name, batch_size, args.samples, args.repeats)
            results[model_name][batch_size] = r
            print(f"  {args.worker:14s} {model_name:8s} B={batch_size:<5d} {r['rate']:11.0f} samples/s",
                  file=sys.stderr, flush=True)
    return {**info, "results": results}


def spawn(name: str, args) -> dict:
    """Run ``--worker name`` in a child process with the user's environment; its JSON report."""
    from minigrad.machine import user_environment

    child = subprocess.run([sys.executable, "-m", "benchmarks.compare_gpu", "--worker", name,
                            "--models", ",".join(args.models), "--batch-sizes", ",".join(map(str, args.batch_sizes)),
                            "--samples", str(args.samples), "--repeats", str(args.repeats)],
                           env=user_environment(), stdout=subprocess.PIPE, text=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if child.returncode != 0:
        raise RuntimeError(f"the {name} worker failed (its stderr is above)")
    return json.loads(child.stdout)


# ----------------------------------------------------------------------------------------------------------
# the report


def report(results: dict, models, batch_sizes) -> list[str]:
    """The table (samples/s of each engine, the ratio of each pair and the share of minigrad's default timed
    steps replayed from a graph) and the target's verdict per model and pair."""
    short = {"minigrad-cupy": "cupy", "minigrad-cupy-tf32": "cupy-tf32", "minigrad-cupy-eager": "cupy-eager",
             "torch-cuda": "torch", "torch-cuda-fp32": "torch-fp32"}
    pair_names = [f"{short[m]}/{short[t]}" for m, t in PAIRS]
    lines = []
    for model_name in models:
        lines += [f"## {model_name} (training samples/s, fp32 tensors)",
                  f"{'batch':>6s}" + "".join(f"{short[e]:>12s}" for e in ENGINES)
                  + "".join(f"{p:>17s}" for p in pair_names) + f"{'graphs':>8s}"]
        for b in batch_sizes:
            rows = {e: results[e][model_name][b] for e in ENGINES}
            rate = {e: r["rate"] for e, r in rows.items()}
            mine = rows["minigrad-cupy"]
            lines.append(f"{b:6d}" + "".join(f"{rate[e]:12.0f}" for e in ENGINES)
                         + "".join(f"{rate[m] / rate[t]:16.2f}x" for m, t in PAIRS)
                         + f"{mine['captured_steps'] / mine['timed_steps']:8.0%}")
        lines.append("")
    lines.append("## target: minigrad cupy >= 1.0x PyTorch CUDA eager at every batch size")
    for model_name in models:
        for mine, peer in PAIRS:
            ratios = {b: results[mine][model_name][b]["rate"] / results[peer][model_name][b]["rate"]
                      for b in batch_sizes}
            missed = {b: r for b, r in ratios.items() if r < 1.0}
            verdict = ("met" if not missed
                       else "missed at " + ", ".join(f"B={b} ({r:.2f}x)" for b, r in missed.items()))
            lines.append(f"{model_name} {mine} vs {peer}: {verdict}; worst {min(ratios.values()):.2f}x, best "
                         f"{max(ratios.values()):.2f}x")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=list(BATCH_SIZES))
    parser.add_argument("--samples", type=int, default=8192,
                        help=f"samples per timed repeat ({MIN_STEPS} to {MAX_STEPS} steps; default 8192)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per point; the median is reported")
    parser.add_argument("--json", help="also write every measurement to this file")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parse_or_serve(parser, argv, MODELS, worker)
    if args is None:
        return 0
    reason = gpu_unavailable()
    if reason is not None:
        print(f"compare_gpu: skipped, no GPU to measure on ({reason})")
        return 0

    notes = {engine: spawn(engine, args) for engine in ENGINES}
    if "unavailable" in notes["torch-cuda"]:
        print(f"compare_gpu: skipped, no PyTorch CUDA to compare with ({notes['torch-cuda']['unavailable']})")
        return 0
    results = {e: {m: {int(b): r for b, r in per_batch.items()} for m, per_batch in notes[e]["results"].items()}
               for e in ENGINES}
    tf32 = {e: notes[e]["tf32"] for e in ENGINES}
    print(f"# compare_gpu on {notes['minigrad-cupy']['device']}: {notes['minigrad-cupy']['version']}, "
          f"{notes['torch-cuda']['version']}; median of {args.repeats} repeats of up to {args.samples} samples "
          f"({MIN_STEPS}-{MAX_STEPS} steps), {WARMUP_STEPS} warm-up steps, each engine in its own process; "
          f"TF32 allowed: {tf32}\n")
    print("\n".join(report(results, args.models, args.batch_sizes)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "engines": notes}, f, indent=1)
    return conclude(loss_failures(results), "every engine's loss finite and decreasing")


if __name__ == "__main__":
    sys.exit(main())
