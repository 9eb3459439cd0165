// Compute devices picked through the ggml backend registry: a GPU when the linked ggml has one
// (CUDA, Metal, ...) and the CPU, which is always there and takes whatever the GPU cannot run.
#pragma once

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "ggml-backend.h"

namespace ke {

// The CPU device's repacking buffer types (CPU_REPACK and the like: weights converted at load
// time for ggml's faster quantized kernels), in ggml's order of preference, without ggml's AMX
// type: its tiles raise SIGILL in the ggml of llama-cpp-python 0.3.36 on AMX CPUs (Xeon Sapphire
// Rapids and later; the tile configuration it loads is left invalid, llama.cpp PR 26954), and a
// llama-cpp-python built natively on such a CPU offers it first.
std::vector<ggml_backend_buffer_type_t> cpu_repacking_buffer_types(ggml_backend_dev_t cpu_dev);

class Backends {
public:
    // device: "auto" (GPU if the ggml build has one, else CPU), "cpu" or "gpu".
    Backends(const std::string & device, int n_threads);
    ~Backends();
    Backends(const Backends &) = delete;
    Backends & operator=(const Backends &) = delete;

    void set_n_threads(int n_threads);
    int n_threads() const { return n_threads_; }
    bool uses_gpu() const { return gpu_ != nullptr; }
    std::string description() const;  // e.g. "CPU (2 threads)"

    // Backends in scheduling priority (GPU first, CPU last) and their buffer types.
    std::vector<ggml_backend_t> & list() { return list_; }
    std::vector<ggml_backend_buffer_type_t> & buffer_types() { return bufts_; }

    // Where the KV cache and activations live: the GPU if there is one.
    ggml_backend_buffer_type_t main_buffer_type() const;
    // The first buffer type that can hold weight `w` when it feeds `op` (MUL_MAT or GET_ROWS):
    // the GPU, then the CPU's repacking types (faster quantized kernels), then plain CPU memory.
    ggml_backend_buffer_type_t weight_buffer_type(ggml_tensor * w, ggml_op op) const;
    // Whether ggml multiplies a batch by the loaded weight `w` exactly as it multiplies each row
    // alone: measured once per buffer type, weight type and shape on this machine (row_exactness.h).
    // Not so for some: Q4_K's repacked gemm (logits up to 0.6 apart from its gemv on SmolLM2
    // requantized to Q4_K), and kernels that differ between CPUs.
    bool rows_exact_in_batch(const ggml_tensor * w) const;

private:
    bool supports(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft, ggml_tensor * w, ggml_op op) const;

    ggml_backend_t cpu_ = nullptr;
    ggml_backend_t gpu_ = nullptr;
    ggml_backend_dev_t cpu_dev_ = nullptr;
    ggml_backend_dev_t gpu_dev_ = nullptr;
    std::vector<ggml_backend_t> list_;
    std::vector<ggml_backend_buffer_type_t> bufts_;
    std::vector<ggml_backend_buffer_type_t> cpu_extra_bufts_;
    int n_threads_ = 1;
    mutable std::map<std::tuple<ggml_backend_buffer_type_t, ggml_type, int64_t, int64_t>, bool> rows_exact_;
};

}  // namespace ke
