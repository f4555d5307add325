"""The machine calibration: its lookups on synthetic tables with known answers, and a real (tiny) measurement
that covers every term the plans can ask for."""

import math

import numpy as np
import pytest

from minigrad import backend, models
from minigrad.profiling import calibration, plans, predict

DIMS = [1, 4, 16, 64]


def power_law_gemm(rate=1e9, dims=DIMS) -> dict:
    """Every product takes exactly 2mnk / rate seconds."""
    grid = [[[2 * m * n * k / rate for k in dims] for n in dims] for m in dims]
    return {layout: grid for layout in calibration.GEMM_LAYOUTS}


def test_gemm_lookup_is_exact_for_a_power_law_between_and_beyond_the_grid():
    cal = calibration.Calibration({"backend": "numpy", "gemm_dims": DIMS, "gemm": power_law_gemm()})
    for m, n, k in [(3, 50, 7), (1, 1, 1), (64, 64, 64), (2, 33, 5)]:
        assert cal.gemm_seconds("nt", m, n, k) == pytest.approx(2 * m * n * k / 1e9, rel=1e-9)
    # beyond the largest dimension the time grows with the work
    assert cal.gemm_seconds("nn", 256, 2, 640) == pytest.approx(2 * 256 * 2 * 640 / 1e9, rel=1e-9)


def two_path_gemm(dims, small_rate=2e9, packed_rate=1e9) -> dict:
    """Every product takes 2mnk / rate seconds, at one rate on BLAS's small-matrix path, another off it."""
    return {layout: [[[2 * m * n * k / (small_rate if calibration.small_path(layout, m, n, k) else packed_rate)
                       for k in dims] for n in dims] for m in dims] for layout in calibration.GEMM_LAYOUTS}


def test_small_path_follows_openblas_permit_rules_in_row_major_terms():
    assert calibration.small_path("nn", 16, 480, 128) and not calibration.small_path("nn", 16, 496, 128)
    assert calibration.small_path("tn", 100, 100, 100) and not calibration.small_path("tn", 100, 100, 101)
    # nt (OpenBLAS's TN): only small outputs with an inner dimension of at least 32
    assert calibration.small_path("nt", 8, 148, 64) and not calibration.small_path("nt", 8, 152, 64)
    assert not calibration.small_path("nt", 8, 148, 31)


def test_gemm_lookup_interpolates_within_the_small_paths_side_of_its_boundary():
    dims = [1, 16, 256, 4096]
    data = {"backend": "numba", "gemm_dims": dims, "gemm": two_path_gemm(dims),
            "small_path_jumps": {layout: 1.5 for layout in calibration.GEMM_LAYOUTS}}
    cal = calibration.Calibration(data)
    # (16, 368, 150): inside (883k multiply-adds) between corners of both paths: priced at the small path's rate
    assert cal.gemm_seconds("nn", 16, 368, 150) == pytest.approx(2 * 16 * 368 * 150 / 2e9, rel=1e-9)
    assert cal.gemm_seconds("nn", 16, 496, 150) == pytest.approx(2 * 16 * 496 * 150 / 1e9, rel=1e-9)
    assert cal.gemm_seconds("nt", 4, 200, 64) == pytest.approx(2 * 4 * 200 * 64 / 2e9, rel=1e-9)
    assert cal.gemm_seconds("nt", 8, 200, 64) == pytest.approx(2 * 8 * 200 * 64 / 1e9, rel=1e-9)
    # a BLAS that showed no jump: the corners of both paths are blended, between the two rates
    data["small_path_jumps"] = {layout: 1.0 for layout in calibration.GEMM_LAYOUTS}
    blended = cal.gemm_seconds("nn", 16, 368, 150)
    assert 2 * 16 * 368 * 150 / 2e9 * 1.05 < blended < 2 * 16 * 368 * 150 / 1e9


