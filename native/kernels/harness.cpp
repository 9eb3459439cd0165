#include "harness.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "../backend.h"
#include "../error.h"
#include "ggml-alloc.h"
#include "ggml-cpu.h"
#include "cache_writes.h"
#include "mul_mat_op.h"

namespace ke::kernels {

namespace {

// The CPU's first repacking buffer type (CPU_REPACK), or null when this ggml has none.
ggml_backend_buffer_type_t repack_buffer_type() {
    const auto types = cpu_repacking_buffer_types(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU));
    return types.empty() ? nullptr : types.front();
}

// Whether the CPU device multiplies by a weight like c when it lives in a buffer of type buft (as
// Backends asks at load time).
bool cpu_takes(const MatmulCase & c, ggml_backend_buffer_type_t buft, int k) {
    ggml_init_params params = {ggml_tensor_overhead() * 4, nullptr, true};
    ggml_context * ctx = ggml_init(params);
    ggml_tensor * w = ggml_new_tensor_2d(ctx, c.type, c.n, c.m);
    ggml_tensor * op = ggml_mul_mat(ctx, w, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], k));
    w->buffer = ggml_backend_buft_alloc_buffer(buft, 0);
    const bool ok = ggml_backend_dev_supports_op(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU), op);
    ggml_backend_buffer_free(w->buffer);
    w->buffer = nullptr;
    ggml_free(ctx);
    return ok;
}

}  // namespace

MatmulGraph::MatmulGraph(const std::vector<MatmulCase> & cases, int k, bool use_kernels, int n_threads, bool repack) {
    const size_t n_tensors = 3 * cases.size() + 8;
    ggml_init_params params = {ggml_tensor_overhead() * n_tensors + ggml_graph_overhead_custom(n_tensors, false),
                               nullptr, true};
    ctx_ = ggml_init(params);
    ggml_init_params repack_params = {ggml_tensor_overhead() * (cases.size() + 1), nullptr, true};
    repack_ctx_ = ggml_init(repack_params);
    ggml_backend_buffer_type_t repack_buft = repack ? repack_buffer_type() : nullptr;
    std::vector<ggml_tensor *> weights;
    for (const MatmulCase & c : cases) {
        if (repack_buft && cpu_takes(c, repack_buft, 512)) {
            weights.push_back(ggml_new_tensor_2d(repack_ctx_, c.type, c.n, c.m));
            ++n_repacked_;
        } else {
            weights.push_back(ggml_new_tensor_2d(ctx_, c.type, c.n, c.m));
        }
        inputs_.push_back(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, c.n, k));
        ggml_set_input(inputs_.back());
    }
    weights_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_, ggml_backend_cpu_buffer_type());
    if (!weights_) throw EngineError("cannot allocate the weights of the matmul graph");
    if (n_repacked_ > 0) {
        repacked_ = ggml_backend_alloc_ctx_tensors_from_buft(repack_ctx_, repack_buft);
        if (!repacked_) throw EngineError("cannot allocate the repacked weights of the matmul graph");
        ggml_backend_buffer_set_usage(repacked_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    }
    for (size_t i = 0; i < cases.size(); ++i) ggml_backend_tensor_set(weights[i], cases[i].data, 0, ggml_nbytes(weights[i]));

    graph_ = ggml_new_graph_custom(ctx_, n_tensors, false);
    for (size_t i = 0; i < cases.size(); ++i) {
        ggml_tensor * y;
        if (use_kernels && op_takes(weights[i], inputs_[i])) {
            y = mul_mat_op(ctx_, weights[i], inputs_[i]);
            ++n_kernel_ops_;
        } else {
            y = ggml_mul_mat(ctx_, weights[i], inputs_[i]);
        }
        ggml_set_output(y);
        ggml_build_forward_expand(graph_, y);
        outputs_.push_back(y);
    }
    backend_ = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend_, n_threads);
    alloc_ = ggml_gallocr_new(ggml_backend_cpu_buffer_type());
    if (!ggml_gallocr_alloc_graph(alloc_, graph_)) throw EngineError("cannot allocate the matmul graph");
}

