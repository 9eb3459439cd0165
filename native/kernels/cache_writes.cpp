#include "cache_writes.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ggml-cpu.h"

namespace ke::kernels {

namespace {

void scatter(ggml_tensor * dst, const ggml_tensor * a, const ggml_tensor * values, const ggml_tensor * idxs, int ith,
             int nth, void * /*userdata*/) {
    const int64_t n = ggml_nelements(values);
    const int64_t i0 = n * ith / nth, i1 = n * (ith + 1) / nth;
    const float * v = (const float *) values->data;
    const int64_t * at = (const int64_t *) idxs->data;
    if (a->type == GGML_TYPE_F16) {
        thread_local std::vector<ggml_fp16_t> halves;
        halves.resize((size_t) std::max<int64_t>(i1 - i0, 0));
        ggml_cpu_fp32_to_fp16(v + i0, halves.data(), i1 - i0);  // set_rows' conversion for F16
        ggml_fp16_t * out = (ggml_fp16_t *) dst->data;
        for (int64_t i = i0; i < i1; ++i) out[at[i]] = halves[(size_t) (i - i0)];
    } else {
        float * out = (float *) dst->data;
        for (int64_t i = i0; i < i1; ++i) out[at[i]] = v[i];
    }
}

}  // namespace

bool scatter_takes(const ggml_tensor * dst, const ggml_tensor * values, const ggml_tensor * idxs) {
    return ggml_is_contiguous(dst) && ggml_is_contiguous(values) && ggml_is_contiguous(idxs) &&
           values->type == GGML_TYPE_F32 && idxs->type == GGML_TYPE_I64 &&
           (dst->type == GGML_TYPE_F16 || dst->type == GGML_TYPE_F32) && ggml_nelements(values) == ggml_nelements(idxs);
}

ggml_tensor * scatter_op(ggml_context * ctx, ggml_tensor * dst, ggml_tensor * values, ggml_tensor * idxs) {
    return ggml_map_custom3_inplace(ctx, dst, values, idxs, scatter, GGML_N_TASKS_MAX, nullptr);
}

}  // namespace ke::kernels