def test_a_skinny_products_sides_that_are_not_a_power_of_two_take_their_edge_profiles_factor():
    """A power-law grid, and edge profiles where tn's side n at width 25 and side m at width 6 (the long side k)
    ran 1.5x and 1.2x the grid's time: a skinny 6 x 25 x k product pays both, a short or power-of-two one none."""
    dims = [1, 4, 16, 64, 256, 4096, 65536]
    data = {"backend": "numpy", "gemm_dims": dims, "gemm": power_law_gemm(dims=dims)}
    widths = list(calibration.EDGE_WIDTHS)
    seconds = {}
    for side, long in [(a, b) for a in range(3) for b in range(3) if a != b]:
        grid = [2 * math.prod(calibration._edge_shape(side, long, w)) / 1e9 for w in widths]
        seconds[f"{side}{long}"] = [t * {(1, 25): 1.5, (0, 6): 1.2}.get((side, w), 1.0) for t, w in zip(grid, widths)]
    data["edges"] = {"widths": widths, "seconds": {"tn": seconds}}
    cal = calibration.Calibration(data)
    plain = 2 * 6 * 25 * 8192 / 1e9
    assert cal.edge_factor("tn", 6, 25, 8192) == pytest.approx(1.8)
    assert cal.gemm_seconds("tn", 6, 25, 8192) == pytest.approx(1.8 * plain, rel=1e-9)
    assert cal.gemm_seconds("tn", 5, 25, 8192) == pytest.approx(1.5 * 2 * 5 * 25 * 8192 / 1e9, rel=1e-9)
    assert cal.edge_factor("tn", 6, 25, calibration.EDGE_MIN_LONG - 1) == 1.0  # not skinny
    assert cal.edge_factor("tn", 8, 32, 8192) == 1.0 and cal.edge_factor("tn", 6, 100, 8192) == pytest.approx(1.2)  # 100 > 63
    assert cal.edge_factor("nt", 6, 25, 8192) == 1.0  # no profile for the layout


def test_a_product_of_a_run_is_priced_at_the_runs_ratio_to_the_grid():
    """A power-law grid, runs measured at half the grid's time for 16 tiles and a quarter for 256: a product of a
    run takes the run's ratio, geometric in log2 tiles between them, the nearest one's beyond; nn's time times 1
    without runs."""
    dims = [1, 4, 16, 64, 256, 4096]
    data = {"backend": "numba", "gemm_dims": dims, "gemm": power_law_gemm(dims=dims)}
    cal = calibration.Calibration(data)
    assert cal.run_factor(144, 64, 32) == 1.0
    assert cal.gemm_seconds(plans.RUN, 144, 64, 32) == cal.gemm_seconds("nn", 144, 64, 32)
    run_dims = [[16, 256], [16, 64], [16, 64]]
    data["runs"] = {"dims": run_dims, "seconds": [[[2 * m * n * k / 1e9 * (0.5 if m == 16 else 0.25)
                                                    for k in run_dims[2]] for n in run_dims[1]] for m in run_dims[0]]}
    cal = calibration.Calibration(data)
    assert cal.run_factor(16, 32, 20) == pytest.approx(0.5) and cal.run_factor(256, 64, 16) == pytest.approx(0.25)
    assert cal.run_factor(64, 32, 32) == pytest.approx(0.5 ** 1.5)  # halfway in log2 tiles
    assert cal.run_factor(4, 8, 8) == pytest.approx(0.5) and cal.run_factor(1024, 256, 256) == pytest.approx(0.25)
    assert cal.gemm_seconds(plans.RUN, 64, 48, 40) == pytest.approx(0.5 ** 1.5 * 2 * 64 * 48 * 40 / 1e9, rel=1e-9)


def test_a_product_of_a_chunk_is_priced_at_its_layouts_chunk_ratio_to_the_grid():
    """Chunks measured at 0.8 of a power-law grid's time for nn and 0.5 for nt at 8 filters, 0.25 at 64: a chunk's
    product takes its own layout's ratio, geometric between the filters measured, the nearest's beyond them; a
    layout without chunks measured (tn here), or a calibration without any, prices it at the grid's time."""
    dims = [1, 4, 16, 64, 256, 4096]
    data = {"backend": "numba", "gemm_dims": dims, "gemm": power_law_gemm(dims=dims)}
    assert calibration.Calibration(data).gemm_seconds("nn" + plans.CHUNK, 16, 368, 150) == pytest.approx(
        calibration.Calibration(data).gemm_seconds("nn", 16, 368, 150), rel=1e-12)
    axes = {"F": (8, 64), "L": (128, 2048), "K": (16, 512)}

    def table(layout, ratio):
        mnk = calibration.chunk_dims(layout, axes)
        return {"dims": mnk, "seconds": [[[2 * m * n * k / 1e9 * ratio(dict(zip(calibration.CHUNK_ROLES[layout],
                                                                                 (m, n, k))))
                                          for k in mnk[2]] for n in mnk[1]] for m in mnk[0]]}
    data["chunks"] = {"nn": table("nn", lambda roles: 0.8), "nt": table("nt", lambda r: 0.5 if r["F"] == 8 else 0.25)}
    cal = calibration.Calibration(data)
    assert calibration.chunk_dims("nt", axes) == [[16, 512], [8, 64], [128, 2048]]  # K x F x L
    assert cal.chunk_factor("nn", 16, 368, 150) == pytest.approx(0.8)
    assert cal.chunk_factor("nt", 150, 8, 368) == pytest.approx(0.5) and cal.chunk_factor("nt", 150, 64, 368) == pytest.approx(0.25)
    assert cal.chunk_factor("nt", 150, 16 * 2 ** 0.5, 368) == pytest.approx(0.5 ** (1 + 1.5 / 3))  # log2 8..64
    assert cal.chunk_factor("nt", 4096, 1, 1 << 20) == pytest.approx(0.5)  # beyond: the nearest point's
    assert cal.chunk_factor("tn", 150, 368, 16) == 1.0
    assert cal.gemm_seconds("nt" + plans.CHUNK, 150, 64, 368) == pytest.approx(0.25 * 2 * 150 * 64 * 368 / 1e9)
    assert cal.gemm_seconds("tn" + plans.CHUNK, 150, 368, 16) == pytest.approx(2 * 150 * 368 * 16 / 1e9)