MatmulGraph::~MatmulGraph() {
    if (alloc_) ggml_gallocr_free(alloc_);
    if (backend_) ggml_backend_free(backend_);
    if (weights_) ggml_backend_buffer_free(weights_);
    if (repacked_) ggml_backend_buffer_free(repacked_);
    if (ctx_) ggml_free(ctx_);
    if (repack_ctx_) ggml_free(repack_ctx_);
}

void MatmulGraph::set_input(size_t i, const float * x) { ggml_backend_tensor_set(inputs_.at(i), x, 0, ggml_nbytes(inputs_[i])); }

void MatmulGraph::compute() {
    if (ggml_backend_graph_compute(backend_, graph_) != GGML_STATUS_SUCCESS) throw EngineError("matmul graph failed");
}

void MatmulGraph::get_output(size_t i, float * out) const {
    ggml_backend_tensor_get(outputs_.at(i), out, 0, ggml_nbytes(outputs_[i]));
}

size_t MatmulGraph::weight_bytes() const {
    return ggml_backend_buffer_get_size(weights_) + (repacked_ ? ggml_backend_buffer_get_size(repacked_) : 0);
}

std::vector<uint16_t> scatter_in_graph(const std::vector<float> & values, const std::vector<int64_t> & idxs,
                                       int64_t dst_size, bool use_op, int n_threads) {
    ggml_init_params params = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
    ggml_context * ctx = ggml_init(params);
    if (!ctx) throw EngineError("cannot allocate a context for the scatter graph");
    ggml_tensor * dst = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, 1, dst_size);
    ggml_tensor * v = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 1, (int64_t) values.size());
    ggml_tensor * at = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, (int64_t) idxs.size());
    ggml_tensor * out = use_op ? scatter_op(ctx, dst, v, at) : ggml_set_rows(ctx, dst, v, at);
    ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, n_threads);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, backend);
    if (!buf) {
        ggml_backend_free(backend);
        ggml_free(ctx);
        throw EngineError("cannot allocate memory for the scatter graph");
    }
    ggml_backend_buffer_clear(buf, 0);
    ggml_backend_tensor_set(v, values.data(), 0, ggml_nbytes(v));
    ggml_backend_tensor_set(at, idxs.data(), 0, ggml_nbytes(at));
    const bool ok = ggml_backend_graph_compute(backend, gf) == GGML_STATUS_SUCCESS;
    std::vector<uint16_t> result((size_t) dst_size);
    ggml_backend_tensor_get(dst, result.data(), 0, ggml_nbytes(dst));
    ggml_backend_buffer_free(buf);
    ggml_backend_free(backend);
    ggml_free(ctx);
    if (!ok) throw EngineError("scatter graph failed");
    return result;
}

double read_bandwidth(size_t bytes, int n_threads, int reps) {
    const size_t n = bytes / sizeof(uint64_t);
    std::vector<uint64_t> buf(n, 1);
    std::vector<uint64_t> sums(n_threads);
    std::vector<double> rates;
    for (int rep = 0; rep < reps; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<std::thread> threads;
        for (int t = 0; t < n_threads; ++t) {
            threads.emplace_back([&, t] {
                const size_t a = n * t / n_threads, b = n * (t + 1) / n_threads;
                uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                for (size_t i = a; i + 4 <= b; i += 4) {
                    s0 += buf[i];
                    s1 += buf[i + 1];
                    s2 += buf[i + 2];
                    s3 += buf[i + 3];
                }
                sums[t] = s0 + s1 + s2 + s3;
            });
        }
        for (auto & th : threads) th.join();
        rates.push_back((double) bytes / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(rates.begin(), rates.end());
    return rates[rates.size() / 2];
}

}  // namespace ke::kernels
