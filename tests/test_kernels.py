"""The small-batch matmul kernels (native/kernels): against a float64 reference, against ggml's own
single-row result (bit for bit), row results independent of k and of the other rows in the batch,
and every ISA path this CPU has against the portable path. On random matrices and on real tensors
of both shipped models."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGML_QUANT_SIZES, GGUFReader
from gguf.quants import dequantize

from kangaroo_edge import _native

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)

K = _native.kernels
TYPES = [QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q4_K, QT.Q5_K, QT.Q6_K]
# byte offsets of the fp16 scale fields in each block (the rest of a block is any bit pattern)
SCALE_FIELDS = {QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
                QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208]}
HAS_BLOCK_MIN = {QT.Q4_1, QT.Q5_1}  # a per-block min multiplied by q8_1's fp16 sum of the row
ROWS = list(range(1, K.MAX_ROWS + 1))


def test_the_kernels_cover_the_shipped_models_types():
    assert set(K.supported_types()) == {int(t) for t in TYPES}
    assert "portable" in K.isas() and K.best_isa() in K.isas()


def random_weights(qtype: QT, m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """m rows of random blocks: random quants, scales and mins, fp16 scales in a sane range."""
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(m, n // block, size), dtype=np.uint8)
    for off in SCALE_FIELDS[qtype]:
        scales = rng.uniform(2e-4, 2e-2, size=(m, n // block)).astype(np.float16)
        raw[:, :, off:off + 2] = scales.view(np.uint8).reshape(m, n // block, 2)
    return raw.reshape(m, n // block * size)


def matmul(qtype, w, x, isa=None):
    return K.matmul(int(qtype), x.shape[1], w, np.ascontiguousarray(x, dtype=np.float32), isa or K.best_isa())


def ggml_mul_mat(qtype, w, x, n_threads=1):
    """ggml's own mul_mat on the same weights, in plain CPU memory (not repacked)."""
    g = K.MatmulGraph([(int(qtype), x.shape[1], w)], x.shape[0], False, n_threads)
    g.set_input(0, np.ascontiguousarray(x, dtype=np.float32))
    g.compute()
    return g.output(0)


def ggml_rows_one_by_one(qtype, w, x):
    """ggml's result for each activation row alone (its single-row vec_dot path)."""
    return np.concatenate([ggml_mul_mat(qtype, w, x[r:r + 1]) for r in range(x.shape[0])])


def error_bound(qtype, w, x):
    """How far a product of q8-quantized activations may be from the exact float64 product:
    each activation is rounded to a step of amax(block)/127 (an error of at most half a step), the
    q8_1 row sums that meet the weights' mins are stored in fp16 (relative 2^-11), plus f32
    accumulation (relative 1e-5 of sum |w x|)."""
    wf = np.abs(dequantize(w, qtype).reshape(w.shape[0], x.shape[1]).astype(np.float64))
    qk = 256 if qtype in (QT.Q4_K, QT.Q5_K, QT.Q6_K) else 32
    xb = np.abs(x.astype(np.float64)).reshape(x.shape[0], -1, qk)
    step = np.repeat(xb.max(axis=2) / 127.0, qk, axis=1)  # [k, n]
    bound = 0.5 * 1.01 * step @ wf.T + 1e-5 * np.abs(x) @ wf.T
    if qtype in HAS_BLOCK_MIN:
        mins = np.abs(w.reshape(w.shape[0], -1, GGML_QUANT_SIZES[qtype][1])[:, :, 2:4].copy()
                      .view(np.float16)[:, :, 0].astype(np.float64))  # [m, blocks]
        bound += 2.0 ** -10 * xb.sum(axis=2) @ mins.T
    return bound


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_each_kernel_is_within_the_quantization_error_of_the_exact_product(qtype, rng):
    m, n, k = 48, 512, 5
    w = random_weights(qtype, m, n, rng)
    x = rng.standard_normal((k, n)).astype(np.float32)
    exact = x.astype(np.float64) @ dequantize(w, qtype).reshape(m, n).astype(np.float64).T
    bound = error_bound(qtype, w, x)
    for isa in K.isas():
        err = np.abs(matmul(qtype, w, x, isa) - exact)
        assert (err <= bound).all(), (isa, float((err / bound).max()))
    # the bound is not vacuous: it is within a small factor of the error actually made
    assert float(np.median(np.abs(matmul(qtype, w, x) - exact) / bound)) > 0.005


needs_ggml_avx2 = pytest.mark.skipif(not K.ggml_single_row_matches(),
                                     reason="the kernels reproduce the x86 AVX2 build of ggml's vec_dot")


@needs_ggml_avx2
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_each_output_equals_ggmls_single_row_result_bit_for_bit(qtype, rng):
    m, n = 40, 1024
    w = random_weights(qtype, m, n, rng)
    x = (rng.standard_normal((K.MAX_ROWS, n)) * rng.uniform(0.1, 10, size=(K.MAX_ROWS, 1))).astype(np.float32)
    ref = ggml_rows_one_by_one(qtype, w, x)
    for isa in K.isas():
        np.testing.assert_array_equal(matmul(qtype, w, x, isa), ref, err_msg=isa)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_a_rows_result_does_not_depend_on_k_or_on_the_other_rows(qtype, rng):
    m, n = 24, 768 if qtype in (QT.Q4_K, QT.Q5_K, QT.Q6_K) else 416
    w = random_weights(qtype, m, n, rng)
    pool = rng.standard_normal((3 * K.MAX_ROWS, n)).astype(np.float32)
    alone = np.concatenate([matmul(qtype, w, pool[i:i + 1]) for i in range(len(pool))])
    for k in ROWS:
        for trial in range(2):
            pick = rng.choice(len(pool), size=k, replace=False)  # another batch composition each time
            np.testing.assert_array_equal(matmul(qtype, w, pool[pick]), alone[pick], err_msg=f"k={k}")


