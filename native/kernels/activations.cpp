// Activation rows quantized by ggml's own from_float for the weights' vec_dot_type (so each row's
// int8 quants and scales are exactly those ggml's mul_mat would use), then unpacked into the
// chunk-major layout of QuantizedRows: all k rows of one 32-element chunk side by side.
#include <cstring>
#include <vector>

#include "ggml-cpu.h"
#include "matmul.h"

namespace ke::kernels {

ggml_type activation_type(ggml_type type) { return ggml_get_type_traits_cpu(type)->vec_dot_type; }

void quantize_rows(ggml_type type, const float * x, int k, int64_t n, int64_t row_stride, QuantizedRows & out) {
    const ggml_type at = activation_type(type);
    out.resize(at, k, n, at == GGML_TYPE_Q8_K, at == GGML_TYPE_Q8_1);

    thread_local std::vector<uint8_t> packed;  // one row in ggml's block layout
    packed.resize(ggml_row_size(at, n));
    const ggml_from_float_t from_float = ggml_get_type_traits_cpu(at)->from_float;
    for (int r = 0; r < k; ++r) {
        from_float(x + r * row_stride, packed.data(), n);
        for (int64_t b = 0; b < out.n_blocks; ++b) {
            const size_t slot = (size_t) (b * k + r);
            if (at == GGML_TYPE_Q8_K) {
                const BlockQ8_K & q = ((const BlockQ8_K *) packed.data())[b];
                out.d[slot] = q.d;
                std::memcpy(&out.bsums[slot * 16], q.bsums, sizeof(q.bsums));
                for (int c = 0; c < QK_K / QK; ++c) {
                    std::memcpy(&out.qs[(size_t) (((b * 8 + c) * k + r) * QK)], q.qs + c * QK, QK);
                }
            } else if (at == GGML_TYPE_Q8_1) {
                const BlockQ8_1 & q = ((const BlockQ8_1 *) packed.data())[b];
                out.d[slot] = ggml_fp16_to_fp32(q.d);
                out.s[slot] = ggml_fp16_to_fp32(q.s);
                std::memcpy(&out.qs[slot * QK], q.qs, QK);
            } else {
                const BlockQ8_0 & q = ((const BlockQ8_0 *) packed.data())[b];
                out.d[slot] = ggml_fp16_to_fp32(q.d);
                std::memcpy(&out.qs[slot * QK], q.qs, QK);
            }
        }
    }
}

}  // namespace ke::kernels