L1 = {"sets": 64, "ways": 12, "line": 64}


@pytest.mark.parametrize("run, stride, conflict", [
    # numpy's transposing copy here: these overflowed (1.10-1.48 ns per element) ...
    (576, 1152, True), (100, 1024, True), (576, 256, True), (576, 512, True), (576, 128, True), (576, 768, True),
    # ... and these fit (0.42-0.54 ns): strides of no whole number of lines, runs within the sets' capacity
    (576, 1160, False), (576, 1120, False), (100, 1056, False), (40, 1024, False), (576, 192, False),
    (576, 64, False), (576, 800, False), (576, 24, False)])
def test_l1_conflicts_follow_the_sets_a_stride_lands_on(run, stride, conflict):
    assert calibration.l1_conflicts(run, stride, L1) is conflict


def test_a_conflicting_copy_pays_the_measured_penalty_per_element():
    cal = calibration.Calibration({"backend": "numpy", "l1_conflict": {**L1, "seconds_per_element": 7e-10}})
    assert cal.l1_conflict_seconds(576, 1152) == 7e-10 and cal.l1_conflict_seconds(576, 1160) == 0.0
    assert calibration.Calibration({"backend": "numpy"}).l1_conflict_seconds(576, 1152) == 0.0  # not measured


def test_the_l1_geometry_and_its_penalty_are_measured():
    from minigrad.profiling import ceilings

    geometry = ceilings.l1_geometry()
    if geometry is None:
        pytest.skip("the OS gives no L1 geometry")
    assert set(geometry) == {"sets", "ways", "line"} and all(v > 0 for v in geometry.values())
    measured = calibration.measure_l1_conflict("float32", elements=1 << 16)
    assert measured == {} or (measured["seconds_per_element"] >= 0 and measured["line"] == geometry["line"])


def test_a_product_too_large_to_time_is_filled_at_the_rate_of_a_measured_one():
    grid = np.full((3, 3, 3), np.nan)
    grid[:2, :2, :2] = 1.0
    grid[1, 1, 1] = 4.0
    dims = (1, 2, 8)
    # (8, 2, 2): the largest dimension steps down to 2 (x4 the work) onto a measured cell (2, 2, 2)
    assert calibration._filled(grid, (2, 1, 1), dims) == pytest.approx(16.0)
    # (8, 8, 2): m steps down first (first of the largest), then n: 4.0 * 4 * 4
    assert calibration._filled(grid, (2, 2, 1), dims) == pytest.approx(64.0)


def test_curves_interpolate_in_log_log_floor_below_and_scale_linearly_beyond():
    curves = {"copy": [[16, 1e-6], [1024, 64e-6]], "pool@6": [[16, 2e-6], [1024, 2e-6]],
              "pool@30": [[16, 8e-6], [1024, 8e-6]]}
    cal = calibration.Calibration({"backend": "numpy", "curves": curves})
    assert cal.curve_seconds("copy", 128) == pytest.approx(8e-6)       # slope 1 in log-log: exact
    assert cal.curve_seconds("copy", 4) == pytest.approx(1e-6)         # below: the first time
    assert cal.curve_seconds("copy", 4096) == pytest.approx(256e-6)    # beyond: per element of the last
    lo, hi = calibration.WIDTHS
    assert cal.curve_seconds("pool", 100, lo) == pytest.approx(2e-6)
    assert cal.curve_seconds("pool", 100, hi) == pytest.approx(8e-6)
    assert cal.curve_seconds("pool", 100, math.sqrt(lo * hi)) == pytest.approx(4e-6)  # geometric in width
    assert cal.curve_seconds("pool", 100, 1000) == pytest.approx(8e-6)  # clamped to the widest measured
    with pytest.raises(KeyError, match="no curve 'relu'"):
        cal.curve_seconds("relu", 10)


