"""The Numba backend's runtime (kernels/numba_runtime.py): tuned() and TUNING, the threshold tests, the block
split, NumPy's BLAS called from jitted code and held to one thread, set_threads/get_threads, and the OpenMP
thread policy, which must reach the C environment (where libgomp reads it) without ever appearing in os.environ. The policy tests run in
fresh interpreters: whether it was applied is decided once per process.
"""

import ctypes
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import threadpoolctl

rt = pytest.importorskip("minigrad.kernels.numba_runtime")

NEVER = 1 << 62


def c_getenv(name):
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    libc.getenv.argtypes = [ctypes.c_char_p]
    value = libc.getenv(name.encode())
    return None if value is None else value.decode()


# ----------------------------------------------------------------------------------------------------------
# TUNING and tuned()


def test_tuned_changes_tuning_for_the_block_and_restores_it():
    before = dict(rt.TUNING)
    with rt.tuned(split_min_work=0, parallel_min_elements=NEVER):
        assert rt.TUNING == {**before, "split_min_work": 0, "parallel_min_elements": NEVER}
    assert rt.TUNING == before


def test_tuned_restores_tuning_after_an_exception():
    before = dict(rt.TUNING)
    with pytest.raises(RuntimeError, match="inside"):
        with rt.tuned(conv_chunk_bytes=1):
            raise RuntimeError("inside")
    assert rt.TUNING == before


def test_tuned_rejects_unknown_keys_and_changes_nothing():
    before = dict(rt.TUNING)
    with pytest.raises(KeyError, match="unknown TUNING keys"):
        with rt.tuned(split_min_work=0, no_such_setting=1):
            pass
    assert rt.TUNING == before


def test_tuning_is_the_dict_the_kernels_read():
    nb = pytest.importorskip("minigrad.kernels.numba_ops")
    assert nb.TUNING is rt.TUNING  # tuned() mutates it in place, so the kernels see every change


def test_threshold_helpers_follow_tuning():
    with rt.tuned(parallel_min_elements=10, pool_parallel_min_elements=100):
        assert not rt.parallel(9) and rt.parallel(10)
        assert not rt.pool_parallel(99) and rt.pool_parallel(100)


# ----------------------------------------------------------------------------------------------------------
# blocks, gemm (NumPy's BLAS from jitted code) and OneBlasThread


def test_blocks_one_per_thread_from_the_threshold_on_at_most_one_per_row():
    with rt.tuned(split_min_work=100):
        assert rt.blocks(10, 99) == 1
        assert rt.blocks(10, 100) == min(10, rt.num_threads())
        assert rt.blocks(1, 100) == 1