@pytest.mark.parametrize("isa", [i for i in K.isas() if i != "portable"] or ["none"])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_each_isa_path_equals_the_portable_path(qtype, isa, rng):
    if isa == "none":
        pytest.skip("this CPU has only the portable path")
    for k in ROWS:
        n = 512
        w = random_weights(qtype, 33, n, rng)  # an odd row count: the tails of every tile
        x = rng.standard_normal((k, n)).astype(np.float32)
        np.testing.assert_array_equal(matmul(qtype, w, x, isa), matmul(qtype, w, x, "portable"), err_msg=f"k={k}")


def test_the_custom_op_in_a_threaded_graph_equals_the_kernel(rng):
    """The ggml op splits output rows over threads; the result is the kernel's, bit for bit."""
    cases, xs = [], []
    for qtype in TYPES:
        w = random_weights(qtype, 70, 512, rng)
        cases.append((int(qtype), 512, w))
    for k in (1, 3, 8, 16):
        g = K.MatmulGraph(cases, k, True, 3)
        assert g.n_kernel_ops == len(TYPES)
        xs = [rng.standard_normal((k, 512)).astype(np.float32) for _ in cases]
        for i, x in enumerate(xs):
            g.set_input(i, x)
        g.compute()
        for i, (qtype, _, w) in enumerate(cases):
            np.testing.assert_array_equal(g.output(i), matmul(qtype, w, xs[i]))


def test_a_type_without_a_kernel_stays_with_ggml(rng):
    w = rng.standard_normal((16, 64)).astype(np.float16).view(np.uint8)
    g = K.MatmulGraph([(int(QT.F16), 64, w)], 2, True, 1)
    assert g.n_kernel_ops == 0
    with pytest.raises(ValueError, match="no kernel"):
        K.matmul(int(QT.F16), 64, w, np.zeros((1, 64), np.float32), "portable")


# ---- real tensors of both models ------------------------------------------------------------------

def model_matrices(path, max_rows=96):
    """One tensor per (type, shape) of the model's matrices, the first max_rows rows of each."""
    seen, out = set(), []
    for t in GGUFReader(str(path)).tensors:
        qt = QT(t.tensor_type)
        if qt not in TYPES or len(t.shape) != 2:
            continue
        n = int(t.shape[0])
        if (qt, n) in seen:
            continue
        seen.add((qt, n))
        rows = t.data[:max_rows]  # [rows, row_bytes] view of the file
        out.append((t.name, qt, n, np.ascontiguousarray(rows, dtype=np.uint8).reshape(len(rows), -1)))
    return out


@pytest.fixture(scope="module", params=["smollm", "qwen"])
def real_matrices(request):
    from kangaroo_edge.models import default_model_path, qwen_coder_path
    path = default_model_path() if request.param == "smollm" else qwen_coder_path()
    return model_matrices(path)


@needs_ggml_avx2
def test_real_tensors_bit_exact_against_ggml_and_across_batches(real_matrices, rng):
    assert real_matrices
    for name, qtype, n, w in real_matrices:
        pool = rng.standard_normal((K.MAX_ROWS, n)).astype(np.float32)
        ref = ggml_rows_one_by_one(qtype, w, pool)
        for isa in K.isas():
            np.testing.assert_array_equal(matmul(qtype, w, pool, isa), ref, err_msg=f"{name} {isa}")
        for k in (1, 2, 3, 5, 8, 13):
            pick = rng.choice(len(pool), size=k, replace=False)
            np.testing.assert_array_equal(matmul(qtype, w, pool[pick]), ref[pick], err_msg=f"{name} k={k}")


def test_weights_in_ggmls_repacking_buffer_stay_with_ggml(rng):
    """Repacked weights (CPU_REPACK: Q4_0, Q4_K on AVX2 CPUs) are in a layout the kernels cannot
    read: the op leaves them to ggml's mul_mat, whatever the CPU repacks."""
    cases = [(int(t), 512, random_weights(t, 64, 512, rng)) for t in (QT.Q4_0, QT.Q4_K, QT.Q4_1)]
    g = K.MatmulGraph(cases, 4, True, 1, repack=True)
    assert g.n_kernel_ops == len(cases) - g.n_repacked
    x = [rng.standard_normal((4, 512)).astype(np.float32) for _ in cases]
    for i, xi in enumerate(x):
        g.set_input(i, xi)
    g.compute()
    for i, (qtype, n, w) in enumerate(cases):
        exact = x[i].astype(np.float64) @ dequantize(w, QT(qtype)).reshape(64, n).astype(np.float64).T
        assert (np.abs(g.output(i) - exact) <= error_bound(QT(qtype), w, x[i])).all()