def test_a_width_profile_corrects_the_interpolation_between_the_measured_widths():
    """Size curves at widths 6 and 30 (2 and 8 ns per element) interpolate to 4 ns at width sqrt(180); the profile
    says width 8 costs what width 30 does and width 24 costs half of it: the price follows the profile."""
    lo, hi = calibration.WIDTHS
    curves = {f"pool@{lo}": [[16, 32e-9], [1024, 2048e-9]], f"pool@{hi}": [[16, 128e-9], [1024, 8192e-9]]}
    widths = {"pool": [[lo, 2e-9], [8, 8e-9], [24, 4e-9], [hi, 8e-9]]}
    cal = calibration.Calibration({"backend": "numpy", "curves": curves, "widths": widths})
    plain = calibration.Calibration({"backend": "numpy", "curves": curves})
    for w in (lo, hi):
        assert cal.curve_seconds("pool", 100, w) == pytest.approx(plain.curve_seconds("pool", 100, w))
    assert cal.curve_seconds("pool", 100, 8) == pytest.approx(800e-9)
    assert cal.curve_seconds("pool", 100, 24) == pytest.approx(400e-9)
    # between profiled widths: the profile interpolated in log width (8 ns at 8, 4 ns at 24: 12 is 37% of the way)
    f = math.log(12 / lo) / math.log(hi / lo)
    at_12 = 8e-9 * 0.5 ** (math.log(12 / 8) / math.log(24 / 8))
    assert cal.curve_seconds("pool", 100, 12) == pytest.approx(plain.curve_seconds("pool", 100, 12) * at_12
                                                               / (2e-9 * 4 ** f))
    assert plain.curve_seconds("pool", 100, 8) == pytest.approx(100 * 2e-9 * 4 ** (math.log(8 / lo) / math.log(hi / lo)))


def test_a_width_profile_scales_the_time_per_element_not_the_calls_fixed_cost():
    """1 us a call plus 2 ns per element at both measured widths; the profile says width 8 costs 4x per element:
    a call on 1,024 elements costs 1 us + 1,024 x 8 ns there, on 16 elements 1 us + 16 x 8 ns."""
    lo, hi = calibration.WIDTHS
    curve = [[16, 1e-6 + 16 * 2e-9], [1024, 1e-6 + 1024 * 2e-9], [4096, 1e-6 + 4096 * 2e-9]]
    widths = {"pool": [[lo, 2e-9], [8, 8e-9], [hi, 2e-9]]}
    cal = calibration.Calibration({"backend": "numpy", "curves": {f"pool@{lo}": curve, f"pool@{hi}": curve},
                                   "widths": widths})
    assert cal.curve_seconds("pool", 1024, 8) == pytest.approx(1e-6 + 1024 * 8e-9)
    assert cal.curve_seconds("pool", 16, 8) == pytest.approx(1e-6 + 16 * 8e-9)
    assert cal.curve_seconds("pool", 1024, lo) == pytest.approx(1e-6 + 1024 * 2e-9)


def test_width_profiles_are_measured_for_every_pass_and_kernel_along_rows():
    if backend.unavailable_reason("numpy"):
        pytest.skip(backend.unavailable_reason("numpy"))
    with backend.use_backend("numpy"):
        widths = calibration.measure_widths("numpy", "float32", widths=(2, 6, 9), elements=512, budget=0.0)
    # the plane copies, the row col2im and Winograd's transforms: Numba's only
    numba_only = {"im2col_plane", "col2im_plane", "col2im", "winograd_input", "winograd_output"}
    assert set(widths) == set(plans.wide("numpy")) - numba_only
    for profile in widths.values():
        assert [w for w, _ in profile] == [2, 6, 9] and all(t > 0 for _, t in profile)


