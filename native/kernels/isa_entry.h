// The per-ISA entry points behind kernels::matmul (one translation unit each, compiled for its
// instruction set with target attributes and only called after a run-time CPU check).
#pragma once

#include "blocks.h"
#include "ggml.h"

namespace ke::kernels {

using MatmulFn = void (*)(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                          const QuantizedRows & a, float * out, int64_t ldo);

void matmul_portable(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                     const QuantizedRows & a, float * out, int64_t ldo);
#if defined(__x86_64__) || defined(_M_X64)
#define KE_KERNELS_X86 1
void matmul_avx2(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                 const QuantizedRows & a, float * out, int64_t ldo);
void matmul_avx_vnni(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                     const QuantizedRows & a, float * out, int64_t ldo);
void matmul_avx512(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                   const QuantizedRows & a, float * out, int64_t ldo);
void matmul_avx512_vnni(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                        const QuantizedRows & a, float * out, int64_t ldo);
#endif

// The 6-bit scales and mins of a Q4_K/Q5_K super-block (ggml's packing of 8 + 8 values in 12 bytes).
inline void unpack_k_scales(const uint8_t * q, uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; ++j) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (uint8_t) ((q[j + 8] & 0x0F) | ((q[j] >> 6) << 4));
        mn[j + 4] = (uint8_t) ((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
}

}  // namespace ke::kernels
