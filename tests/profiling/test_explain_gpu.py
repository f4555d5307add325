"""The explanation on a GPU, checked on recorded H100 measurements (no GPU needed): the report's headline says
what bounds the step there, with the GPU's ceilings, not the host's."""

import json
from pathlib import Path

from minigrad.profiling import device, report

RECORDED = Path(__file__).parent / "recorded_gpu"


def test_the_report_on_recorded_gpu_data_says_what_bounds_the_step():
    ceilings = device.from_recorded(json.loads((RECORDED / "gpu_ceilings.json").read_text()))
    traced = []
    for b in (1, 16, 256, 4096):
        traced += device.parse_trace_table((RECORDED / f"trace-lenet5-B{b}.txt").read_text())
    bounds = device.gpu_bounds(traced, ceilings)
    r = {"model": "lenet5", "gpu": ceilings, "gpu_bounds": bounds, "traced": traced, "counterfactuals": []}
    gpu_text = device.gpu_headline("lenet5", bounds, ceilings)
    assert bounds["launch_bound_until"] == 256 and bounds["gpu_bound_from"] == 4096
    assert "launch" in gpu_text and "4096" in gpu_text
    md_section = report.gpu_section(r)
    assert "## The GPU step" in md_section and "51,637 GFLOP/s" in md_section and "7.5 µs" in md_section
    assert md_section.count("| launch/Python-bound |") == 3 and md_section.count("| GPU-bound |") == 1
    assert "| 4096 | 18.82 | 72% | 34 | 0.26 ms (1%) | GPU-bound |" in md_section