def test_the_deep_curve_is_blended_in_by_the_reach_of_the_working_set():
    """reach: 0 at 4 MiB, 0.5 at 64 MiB, implied 1 at DEEP_EVICT_BYTES. The deep curve costs a fixed 50 us (the
    code and interpreter state a pass over DEEP_EVICT_BYTES evicts, which a step keeps warm) and 3x per element,
    measured from 1024 elements on: only its penalty beyond the one on its smallest size is the data's."""
    curves = {"relu": [[16, 16e-9], [4096, 4096e-9]],
              "relu~deep": [[1024, 50e-6 + 3 * 1024e-9], [4096, 50e-6 + 3 * 4096e-9]],
              "pool@6": [[16, 16e-9], [4096, 4096e-9]], "pool@30": [[16, 16e-9], [4096, 4096e-9]],
              "pool@6~deep": [[16, 48e-9], [4096, 3 * 4096e-9]], "pool@30~deep": [[16, 48e-9], [4096, 3 * 4096e-9]],
              "pad": [[16, 16e-9], [4096, 4096e-9]]}
    cal = calibration.Calibration({"backend": "numpy", "curves": curves, "reach": [[4 << 20, 0.0], [64 << 20, 0.5]]})
    assert cal.deep_fraction(1 << 20) == 0.0
    assert cal.deep_fraction(4 << 20) == 0.0
    assert cal.deep_fraction(16 << 20) == pytest.approx(0.25)     # linear in log bytes
    assert cal.deep_fraction(64 << 20) == pytest.approx(0.5)
    assert cal.deep_fraction(calibration.DEEP_EVICT_BYTES) == pytest.approx(1.0)
    assert cal.deep_fraction(1 << 40) == 1.0
    data = 2 * (4096 - 1024) * 1e-9  # the penalty at 4096 elements less the one at 1024
    assert cal.curve_seconds("relu", 4096, deep=0.0) == pytest.approx(4096e-9)
    assert cal.curve_seconds("relu", 4096, deep=0.5) == pytest.approx(4096e-9 + data / 2)
    assert cal.curve_seconds("relu", 4096, deep=1.0) == pytest.approx(4096e-9 + data)
    assert cal.curve_seconds("relu", 1024, deep=1.0) == pytest.approx(1024e-9)   # the deep curve's smallest size
    assert cal.curve_seconds("relu", 256, deep=1.0) == pytest.approx(256e-9)     # and below it: no data's penalty
    assert cal.curve_seconds("pool", 100, 6, deep=1.0) == pytest.approx(100e-9 + (200e-9 - 32e-9))
    assert cal.curve_seconds("pad", 100, deep=1.0) == pytest.approx(100e-9)        # no deep curve: as it is
    assert calibration.Calibration({"backend": "numpy", "curves": curves}).deep_fraction(1 << 40) == 0.0


def test_deep_curves_and_reach_are_measured(monkeypatch):
    """The measuring code on tiny sizes (an 8 MiB deep pass): a deep curve for every whole kernel, none for the
    passes, and a reach that rises from 0 and never falls."""
    if backend.unavailable_reason("numpy"):
        pytest.skip(backend.unavailable_reason("numpy"))
    monkeypatch.setattr(calibration, "DEEP_EVICT_BYTES", 8 << 20)
    with backend.use_backend("numpy"):
        curves = calibration.measure_curves("numpy", "float32", sizes=(64, 4096), budget=0.0)
        reach = calibration.measure_reach("float32", sizes=(1 << 20, 4 << 20), elements=1 << 14)
    assert {k[:-len("~deep")] for k in curves if k.endswith("~deep")} == {
        k for k in curves if not k.endswith("~deep") and k.split("@")[0] in plans.CURVE_KERNELS}
    assert all(all(s > 0 for _, s in curve) for k, curve in curves.items() if "~deep" in k)
    assert calibration.deep_sizes((1, 2, 3, 4, 5, 6)) == [1, 3, 5, 6]
    assert [b for b, _ in reach] == [1 << 20, 4 << 20]
    assert reach[0][1] == 0.0 and 0.0 <= reach[1][1] <= 1.0
    far = calibration.measure_far("float32", "numpy", sizes=(1 << 20, 4 << 20), k=1 << 10)
    assert far["seconds_per_byte"] > 0 and [b for b, _ in far["reach"]] == [1 << 20, 4 << 20]
    assert far["vector_seconds_per_byte"] > 0
    assert far["reach"][0][1] == 0.0 and 0.0 <= far["reach"][1][1] <= 1.0


@pytest.fixture(scope="module", params=["numpy", "numba"])
def tiny_calibration(request, tmp_path_factory):
    """A real calibration on the coarsest grid (a few seconds), cached in a directory of its own."""
    name = request.param
    if backend.unavailable_reason(name):
        pytest.skip(backend.unavailable_reason(name))
    previous = backend.get_backend()
    backend.set_backend(name)
    patch = pytest.MonkeyPatch()
    patch.setattr(calibration, "QUICK_GEMM_DIMS", (1, 64, 4096))
    patch.setattr(calibration, "QUICK_CURVE_SIZES", (64, 4096))
    cache = tmp_path_factory.mktemp(name)
    try:
        cal = calibration.load(name, "float32", 1, quick=True, cache_dir=cache)
        again = calibration.load(name, "float32", 1, quick=True, cache_dir=cache)
    finally:
        patch.undo()
        backend.set_backend(previous)
    return cal, again


