"""The explain pipeline end to end on synthetic data with tiny budgets: every output exists and parses."""

import json
import os
import subprocess
import sys

import pytest

from minigrad.profiling import curve, plateau, verdict


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain")
    cmd = [sys.executable, "-m", "minigrad.profile", "explain", "--quick", "--dataset", "synthetic",
           "--batch-sizes", "1,2,4,8", "--backend", "numpy", "--out", str(out)]
    # its calibration and ceilings cached beside its outputs, not in the user's data directory
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MINIGRAD_DATA": str(out / "data")})
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_explain_writes_every_output(explained):
    out, proc = explained
    assert "epoch time stops falling" in proc.stdout or "epoch time has not stopped falling" in proc.stdout
    assert "Amortizing the fixed cost of a step can give at most" in proc.stdout
    assert "is at a hardware ceiling" in proc.stdout
    for name in ("explain.md", "explain.json", "plateau.png", "causes.png", "roofline.png", "ladder.png"):
        assert (out / name).stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(out.glob("cprofile-lenet5-B*.prof")) and list(out.glob("lines-lenet5-B*.lprof"))


def test_explain_json_schema_and_the_plateau_model_loads_back(explained):
    out, _ = explained
    r = json.loads((out / "explain.json").read_text())
    for key in ("model", "backend", "synthetic", "machine", "sweep", "plateau", "holdout", "traced", "causes",
                "footprints", "noise", "ladder", "recommendation", "curve", "instruments", "verdicts", "floor",
                "allocation", "counterfactuals", "warnings", "repeats", "threads", "first_principles"):
        assert key in r, key
    assert r["synthetic"] is True and r["backend"] == "numpy"
    assert [s["batch_size"] for s in r["sweep"]] == [1, 2, 4, 8]
    assert [h["batch_size"] for h in r["holdout"]] == [1, 2, 4, 8]  # every size, predicted by the cost model
    assert r["holdout"] == r["first_principles"]["rows"]
    model = plateau.load(out / "explain.json")
    assert model.predict_epoch_seconds(4) > 0
    assert r["recommendation"]["recommended"] in (1, 2, 4, 8)


def test_explain_json_carries_every_number_the_headline_and_verdicts_use(explained):
    """A reader can recompute the headline's figures and the verdicts from explain.json alone."""
    out, _ = explained
    r = json.loads((out / "explain.json").read_text())
    c = r["curve"]
    pts = [curve.Point(**p) for p in c["points"]]
    assert curve.plateau_batch(pts, c["fall"]) == c["plateau_batch"]
    assert [p.epoch_seconds for p in pts] == pytest.approx([r["n_epoch"] / s["batch_size"] * s["step_seconds"]
                                                            for s in r["sweep"]])
    step_1 = r["sweep"][0]["step_seconds"]
    assert c["fixed_fraction_at_first"] == pytest.approx(c["t_fixed"] / step_1) and c["step_1"] == step_1
    best = min((s["step_seconds"] - c["t_fixed"]) / s["batch_size"] for s in r["sweep"])
    assert c["t_sample_best"] == pytest.approx(best)
    assert c["speedup_bound"] == pytest.approx(curve.batching_bound(c["t_fixed"], step_1))
    assert c["measured_speedup"] == pytest.approx(pts[0].epoch_seconds / min(p.epoch_seconds for p in pts))
    peak, bw = r["machine"]["gemm_gflops"]["float32"], r["machine"]["stream_gbps"]["copy"]
    assert r["verdicts"] == verdict.kernel_verdicts(r["traced"], peak, bw)
    for i in r["instruments"]:
        for name, inst in i["instruments"].items():
            assert inst["share"] == pytest.approx(inst["step_s"] / i["untimed_step_s"]), name
    floor = r["floor"]
    assert floor["floor_us_per_sample"] == pytest.approx(1e6 * r["sweep"][-1]["step_seconds"] / floor["batch_size"])
    assert floor["ceiling_us_per_sample"] + floor["excess_us_per_sample"] == pytest.approx(floor["floor_us_per_sample"])
    rows = r["counterfactuals"]
    assert rows[0]["name"] == "baseline" and all(x["gain"] > 0 for x in rows if x["applicable"])


def test_the_held_out_predictions_come_from_the_calibration_alone(explained):
    """The report's predictions are what the cost model gives from the cached calibration and the layer shapes,
    recomputed here in another process without running the model."""
    from minigrad.profiling import calibration, predict

    out, _ = explained
    r = json.loads((out / "explain.json").read_text())
    cal = calibration.load("numpy", "float32", r["threads"], quick=True, cache_dir=out / "data")
    assert cal.data["measured_at"] == r["first_principles"]["calibrated_at"]
    noise = r["first_principles"]["calibration_noise"]  # its own passes' disagreement, in the report too
    assert noise == cal.pass_disagreement() and noise.startswith("the fastest two timings of each cell differed")
    assert f"The calibration's own noise: {noise}." in (out / "explain.md").read_text()
    preds = predict.predict("lenet5", [1, 2, 4, 8], "numpy", "float32", r["threads"], r["n_epoch"], cal)
    assert [p.step_seconds for p in preds] == pytest.approx([h["predicted_step_seconds"] for h in r["holdout"]])


def test_explain_md_has_every_section(explained):
    out, _ = explained
    md = (out / "explain.md").read_text()
    for section in ("## The measured curve", "## The model", "Held-out check", "## First principles: the cost model", "## Every instrument against the "
                    "untimed step", "## Where a sample's time goes", "## Kernels: what bounds each one",
                    "## The floor", "## What would help, measured", "## Cache footprints",
                    "## line_profiler excerpts", "## Gradient noise scale", "## Vectorization ladder",
                    "**synthetic**"):
        assert section in md, section


@pytest.mark.parametrize("command", ["trace", "cprofile", "lines", "ladder", "noise"])
def test_every_subcommand_runs_from_the_cli(command, tmp_path):
    cmd = [sys.executable, "-m", "minigrad.profile", command, "--dataset", "synthetic", "--batch-sizes", "1,4",
           "--backend", "numpy", "--steps", "3", "--out", str(tmp_path)] + (["--allow-few-steps"] * (command == "noise"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    expected = {"trace": "trace.json", "cprofile": "cprofile-lenet5-B4.prof", "lines": "lines-lenet5-B4.txt"}
    if command in expected:
        assert (tmp_path / expected[command]).stat().st_size > 0
    if command == "trace":
        assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    if command == "noise":
        assert json.loads(proc.stdout)["updates"] == 3


@pytest.mark.parametrize("args,msg", [(["--batch-sizes", "0"], "each batch size must be a positive integer; got 0"),
                                      (["--backend", "tpu"], "invalid choice"),
                                      (["--steps", "0"], "--steps must be a positive integer")])
def test_bad_arguments_exit_2_without_traceback(args, msg, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minigrad.profile", "trace", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr
