"""Every instrument against the same untimed step: what each one sees, what it costs, whether they agree.

The untimed step is the loop's own step time (``minigrad.loop``'s ``compute_seconds``) with no instrument
attached: the sweep's median at that batch size. Each instrument then reports the step as it saw it:

- the tracer: its own step clock around the loop's compute part, with every kernel wrapped (kernels + time
  outside kernels = its step);
- cProfile: the loop's step time while profiling (every Python call pays the profiler's hook);
- line_profiler: the loop's step time while timing the hot kernels line by line.

Data loading is outside the step (the loop's ``data_seconds``), so cProfile's "data loading" cause is kept
apart from the causes scaled to the step.

An instrument's *share* is its step over the untimed step and its *overhead* the share minus one. Where an
instrument's figures are used to split the step into causes they are scaled to the untimed step, and the
report says so; an instrument off by more than ``DISAGREE`` is named at the top of the report.
"""

from __future__ import annotations

#: Relative difference between an instrument's step and the untimed step that the report flags.
DISAGREE = 0.15
DATA = "data loading"


def instruments(sweep: list[dict], traced: list[dict], causes: list[dict], lines: list[dict]) -> list[dict]:
    """Per batch size measured by the sweep: the untimed step and every instrument's share and overhead."""
    by = {name: {r["batch_size"]: r for r in rows} for name, rows in
          (("tracer", traced), ("cprofile", causes), ("line_profiler", lines))}
    out = []
    for s in sweep:
        b, untimed = s["batch_size"], s["step_seconds"]
        row = {"batch_size": b, "untimed_step_s": untimed, "instruments": {}}
        seen = {}
        if b in by["tracer"]:
            seen["tracer"] = by["tracer"][b]["step_seconds"]
        if b in by["cprofile"]:
            seen["cprofile"] = by["cprofile"][b]["step_seconds"]
        if b in by["line_profiler"]:
            seen["line_profiler"] = by["line_profiler"][b]["step_seconds"]
        for name, step in seen.items():
            row["instruments"][name] = {"step_s": step, "share": step / untimed, "overhead": step / untimed - 1}
        if b in by["cprofile"]:
            causes = dict(by["cprofile"][b]["causes_us_per_sample"])
            row["data_loading_us_per_sample"] = causes.pop(DATA, 0.0)
            scale = untimed * 1e6 / b / sum(causes.values())  # the step's causes, scaled to add up to the step
            row["cprofile_scale"] = scale
            row["causes_us_per_sample_scaled"] = {k: v * scale for k, v in causes.items()}
        out.append(row)
    return out


def warnings(rows: list[dict]) -> list[str]:
    """One line per instrument and batch size whose step differs from the untimed step by more than DISAGREE."""
    out = []
    for r in rows:
        for name, i in r["instruments"].items():
            if abs(i["overhead"]) > DISAGREE:
                verb = "inflates" if i["overhead"] > 0 else "shrinks"
                out.append(f"{name} {verb} the step by {100 * abs(i['overhead']):.0f}% at B={r['batch_size']} "
                           f"({1e3 * i['step_s']:.3f} ms against the untimed {1e3 * r['untimed_step_s']:.3f} ms)"
                           + ("; its causes are scaled to the untimed step" if name == "cprofile" else ""))
    return out