def test_a_real_calibration_prices_every_term_of_every_reference_model(tiny_calibration):
    cal, _ = tiny_calibration
    assert cal.data["quick"] and cal.data["gemm_dims"] == [1, 64, 4096]
    assert "l1_conflict" in cal.data
    assert cal.data["edges"] == {}  # quick: none
    runs = cal.data["runs"]  # numba's runs of products, on the quick grid; none on numpy, which has none
    if cal.backend == "numba":
        assert runs["dims"] == [list(d) for d in calibration.QUICK_RUN_DIMS]
        assert np.asarray(runs["seconds"]).shape == (2, 2, 2) and np.all(np.asarray(runs["seconds"]) > 0)
        assert 0 < cal.run_factor(144, 64, 32) < 10
    else:
        assert runs == {} and cal.run_factor(144, 64, 32) == 1.0
    chunks = cal.data["chunks"]  # numba's products of im2col chunks, on the quick axes; none on numpy
    if cal.backend == "numba":
        assert set(chunks) == set(calibration.CHUNK_ROLES)
        for layout, measured in chunks.items():
            assert measured["dims"] == calibration.chunk_dims(layout, calibration.QUICK_CHUNK_AXES)
            assert np.all(np.asarray(measured["seconds"]) > 0)
            assert 0 < cal.chunk_factor(layout, 16, 368, 150) < 10
    else:
        assert chunks == {} and cal.chunk_factor("nn", 16, 368, 150) == 1.0
    assert cal.data["images"] in ("mnist", "synthetic")
    jumps = cal.data["small_path_jumps"]
    assert set(jumps) == set(calibration.SMALL_GEMM_PAIRS) and all(r > 0 for r in jumps.values())
    for curve in cal.data["curves"].values():
        assert all(seconds > 0 for _, seconds in curve)
    apart = cal.data["pass_disagreement"]  # how far the passes over its curves and GEMMs came out apart
    assert set(apart) == {"curves", "gemm"} and all(d["cells"] > 0 and d["p90"] >= d["median"] >= 0
                                                   for d in apart.values())
    words = cal.pass_disagreement()
    assert f"its curves by a median of {100 * apart['curves']['median']:.0f}%" in words and "its GEMMs" in words
    tiny = cal.data["tiny"]  # the loop's time outside kernels grows with the synthetic CNN's six more runs
    outside = dict(tiny["outside_cnn"])
    assert list(outside) == list(calibration.QUICK_OUTSIDE_BATCHES) and backend.kernel_hook() is None
    assert 0 < tiny["outside_step"] < outside[calibration.OUTSIDE_BATCH]
    cnn = predict.step_calls(calibration.synthetic_cnn("float32"), calibration.OUTSIDE_BATCH, 4)
    assert [name for name, _ in tiny["cnn_calls"]] == [call.kernel for _, call in cnn.calls]
    assert all(seconds > 0 for _, seconds in tiny["cnn_calls"])
    updates = dict(tiny["update_calls"])  # the mean update call at each batch size
    assert list(updates) == list(calibration.QUICK_OUTSIDE_BATCHES) and all(s > 0 for s in updates.values())
    first = [s for name, s in tiny["cnn_calls"] if name == "sgd_update"]
    assert updates[calibration.OUTSIDE_BATCH] == pytest.approx(sum(first) / len(first))
    steps = dict(tiny["cnn_step"])  # the machine's reference: the synthetic CNN's plain step
    assert list(steps) == list(calibration.REFERENCE_BATCHES) and 0 < steps[4] < steps[64]
    for name in models.MODELS:
        for dtype in ("float32",):
            for b in (1, 3, 300):
                p = predict.predict(name, [b], cal.backend, dtype, 1, 600, cal)[0]
                assert p.step_seconds > 0 and all(k.seconds > 0 for k in p.kernels)
                kinds = {t.term.kind for k in p.kernels for t in k.terms}
                assert kinds <= {"gemm", "pass", "kernel", "call", "split"}


def test_the_calibration_is_cached_with_its_date(tiny_calibration):
    cal, again = tiny_calibration
    assert again.data == cal.data and "measured_at" in cal.data  # the second load read the first's file


