#include "row_exactness.h"

#include <cstring>
#include <random>
#include <vector>

#include "error.h"

namespace ke {

namespace {
// Batch sizes a verification uses most (a cycle verifies up to gamma rows; 8 covers the tile
// widths of ggml's CPU kernels: 4-row repacked gemm, tinyBLAS's 1..4-column tiles).
constexpr int MAX_PROBE_ROWS = 8;
}  // namespace

bool mul_mat_rows_exact(ggml_backend_t backend, ggml_tensor * w) {
    const int64_t n_in = w->ne[0], n_out = w->ne[1];
    const int n_graph_tensors = 4 * MAX_PROBE_ROWS;
    ggml_init_params params = {ggml_tensor_overhead() * n_graph_tensors + ggml_graph_overhead(), nullptr, true};
    ggml_context * ctx = ggml_init(params);
    if (!ctx) throw EngineError("cannot allocate a context to probe the matrix kernels");
    ggml_cgraph * gf = ggml_new_graph(ctx);
    // singles[r] = w row_r alone; batches[k] = w [row_0 .. row_{k-1}] for k = 2..MAX_PROBE_ROWS
    std::vector<ggml_tensor *> in_single, out_single, in_batch, out_batch;
    for (int k = 1; k <= MAX_PROBE_ROWS; ++k) {
        ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_in, 1);  // [n_in, 1]
        in_single.push_back(x);
        out_single.push_back(ggml_mul_mat(ctx, w, x));                      // [n_out, 1]
        ggml_build_forward_expand(gf, out_single.back());
        if (k == 1) continue;
        ggml_tensor * xb = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_in, k);  // [n_in, k]
        in_batch.push_back(xb);
        out_batch.push_back(ggml_mul_mat(ctx, w, xb));                       // [n_out, k]
        ggml_build_forward_expand(gf, out_batch.back());
    }
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, backend);
    if (!buf) {
        ggml_free(ctx);
        throw EngineError("cannot allocate memory to probe the matrix kernels");
    }
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> rows((size_t) n_in * MAX_PROBE_ROWS);  // [MAX_PROBE_ROWS, n_in]
    for (float & v : rows) v = u(rng);
    for (int r = 0; r < MAX_PROBE_ROWS; ++r) {
        ggml_backend_tensor_set(in_single[r], &rows[(size_t) r * n_in], 0, n_in * sizeof(float));
    }
    for (ggml_tensor * xb : in_batch) ggml_backend_tensor_set(xb, rows.data(), 0, ggml_nbytes(xb));

    const bool computed = ggml_backend_graph_compute(backend, gf) == GGML_STATUS_SUCCESS;
    bool exact = computed;
    std::vector<float> single((size_t) n_out * MAX_PROBE_ROWS), batch;
    for (int r = 0; r < MAX_PROBE_ROWS; ++r) {
        ggml_backend_tensor_get(out_single[r], &single[(size_t) r * n_out], 0, n_out * sizeof(float));
    }
    for (size_t b = 0; exact && b < out_batch.size(); ++b) {
        batch.resize(ggml_nelements(out_batch[b]));
        ggml_backend_tensor_get(out_batch[b], batch.data(), 0, batch.size() * sizeof(float));
        exact = std::memcmp(batch.data(), single.data(), batch.size() * sizeof(float)) == 0;
    }
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    if (!computed) throw EngineError("probing the matrix kernels failed");
    return exact;
}

}  // namespace ke
