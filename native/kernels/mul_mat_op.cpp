#include "mul_mat_op.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "matmul.h"

namespace ke::kernels {

namespace {

// Output rows per thread are multiples of this: whole cache lines of output per thread.
constexpr int64_t ROW_ALIGN = 16;

void compute(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * w = dst->src[0];  // [n, m]
    const ggml_tensor * x = dst->src[1];  // [n, k] F32
    const int64_t n = w->ne[0], m = w->ne[1];
    const int k = (int) x->ne[1];
    const int64_t stride = (int64_t) (x->nb[1] / sizeof(float));
    const int64_t per = ((m + nth - 1) / nth + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN;
    const int64_t i0 = std::min(m, per * ith), i1 = std::min(m, i0 + per);
    if (i0 >= i1) return;
    thread_local QuantizedRows rows;
    // MAX_ROWS activation rows per pass over this thread's weight rows (a prompt's batch: several passes)
    for (int r0 = 0; r0 < k; r0 += MAX_ROWS) {
        const int kr = std::min(MAX_ROWS, k - r0);
        quantize_rows(w->type, (const float *) x->data + r0 * stride, kr, n, stride, rows);
        matmul(best_isa(), w->type, w->data, w->nb[1], i0, i1, rows, (float *) dst->data + (int64_t) r0 * m, m);
    }
}

}  // namespace

bool op_takes(const ggml_tensor * w, const ggml_tensor * x) {
    if (!type_supported(w->type) || !w->buffer || !w->data) return false;
    if (ggml_backend_buffer_get_type(w->buffer) != ggml_backend_cpu_buffer_type()) return false;
    const int64_t block = ggml_blck_size(activation_type(w->type));
    return w->ne[0] % block == 0 && w->ne[2] == 1 && w->ne[3] == 1 && ggml_is_contiguous(w) &&
           x->type == GGML_TYPE_F32 && x->ne[0] == w->ne[0] && x->ne[1] >= 1 &&
           x->ne[2] == 1 && x->ne[3] == 1 && x->nb[0] == sizeof(float) && x->nb[1] % sizeof(float) == 0;
}

ggml_tensor * mul_mat_op(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
    ggml_tensor * args[2] = {w, x};
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, compute,
                                       GGML_N_TASKS_MAX, nullptr);
    ggml_format_name(out, "ke_mul_mat(%s)", w->name);
    return out;
}

bool enabled() {
    static const bool on = [] {
        const char * env = std::getenv("KE_KERNELS");
        return !(env && std::string(env) == "0") && has_simd_path();
    }();
    return on;
}

bool has_simd_path() { return best_isa() != Isa::Portable; }

bool ggml_batch_is_row_by_row(ggml_type type) {
    // ggml-cpu 0.25.3 on x86: no tinyBLAS (llamafile_sgemm) or repacked kernel for these types,
    // so a batch is one vec_dot per output row, the bits of a one-row product
    return ggml_single_row_matches() && (type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1);
}

bool ggml_single_row_matches() {
#if defined(__x86_64__) || defined(_M_X64)
    return ggml_cpu_has_avx2() && ggml_cpu_has_fma() && ggml_cpu_has_f16c();
#else
    return false;
#endif
}

std::string path_for(ggml_type type, const std::string & buffer_type_name, bool plain_cpu) {
    if (!type_supported(type)) return "ggml mul_mat (no kernel for this type)";
    if (!plain_cpu) return "ggml mul_mat (weights in " + buffer_type_name + ")";
    if (!has_simd_path()) {
        return "ggml mul_mat (no SIMD kernel path of ours on this CPU; verification row by row where ggml's "
               "batched rows differ from one-row ones)";
    }
    if (!enabled()) return "ggml mul_mat (KE_KERNELS=0)";
    return std::string("kernels (") + isa_name(best_isa()) + ")";
}

}  // namespace ke::kernels