def test_a_backend_without_plans_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        calibration.measure("reference")
    # measured in its own process (as load() does), the child's error comes back in the message
    with pytest.raises(RuntimeError, match="(?s)measuring reference float32 failed.*backend must be one of"):
        calibration.measure_in_child("reference")


def test_plans_cover_every_curve_kernel_with_a_calibration_case():
    names = set(calibration._kernel_cases(backend.load_module("numpy"), "float32"))
    assert names == set(plans.CURVE_KERNELS)


def test_cells_are_timed_in_passes_and_keep_the_fastest():
    """A burst that lands in a slow second only ever slows a timing: cells timed once per pass (every other pass
    in reverse order), each keeping the fastest of its timings; its noise is the second fastest over it."""
    script = {"a": [1.0, 1.04, 3.0, 1.2], "b": [1.5, 1.1, 1.3, 2.0], "c": [2.0, 5.0, 4.0, 3.0]}
    calls, said = [], []

    def time_cell(cell):
        calls.append(cell)
        return script[cell][sum(c == cell for c in calls) - 1]

    apart: list = []
    got = calibration.timed_in_passes(["a", "b", "c"], time_cell, said.append, "curves", disagreement=apart, passes=4,
                                      settle=0)
    assert calls == ["a", "b", "c", "c", "b", "a"] * 2
    assert got == [1.0, 1.1, 2.0] and said == [f"curves, pass {p} of 4" for p in (1, 2, 3, 4)]
    assert apart == pytest.approx([0.04, 1.3 / 1.1 - 1, 0.5])  # each cell's second fastest over its fastest, less 1
    summary = calibration.disagreement_summary(apart)
    assert summary["cells"] == 3 and summary["median"] == pytest.approx(1.3 / 1.1 - 1)
    assert summary["p90"] == pytest.approx(np.percentile(apart, 90)) and 1.3 / 1.1 - 1 < summary["p90"] < 0.5
    assert calibration.disagreement_summary([]) == {"cells": 0, "median": 0.0, "p90": 0.0}
    calls.clear()
    assert calibration.timed_in_passes(["a", "b"], time_cell, settle=0) == [1.0, 1.1]  # PASSES by default
    assert len(calls) == 2 * calibration.PASSES
    # a timing that is more than a number (the fixed overheads' runs) is kept whole, the fastest by ``seconds``
    runs = {"a": [{"calls": 2.0, "outside": 1.0}, {"calls": 3.0, "outside": 0.5}],
            "b": [{"calls": 4.0, "outside": 1.0}, {"calls": 3.0, "outside": 2.0}]}
    calls.clear()

    def run_cell(cell):
        calls.append(cell)
        return runs[cell][sum(c == cell for c in calls) - 1]
    kept = calibration.timed_in_passes(["a", "b"], run_cell, seconds=lambda r: r["calls"], passes=2)
    assert kept == [runs["a"][0], runs["b"][1]]


def test_cells_whose_fastest_two_disagree_are_timed_again_until_they_agree():
    """A cell whose fastest timing stands alone (its next more than AGREE above it) is timed again, alone, in up
    to SETTLE more passes, until two agree; one whose two fastest agree is not; a quick calibration's passes
    (fewer than PASSES) are not settled."""
    script = {"calm": [1.0, 1.05, 1.3, 1.2], "busy": [2.0, 1.6, 1.9, 2.2, 1.7, 1.5, 1.55, 9.0],
              "stormy": [3.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]}
    calls, said = [], []

    def time_cell(cell):
        calls.append(cell)
        return script[cell][sum(c == cell for c in calls) - 1]

    apart: list = []
    got = calibration.timed_in_passes(list(script), time_cell, said.append, "curves", disagreement=apart)
    assert calibration.PASSES == 4 and calibration.SETTLE == 4 and calibration.AGREE == 0.10
    assert calls[:12] == ["calm", "busy", "stormy", "stormy", "busy", "calm"] * 2
    # busy: 1.6 and 1.9 apart by 19%, then 1.7 (6% off 1.6): settled; stormy: 2.0 and 3.0, never settles
    assert calls[12:] == ["busy", "stormy", "stormy", "stormy", "stormy"]
    assert said[4:] == [f"curves, {n} cells whose fastest two timings differ, again ({p} of 4)"
                        for n, p in ((2, 1), (1, 2), (1, 3), (1, 4))]
    assert got == [1.0, 1.6, 2.0]
    assert apart == pytest.approx([0.05, 1.7 / 1.6 - 1, 0.5])
    calls.clear()
    assert calibration.timed_in_passes(list(script), time_cell, passes=2) == [1.0, 1.6, 2.0]
    assert len(calls) == 6  # two passes, none again


