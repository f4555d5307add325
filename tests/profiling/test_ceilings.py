import json

from minigrad.profiling import ceilings


def test_measure_small_and_cache_round_trip(tmp_path):
    small = {"gemm_n": 128, "stream_mb": 4, "repeats": 1}
    first = ceilings.load(cache_dir=tmp_path, **small)
    assert first["gemm_gflops"]["float32"] > 0 and first["gemm_gflops"]["float64"] > 0
    assert first["stream_gbps"]["copy"] > 0 and first["stream_gbps"]["triad"] > 0
    assert first["cores"] >= 1 and first["cpu"]
    cached = list(tmp_path.glob("ceilings-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == first
    assert ceilings.load(cache_dir=tmp_path) == first            # served from the cache
    again = ceilings.load(remeasure=True, cache_dir=tmp_path, **small)
    assert again["measured_at"] >= first["measured_at"]


def test_cache_sizes_are_bytes_by_level():
    sizes = ceilings.cache_sizes()
    assert all(k.startswith("L") and v > 0 for k, v in sizes.items())
    if "L1" in sizes and "L2" in sizes:
        assert sizes["L2"] > sizes["L1"]