@pytest.mark.parametrize("n", [1, 2, 7, 10])
@pytest.mark.parametrize("T", [1, 2, 3])
def test_block_bounds_cover_the_rows_in_contiguous_blocks_in_order(n, T):
    bounds = [rt.block_bounds.py_func(n, t, T) for t in range(T)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


@rt.njit
def _gemm_jitted(pointers, a, trans_a, b, trans_b, c, beta):
    rt.gemm(pointers, a, trans_a, b, trans_b, c, beta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("M, N, K", [(5, 7, 3), (5, 1, 3), (1, 7, 3)])  # a GEMM, and the two GEMVs
def test_gemm_from_jitted_code_on_strided_views_matches_numpy(dtype, trans_a, trans_b, beta, M, N, K):
    rng = np.random.default_rng(0)
    # row views of wider arrays (leading dimension larger than the row) on every operand
    a = rng.standard_normal((K, M + 2) if trans_a else (M, K + 2)).astype(dtype)[:, :(M if trans_a else K)]
    b = rng.standard_normal((N, K + 3) if trans_b else (K, N + 3)).astype(dtype)[:, :(K if trans_b else N)]
    c_full = rng.standard_normal((M, N + 4)).astype(dtype)
    c = c_full[:, :N]
    want = (a.T if trans_a else a) @ (b.T if trans_b else b) + beta * c
    right = c_full[:, N:].copy()
    _gemm_jitted(rt.gemm_pointers(), a, trans_a, b, trans_b, c, beta)
    np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert np.array_equal(c_full[:, N:], right)  # nothing written past the view


def test_gemm_on_single_rows_and_columns():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((1, 4)), rng.standard_normal((4, 1))
    c = np.empty((1, 1))
    _gemm_jitted(rt.gemm_pointers(), a, False, b, False, c, 0.0)
    np.testing.assert_allclose(c, a @ b)
    c = np.empty((4, 4))
    _gemm_jitted(rt.gemm_pointers(), b, False, a, False, c, 0.0)
    np.testing.assert_allclose(c, b @ a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_run_of_products_multiplies_each_strided_slice(dtype):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((6, 16, 5)).astype(dtype), rng.standard_normal((16, 5, 3)).astype(dtype)
    c = np.full((6, 16, 3), np.nan, dtype=dtype)
    rt.matmul_run(a, b, c)
    np.testing.assert_allclose(c, np.einsum("tik,ikf->tif", a, b), rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6)


def test_the_guard_holds_the_library_the_gemm_runs_in_and_nothing_else():
    import ctypes

    held = rt.blas_controllers()
    assert len(held) == 1  # found: NumPy's own BLAS, not every library in the process
    library = rt._file_of(ctypes, rt.gemm_pointers()[0])
    assert "numpy" in library and os.path.realpath(held[0].filepath) == library
    others = [c for c in threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
              if os.path.realpath(c.filepath) != library]
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = [c.num_threads for c in others]
        with rt.OneBlasThread():
            assert held[0].num_threads == 1
            assert [c.num_threads for c in others] == before
        assert held[0].num_threads == 2


def test_every_routine_comes_from_the_library_the_guard_holds():
    import ctypes

    held = os.path.realpath(rt.blas_controllers()[0].filepath)
    assert {rt._file_of(ctypes, address) for address in rt.gemm_pointers()} == {held}


def test_a_missing_blas_symbol_is_named_in_the_error():
    with pytest.raises(RuntimeError, match="scipy_sgemm_nowhere_"):
        rt._resolve(("scipy_sgemm_64_", "scipy_sgemm_nowhere_"))


def test_handoff_runs_on_any_thread_count():
    for T in (1, 2):
        rt.handoff(T)


# ----------------------------------------------------------------------------------------------------------
# set_threads / get_threads


def test_set_threads_round_trip():
    before = rt.get_threads()
    try:
        assert rt.set_threads(1) == {"numba": 1, "blas": 1}
        assert rt.get_threads() == {"numba": 1, "blas": 1}
        n = min(2, rt.numba.config.NUMBA_NUM_THREADS)
        assert rt.set_threads(n) == {"numba": n, "blas": n}
    finally:
        rt.set_threads(before["numba"])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", 10**6])
def test_set_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="set_threads: n must be"):
        rt.set_threads(bad)


def test_set_threads_accepts_numpy_integers():
    before = rt.get_threads()["numba"]
    try:
        assert rt.set_threads(np.int64(1))["numba"] == 1
    finally:
        rt.set_threads(before)


# ----------------------------------------------------------------------------------------------------------
# the OpenMP thread policy


def test_apply_thread_policy_is_idempotent_and_leaves_os_environ_alone():
    environ = dict(os.environ)
    first = rt.apply_thread_policy()
    assert rt.apply_thread_policy() == first == rt.APPLIED
    assert dict(os.environ) == environ
    user_policy = "OMP_WAIT_POLICY" in os.environ  # then none of minigrad's
    for name, value in rt.THREAD_POLICY.items():  # minigrad's value, or the user's where they set one
        ours = None if user_policy or name in os.environ else value
        assert first.get(name) == ours
        assert c_getenv(name) == (os.environ.get(name) if ours is None else value)
    first["OMP_WAIT_POLICY"] = "changed"  # a copy: the record cannot be edited through it
    assert rt.APPLIED.get("OMP_WAIT_POLICY") != "changed"


PROBE = textwrap.dedent("""
    import ctypes, json, os, subprocess, sys
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    libc.getenv.argtypes = [ctypes.c_char_p]

    def c_env():
        v = libc.getenv(b"OMP_WAIT_POLICY")
        return None if v is None else v.decode()

    environ = dict(os.environ)
    from minigrad.kernels import numba_ops, numba_runtime
    out = {"after_import": [c_env(), dict(numba_runtime.APPLIED)]}
    out["activate"] = numba_ops.activate()
    out["again"] = numba_runtime.apply_thread_policy()
    out["c_env"] = c_env()
    out["environ_unchanged"] = dict(os.environ) == environ
    out["environ_value"] = os.environ.get("OMP_WAIT_POLICY")
    child = [sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY'))"]
    out["child_user_env"] = subprocess.run(child, env=dict(os.environ), capture_output=True,
                                           text=True).stdout.strip()
    out["threads"] = numba_runtime.get_threads()["numba"]  # starts Numba's OpenMP pool
    print(json.dumps(out))
""")


def run_probe(**env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_changes, OMP_DISPLAY_ENV="VERBOSE")  # libgomp prints what it read when the pool starts
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_thread_policy_reaches_the_c_environment_only_and_not_at_import():
    out, stderr = run_probe()
    assert out["after_import"] == [None, {}]  # importing the kernels sets nothing
    assert out["activate"] == out["again"] == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}
    assert out["c_env"] == "PASSIVE"
    assert out["environ_unchanged"] and out["environ_value"] is None
    assert out["child_user_env"] == "None"  # a child given os.environ gets the user's environment
    if "GOMP_SPINCOUNT" in stderr:  # GNU OpenMP: a short spin, then asleep
        assert "GOMP_SPINCOUNT = '10000'" in stderr


def test_a_users_own_wait_policy_wins():
    out, stderr = run_probe(OMP_WAIT_POLICY="ACTIVE")
    assert out["after_import"] == ["ACTIVE", {}]
    assert out["activate"] == out["again"] == {}
    assert out["c_env"] == out["environ_value"] == out["child_user_env"] == "ACTIVE"
    assert out["environ_unchanged"]
    if "OMP_WAIT_POLICY = " in stderr:
        assert "OMP_WAIT_POLICY = 'ACTIVE'" in stderr
    if "GOMP_SPINCOUNT" in stderr:  # not shortened by minigrad's spin count: GNU OpenMP's own for ACTIVE
        assert "GOMP_SPINCOUNT = '10000'" not in stderr