def test_activation_planes_are_a_random_convolution_of_the_images():
    """A blank image gives each channel one value (its bias); one lit pixel changes the 3x3 around it only, by
    the filter's weights; images are cycled to fill the rows."""
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[1, 10, 20] = 255
    planes = calibration.activation_planes(images, 3, 5, 28, "float64", seed=0)
    assert planes.shape == (3, 5, 28, 28) and planes.dtype == np.float64
    bias = planes[0, :, 0, 0]
    assert np.array_equal(planes[0], np.broadcast_to(bias[:, None, None], (5, 28, 28)))
    assert np.array_equal(planes[2], planes[0])  # the rows cycle through the images
    fewer = calibration.activation_planes(images, 1, 5, 28, "float64")  # the same filters at every size
    assert np.array_equal(fewer[0], planes[0])
    lit = planes[1] - planes[0]
    rows, cols = np.nonzero(np.abs(lit).sum(axis=0))
    assert set(rows) == {9, 10, 11} and set(cols) == {19, 20, 21}
    w = np.random.default_rng(0).standard_normal((5, 3, 3))  # the same draws: the filters, flipped (correlation)
    assert np.allclose(lit[:, 9:12, 19:22], w[:, ::-1, ::-1])
    small = calibration.activation_planes(images, 2, 1, 7, "float32")
    assert small.shape == (2, 1, 7, 7) and small.dtype == np.float32


def test_activation_planes_see_the_image_as_a_pooling_layer_does():
    """Halved by 2x2 max pooling while at least ``side`` wide, then the central ``side`` pixels: a lit pixel
    lands where pooling and the crop take it, and a plane wider than the image resamples it up."""
    images = np.zeros((1, 28, 28), dtype=np.uint8)
    images[0, 10, 20] = 255

    def lit(side):
        planes = calibration.activation_planes(np.concatenate([images * 0, images]), 2, 1, side, "float64")
        rows, cols = np.nonzero(planes[1, 0] - planes[0, 0])
        return sorted(set(rows)), sorted(set(cols))
    assert lit(24) == ([7, 8, 9], [17, 18, 19])        # no pooling (12 < 24), the central 24 of 28: 2 cropped
    assert lit(14) == ([4, 5, 6], [9, 10, 11])         # pooled once: (10, 20) -> (5, 10)
    assert lit(8) == ([1, 2, 3], [6, 7])               # pooled once (7 < 8), the central 8 of 14: 3 cropped
    assert lit(5) == ([0, 1, 2], [3, 4])               # pooled twice to 7: (2, 5), the central 5: 1 cropped
    assert lit(56) == ([19, 20, 21, 22], [39, 40, 41, 42])  # resampled up: two pixels per pixel


def test_training_images_fall_back_to_synthetic_without_the_data(monkeypatch):
    from minigrad import data

    def unavailable(*args, **kwargs):
        raise data.DataUnavailable("no source")

    calibration.training_images.cache_clear()
    monkeypatch.setattr(data, "load_dataset", unavailable)
    try:
        name, images = calibration.training_images(8)
    finally:
        calibration.training_images.cache_clear()
    assert name == "synthetic" and images.shape == (8, 28, 28) and images.dtype == np.uint8


def test_pooling_calls_take_turns_over_inputs_made_from_different_images(monkeypatch):
    """A branch predictor learns a short input called again and again: each call pools the next of as many
    inputs as DISTINCT_ELEMENTS takes (here four), views of the one array re-read before each call."""
    monkeypatch.setattr(calibration, "DISTINCT_ELEMENTS", 4 * 16 * 8 * 8)
    seen = []

    class Ops:
        def relu_maxpool2d_forward(self, x, kernel, stride):
            seen.append(x)
            return x[..., ::kernel, ::kernel], None

    make = calibration._kernel_cases(Ops(), "float32", side=8)["relu_maxpool2d_forward"]
    fn, elements, inputs = make(16 * 8 * 8)
    assert elements == 16 * 8 * 8 and len(inputs) == 1 and inputs[0].shape == (4, 16, 8, 8)
    for _ in range(5):
        fn()
    assert all(x.shape == (1, 16, 8, 8) and np.shares_memory(x, inputs[0]) for x in seen)
    assert all(not np.array_equal(seen[i], seen[j]) for i in range(4) for j in range(i))
    assert np.array_equal(seen[4], seen[0])  # then round again
