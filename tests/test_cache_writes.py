"""V's transposed cache write (native/kernels/cache_writes.h): our scatter op stores the halves
that ggml's set_rows stores (llama.cpp's write, one value per row), for every thread count and
for values that round, overflow or underflow in half precision."""

from __future__ import annotations

import numpy as np
import pytest

from kangaroo_edge import _native

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

K = _native.kernels


def values_that_test_rounding(rng, n):
    v = rng.standard_normal(n).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 6, n).astype(np.float32)
    v[:8] = [0.0, -0.0, 65504.0, 65520.0, -1e6, 6e-8, 2.98e-8, 1.0 + 2.0 ** -11]  # max, overflow, subnormal, ties
    return v


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_scatter_stores_the_halves_ggml_set_rows_stores(n_threads):
    rng = np.random.default_rng(7 + n_threads)
    n_cells, n_embd_kv, n_tokens = 96, 192, 5
    # a step's V^T indices: element e of token t goes to row e at the token's cell
    cells = rng.choice(n_cells, n_tokens, replace=False)
    idxs = (np.arange(n_embd_kv)[None, :] * n_cells + cells[:, None]).reshape(-1).astype(np.int64)
    values = values_that_test_rounding(rng, idxs.size)
    ours = K.scatter_f16(values, idxs, n_cells * n_embd_kv, True, n_threads)
    ggml = K.scatter_f16(values, idxs, n_cells * n_embd_kv, False, n_threads)
    assert np.count_nonzero(ours) > idxs.size // 2  # the values landed
    np.testing.assert_array_equal(ours, ggml)
    with np.errstate(over="ignore"):  # 65520 and -1e6 become infinities, as they should
        np.testing.assert_array_equal(ours[idxs].view(np.float16), values.astype(np.float16))


def test_scatter_at_random_indices_and_a_single_value():
    rng = np.random.default_rng(3)
    for n in (1, 7, 1000):
        idxs = rng.choice(4096, n, replace=False).astype(np.int64)
        values = values_that_test_rounding(rng, max(n, 8))[:n]
        np.testing.assert_array_equal(K.scatter_f16(values, idxs, 4096, True, 2),
                                      K.scatter_f16(values, idxs, 4096, False, 2))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        K.scatter_f16(np.zeros(3, np.float32), np.array([0, 1, 5]), 4, True, 1)
    with pytest.raises(ValueError):
        K.scatter_f16(np.zeros(3, np.float32), np.array([0, 1]), 4, True, 1)
