// A stand-alone ggml graph of weight x activation products, for the kernel tests and
// benchmarks: the same weights multiplied by ggml's mul_mat or by our custom op, in one process.
#pragma once

#include <cstdint>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"

namespace ke::kernels {

struct MatmulCase {
    ggml_type type;
    int64_t n, m;        // row length and number of rows of the weight
    const void * data;   // m rows in ggml's layout (copied into the graph's own weight buffer)
};

class MatmulGraph {
public:
    // One product per case against its own F32 input of k rows; use_kernels picks our op (for the
    // cases it takes) or ggml_mul_mat for all. repack: weights that ggml's CPU_REPACK buffer takes
    // go there (ggml's repacked kernels, as llama.cpp loads them; our op never takes those).
    MatmulGraph(const std::vector<MatmulCase> & cases, int k, bool use_kernels, int n_threads, bool repack = false);
    ~MatmulGraph();
    MatmulGraph(const MatmulGraph &) = delete;
    MatmulGraph & operator=(const MatmulGraph &) = delete;

    void set_input(size_t i, const float * x);  // x [k, n] row-major
    void compute();
    void get_output(size_t i, float * out) const;  // [k, m] row-major
    size_t weight_bytes() const;
    int n_kernel_ops() const { return n_kernel_ops_; }
    int n_repacked() const { return n_repacked_; }

private:
    ggml_context * ctx_ = nullptr;
    ggml_backend_t backend_ = nullptr;
    ggml_context * repack_ctx_ = nullptr;  // the weights placed in the repacking buffer
    ggml_backend_buffer_t weights_ = nullptr, repacked_ = nullptr;
    ggml_gallocr_t alloc_ = nullptr;
    ggml_cgraph * graph_ = nullptr;
    std::vector<ggml_tensor *> inputs_, outputs_;
    int n_kernel_ops_ = 0, n_repacked_ = 0;
};

// V's cache write in a ggml graph on n_threads threads: an F16 tensor of dst_size zeros, then
// dst[idxs[i]] = values[i] by our scatter op (use_op) or by ggml's set_rows with rows of one value
// (llama.cpp's transposed-V write); returns the tensor's halves.
std::vector<uint16_t> scatter_in_graph(const std::vector<float> & values, const std::vector<int64_t> & idxs,
                                       int64_t dst_size, bool use_op, int n_threads);

// Streaming read bandwidth (bytes/s) of n_threads threads over a buffer of `bytes`: the floor a
// memory-bound multiply cannot beat. Median of `reps` passes.
double read_bandwidth(size_t bytes, int n_threads, int reps);

}  // namespace ke::kernels
