"""convmatrix.core.threads: the kernels' one-thread BLAS limit, nested and concurrent."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import convmatrix
from convmatrix.core.threads import one_blas_thread, workers


def blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_limit_nested_and_restored():
    with threadpool_limits(2, user_api="blas"):  # the user's own setting
        with one_blas_thread():
            assert set(blas_threads()) == {1}
            with one_blas_thread():
                assert set(blas_threads()) == {1}
            assert set(blas_threads()) == {1}  # still inside the outer one
        assert set(blas_threads()) == {2}


def test_concurrent_callers_leave_the_settings_as_found():
    # Several threads computing spectral norms at once: the last to finish restores the setting.
    W = np.random.default_rng(0).standard_normal((4, 4, 3, 3))
    with threadpool_limits(2, user_api="blas"):
        with ThreadPoolExecutor(4) as pool:
            norms = list(pool.map(lambda n: convmatrix.spectral_norm(W, (4, n, n), padding=1), [18, 19, 20, 21]))
        assert set(blas_threads()) == {2}
    assert norms == [convmatrix.spectral_norm(W, (4, n, n), padding=1) for n in [18, 19, 20, 21]]


def test_workers_cap(monkeypatch):
    monkeypatch.setenv("CONVMATRIX_THREADS", "1")
    assert workers(100) == 1
    monkeypatch.delenv("CONVMATRIX_THREADS")
    assert 1 <= workers(100) <= 8 and workers(1) == 1
