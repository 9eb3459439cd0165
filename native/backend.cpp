#include "backend.h"

#include <cstring>
#include <thread>

#include "error.h"
#include "ggml-cpu.h"
#include "row_exactness.h"

namespace ke {

namespace {

ggml_backend_dev_t find_gpu_device() {
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        const auto type = ggml_backend_dev_type(dev);
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) return dev;
    }
    return nullptr;
}

}  // namespace

std::vector<ggml_backend_buffer_type_t> cpu_repacking_buffer_types(ggml_backend_dev_t cpu_dev) {
    std::vector<ggml_backend_buffer_type_t> out;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu_dev);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(
        reg, "ggml_backend_dev_get_extra_bufts");
    if (!get_extra) return out;
    for (ggml_backend_buffer_type_t * b = get_extra(cpu_dev); b && *b; ++b) {
        if (std::strcmp(ggml_backend_buft_name(*b), "AMX") != 0) out.push_back(*b);
    }
    return out;
}

Backends::Backends(const std::string & device, int n_threads) {
    if (device != "auto" && device != "cpu" && device != "gpu") {
        throw InvalidArgument(format("device must be 'auto', 'cpu' or 'gpu', got '%s'", device.c_str()));
    }
    cpu_dev_ = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu_dev_) throw EngineError("the linked ggml has no CPU backend");
    if (device != "cpu") {
        gpu_dev_ = find_gpu_device();
        if (!gpu_dev_ && device == "gpu") {
            throw InvalidArgument("device='gpu' but the linked ggml was built without a GPU backend "
                                  "(reinstall llama-cpp-python with CMAKE_ARGS=\"-DGGML_CUDA=on\" or Metal)");
        }
    }
    if (gpu_dev_) {
        gpu_ = ggml_backend_dev_init(gpu_dev_, nullptr);
        if (!gpu_) throw EngineError(format("cannot initialise GPU device '%s'", ggml_backend_dev_name(gpu_dev_)));
        list_.push_back(gpu_);
        bufts_.push_back(ggml_backend_dev_buffer_type(gpu_dev_));
    }
    cpu_ = ggml_backend_dev_init(cpu_dev_, nullptr);
    if (!cpu_) throw EngineError("cannot initialise the CPU backend");
    list_.push_back(cpu_);
    bufts_.push_back(ggml_backend_dev_buffer_type(cpu_dev_));
    if (!gpu_) cpu_extra_bufts_ = cpu_repacking_buffer_types(cpu_dev_);
    set_n_threads(n_threads);
}

Backends::~Backends() {
    if (gpu_) ggml_backend_free(gpu_);
    if (cpu_) ggml_backend_free(cpu_);
}

void Backends::set_n_threads(int n_threads) {
    if (n_threads < 0 || n_threads > 1024) {
        throw InvalidArgument(format("n_threads must be between 1 and 1024, got %d", n_threads));
    }
    if (n_threads == 0) {
        // Physical cores are what matmuls scale with; hardware_concurrency counts hyperthreads.
        const unsigned hw = std::thread::hardware_concurrency();
        n_threads = hw == 0 ? 4 : (int) (hw > 4 ? hw / 2 : hw);
    }
    n_threads_ = n_threads;
    ggml_backend_cpu_set_n_threads(cpu_, n_threads);
}

std::string Backends::description() const {
    if (gpu_) return format("%s + CPU (%d threads)", ggml_backend_dev_description(gpu_dev_), n_threads_);
    return format("CPU (%d threads)", n_threads_);
}

ggml_backend_buffer_type_t Backends::main_buffer_type() const { return bufts_.front(); }

bool Backends::supports(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft, ggml_tensor * w, ggml_op op) const {
    // Ask the device whether it runs `op` with `w` in a buffer of type `buft`: build the op on a
    // throwaway context and give `w` a zero-size buffer of that type for the duration of the query.
    ggml_init_params params = {ggml_tensor_overhead() * 4, nullptr, true};
    ggml_context * ctx = ggml_init(params);
    ggml_tensor * op_tensor;
    if (op == GGML_OP_GET_ROWS) {
        op_tensor = ggml_get_rows(ctx, w, ggml_new_tensor_1d(ctx, GGML_TYPE_I32, 512));
    } else {
        op_tensor = ggml_mul_mat(ctx, w, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], 512));
    }
    ggml_backend_buffer_t saved = w->buffer;
    w->buffer = ggml_backend_buft_alloc_buffer(buft, 0);
    const bool ok = ggml_backend_dev_supports_op(dev, op_tensor);
    ggml_backend_buffer_free(w->buffer);
    w->buffer = saved;
    ggml_free(ctx);
    return ok;
}

bool Backends::rows_exact_in_batch(const ggml_tensor * w) const {
    if (!w->buffer || gpu_) return true;  // GPU kernels read each weight once for a small batch
    const auto key = std::make_tuple(ggml_backend_buffer_get_type(w->buffer), w->type, w->ne[0], w->ne[1]);
    auto it = rows_exact_.find(key);
    if (it == rows_exact_.end()) {
        it = rows_exact_.emplace(key, mul_mat_rows_exact(cpu_, const_cast<ggml_tensor *>(w))).first;
    }
    return it->second;
}

ggml_backend_buffer_type_t Backends::weight_buffer_type(ggml_tensor * w, ggml_op op) const {
    if (gpu_ && supports(gpu_dev_, ggml_backend_dev_buffer_type(gpu_dev_), w, op)) {
        return ggml_backend_dev_buffer_type(gpu_dev_);
    }
    if (op == GGML_OP_MUL_MAT) {
        for (auto buft : cpu_extra_bufts_) {
            if (supports(cpu_dev_, buft, w, op)) return buft;
        }
    }
    return ggml_backend_dev_buffer_type(cpu_dev_);
}

}  // namespace ke
