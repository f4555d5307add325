"""``python -m minigrad.profile``: measure and explain where training time goes, and why it plateaus.

Subcommands:
  explain    everything below, into explain.md / explain.json / PNGs in --out (the default subcommand)
  ceilings   this machine's GEMM GFLOP/s, stream bandwidth and caches (cached; --remeasure)
  trace      per-kernel table for a few steps at each batch size (+ trace.json for Perfetto)
  cprofile   causes per sample across batch sizes (+ .prof files for snakeviz)
  lines      line_profiler of the hot kernels at the smallest and largest batch size (.lprof + .txt)
  ladder     the vectorization ladder (per-sample loop, NumPy, Numba, CuPy)
  noise      the gradient noise scale B_simple during training
  predict    epoch time from first principles: every kernel call priced by this machine's calibration
             (measured once per machine and cached; --recalibrate), with --measure the errors against the
             same batch sizes run, and per kernel against the tracer at --kernels-at
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _batch_sizes(text: str) -> list[int]:
    from minigrad import batch_sizes

    try:
        return list(batch_sizes.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer; got {text!r}")
        return value
    return parse


def default_threads() -> int:
    """One thread on a machine with 2 cores or fewer (a second BLAS thread contends with everything else
    there and made NumPy steps up to 10x slower under load), else every core this process may use."""
    from minigrad.machine import usable_cores

    cores = usable_cores()
    return 1 if cores <= 2 else cores


def build_parser() -> argparse.ArgumentParser:
    from minigrad import backend, data, models
    from minigrad.batch_sizes import DEFAULT_BATCH_SIZES

    p = argparse.ArgumentParser(prog="python -m minigrad.profile", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("command", nargs="?", default="explain",
                   choices=("explain", "ceilings", "trace", "cprofile", "lines", "ladder", "noise", "predict"))
    p.add_argument("--model", choices=sorted(models.MODELS), default="lenet5", help="reference model")
    p.add_argument("--backend", choices=backend.registered_backends(), default=None,
                   help="kernel backend (default: the fastest available)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=list(DEFAULT_BATCH_SIZES),
                   help="comma-separated batch sizes")
    p.add_argument("--dataset", choices=data.DATASETS, default="mnist",
                   help="data to train on (synthetic: timing only)")
    p.add_argument("--data-dir", default=None, help="dataset cache / IDX directory")
    p.add_argument("--out", default=None, help="output directory (default runs/<time>-profile-<model>-<backend>)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per batch size (trace, lines: default 5), or noise-scale steps (noise: default the "
                        "estimator's minimum, 100)")
    p.add_argument("--allow-few-steps", action="store_true",
                   help="noise: accept fewer steps than the minimum (the estimate is then marked unreliable)")
    p.add_argument("--quick", action="store_true", help="small budgets: a rough answer in about a minute")
    p.add_argument("--threads", type=_positive("--threads"), default=None,
                   help=f"threads for BLAS and numba (default {default_threads()}: one on a machine with 2 cores "
                        "or fewer, where a second thread contends with everything else; else every core)")
    p.add_argument("--repeats", type=_positive("--repeats"), default=None,
                   help="explain: repeat the step sweep this often, interleaved (default 3; 1 with --quick)")
    p.add_argument("--fall", type=float, default=None,
                   help="explain: epoch time that falls less than this per doubling has stopped falling "
                        "(default 0.05)")
    p.add_argument("--from-times", default=None, metavar="B:S,...",
                   help="explain epoch times measured elsewhere, e.g. 1:1200,4:940,8:890,16:850 (seconds for "
                        "--epochs epochs); runs nothing")
    p.add_argument("--epochs", type=_positive("--epochs"), default=1, help="--from-times: epochs the times cover")
    p.add_argument("--n-samples", type=_positive("--n-samples"), default=60000,
                   help="--from-times, predict: samples per epoch (default 60000, MNIST's training set; "
                        "predict --measure uses the dataset's)")
    p.add_argument("--remeasure", action="store_true", help="ceilings: measure again instead of using the cache")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="predict: the models' dtype")
    p.add_argument("--measure", action="store_true",
                   help="predict: also run every batch size (and trace --kernels-at) and print the errors")
    p.add_argument("--kernels-at", type=_batch_sizes, default=None, metavar="B,...",
                   help="predict: list every kernel call at these batch sizes, predicted (and measured) with the others "
                        "(default: the smallest and largest)")
    p.add_argument("--recalibrate", action="store_true", help="predict: measure the calibration again")
    p.add_argument("--rounds", type=int, default=2,
                   help="predict --measure: rounds through the batch sizes, alternating in order; each size keeps "
                        "its fastest round (default 2)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from minigrad import backend, data

    try:
        if args.from_times is not None:
            return _from_times(args)
        if args.backend:
            backend.set_backend(args.backend)
        backend.get_backend()  # the default backend is selected now
        from minigrad.machine import set_threads

        args.threads = args.threads or default_threads()
        set_threads(args.threads)
        if args.fall is not None and not 0 < args.fall < 1:
            raise ValueError(f"--fall must lie in (0, 1); got {args.fall}")
        if args.steps is None:
            from minigrad.profiling import noise_scale

            args.steps = noise_scale.MIN_STEPS if args.command == "noise" else 5
        if args.steps < 1:
            raise ValueError(f"--steps must be a positive integer; got {args.steps}")
        out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-profile-{args.model}-{backend.get_backend()}")
        out.mkdir(parents=True, exist_ok=True)
        return _run(args, out)
    except (backend.BackendUnavailable, data.DataUnavailable, data.ChecksumError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _from_times(args) -> int:
    """Explain a curve measured elsewhere: the fixed and per-sample parts, the plateau, the largest speedup."""
    from minigrad.profiling import curve

    fall = args.fall if args.fall is not None else curve.DEFAULT_FALL
    c = curve.from_times(curve.parse_times(args.from_times), args.epochs, args.n_samples, fall)
    epochs = f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}"
    print(curve.headline(c, f"The times given ({epochs} of {args.n_samples:,} samples)", epochs=args.epochs))
    print(f"\nstep(B) = t_fixed + B·t_sample: t_fixed = {1e3 * c.t_fixed:.3f} ms per step (paid once per step: "
          f"Python, the tape, dispatch, the optimizer's calls), t_sample = {1e3 * c.t_sample:.3f} ms per sample "
          "(paid whatever the batch).")
    print(f"\n{'B':>6} {'seconds':>10} {'per epoch':>10} {'fall per doubling':>18}")
    for i, p in enumerate(c.points):
        fall_text = f"{100 * c.falls[i - 1]['fall']:.1f}%" if i else ""
        print(f"{p.batch_size:>6} {args.epochs * p.epoch_seconds:>10.1f} {p.epoch_seconds:>10.1f} {fall_text:>18}")
    print(f"\nImplication: past B={c.plateau_batch or c.points[-1].batch_size} only a smaller per-sample cost helps "
          f"(faster kernels, less copying, a compiled or GPU backend), not a larger batch. "
          "`python -m minigrad.profile ladder` shows the same shape measured here (its per-sample loop rung).")
    return 0


def _train_set(args):
    from minigrad import data

    if args.dataset == "synthetic":
        return data.synthetic_mnist()[0]
    return data.load_dataset(args.dataset, data_dir=args.data_dir)[0]


def _run(args, out: Path) -> int:
    from minigrad.profiling import ceilings, cprofile_harness, explain, ladder, line_harness, noise_scale, report

    if args.command == "ceilings":
        print(json.dumps(ceilings.load(remeasure=args.remeasure), indent=2))
        return 0
    if args.command == "explain":
        result = explain.explain(args.model, args.batch_sizes, args.dataset, args.data_dir, out, quick=args.quick,
                                 progress=None, repeats=args.repeats, threads=args.threads,
                                 **({"fall": args.fall} if args.fall is not None else {}))
        paths = report.write(result, out)
        print(report.headline(result))
        print(f"\nreport: {paths['md']}")
        return 0
    if args.command == "predict":
        return _predict(args, out)
    train_set = _train_set(args)
    if args.command == "trace":
        for row in explain.traced_sweep(args.model, args.batch_sizes, train_set, args.steps):
            print(f"\nB={row['batch_size']}: {100 * row['outside_fraction']:.0f}% of the step outside kernels")
            for k in row["kernels"]:
                print(f"  {k['kernel']:<24} {k['calls']:>5} calls {k['total_ms']:>9.2f} ms")
        _save_trace(args, train_set, out)
    elif args.command == "cprofile":
        rows = cprofile_harness.sweep(args.model, args.batch_sizes, 1024, train_set, out)
        print(cprofile_harness.format_causes(rows))
        print(f"\n.prof files in {out}")
    elif args.command == "lines":
        for b in sorted({min(args.batch_sizes), max(args.batch_sizes)}):
            row = line_harness.profile_lines(args.model, b, args.steps, train_set, out)
            print(f"B={b}: {row['text_path']}")
    elif args.command == "ladder":
        print(ladder.format_ladder(ladder.run(args.model, args.batch_sizes, train_set, progress=None)))
    elif args.command == "noise":
        from minigrad import data, models, optim

        model = models.get_model(args.model)
        est = noise_scale.track(model, data.DataLoader(train_set, 64, shuffle=True, seed=0),
                                optim.SGD(model.parameters(), lr=0.05, momentum=0.9), steps=args.steps,
                                allow_few_steps=args.allow_few_steps)
        print(est.summary(), file=sys.stderr)
        print(json.dumps(est.to_dict(), indent=2))
    return 0


def _predict(args, out: Path) -> int:
    """Predict (and with --measure, measure) step and epoch time at every batch size; predict.json in out."""
    from minigrad import backend
    from minigrad.profiling import predict

    name = backend.get_backend()
    cal = predict.load_calibration(name, args.dtype, args.threads, quick=args.quick, remeasure=args.recalibrate,
                                   progress=lambda text: print(f"calibrating: {text}", file=sys.stderr, flush=True))
    train_set = _train_set(args) if args.measure else None
    n_samples = len(train_set) if args.measure else args.n_samples
    kernels_at = args.kernels_at or sorted({min(args.batch_sizes), max(args.batch_sizes)})
    sizes = sorted(set(args.batch_sizes) | set(kernels_at))
    preds = predict.predict(args.model, sizes, name, args.dtype, args.threads, n_samples, cal)
    measured, traced = {}, {}
    if args.measure:
        measured = predict.measure_rounds(args.model, sizes, train_set, args.dtype, kernels_at, args.rounds,
                                          say=lambda text: print(text, file=sys.stderr, flush=True))
        measured = predict.with_machine_speed(measured, cal)
        traced = {b: m.get("by_kernel") for b, m in measured.items()}
    print(f"{args.model} on {name}, {args.dtype}, {args.threads} thread(s); calibration of "
          f"{cal.data['measured_at']} ({cal.where}); epoch = {n_samples:,} samples / B steps")
    noise = cal.pass_disagreement()
    print(f"calibration: {noise}\n" if noise else "")
    print(predict.format_table(preds, measured))
    if args.measure:
        print("\nspread: the row's slowest round over its fastest; machine: the synthetic CNN's step timed right "
              "before\nthe row's kept round, over its time at calibration (above 1: the machine ran slower)")
    for p in preds:
        if p.batch_size in kernels_at:
            print("\n" + predict.format_kernels(p, traced.get(p.batch_size)))
    (out / "predict.json").write_text(json.dumps(
        {"model": args.model, "backend": name, "dtype": args.dtype, "threads": args.threads,
         "calibrated_at": cal.data["measured_at"], "pass_disagreement": cal.data.get("pass_disagreement", {}),
         "predicted": [p.to_dict() for p in preds],
         "measured": [measured[b] for b in sizes if b in measured]}, indent=2))
    predict.plot(preds, measured, out / "predict.png", f"{args.model} on {name}, {args.dtype}")
    print(f"\npredict.json and predict.png in {out}")
    return 0


def _save_trace(args, train_set, out: Path) -> None:
    """A Chrome trace of a few steps at the largest batch size (open it in Perfetto)."""
    from minigrad.profiling import _harness
    from minigrad.profiling.tracer import Tracer

    run = _harness.Harness(args.model, max(args.batch_sizes), train_set, args.steps)
    with Tracer() as tr:
        run.steps(args.steps, around=tr.step)
    tr.save_chrome_trace(out / "trace.json")
    print(f"\ntrace.json (open in https://ui.perfetto.dev) in {out}")


if __name__ == "__main__":
    sys.exit(main())
