"""The run directory's derived files, rewritten from ``results.jsonl``: the text (``report``) and the
figures (``plots``), each derived from the same ``Results`` and neither knowing the other."""

from __future__ import annotations

from .report import Results, csv_text, findings, markdown, summary
from .store import RunDir, dumps


def write_outputs(run_dir: RunDir, complete: bool, with_plots: bool) -> Results:
    """(Re)write summary.json, results.csv, report.md and, when asked, the plots, from results.jsonl."""
    study = Results(run_dir.read())
    plots: list[str] = []
    if with_plots and any(r["status"] == "ok" for r in study.rows):
        from .plots import write_plots  # matplotlib: imported only when figures are drawn

        plots = write_plots(run_dir.path, study, findings(study))
    elif (run_dir.path / "plots").is_dir():
        plots = sorted(f"plots/{p.name}" for p in (run_dir.path / "plots").glob("*.png"))
    run_dir.write_text("summary.json", dumps(summary(study, complete, plots), indent=2) + "\n")
    run_dir.write_text("results.csv", csv_text(study))
    run_dir.write_text("report.md", markdown(study, complete, plots))
    return study
