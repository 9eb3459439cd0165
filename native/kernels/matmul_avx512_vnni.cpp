// AVX-512 VNNI path: the AVX-512 path with vpdpbusd for the byte products (x86_tiles.h). A
// translation unit of its own, so that no VNNI instruction reaches a CPU without it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include <immintrin.h>

#include "isa_entry.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#endif

namespace ke::kernels {

namespace {

#define KE_TILES_AVX512 1
#define KE_TILES_VNNI 1
#include "x86_tiles.h"

}  // namespace

void matmul_avx512_vnni(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                        const QuantizedRows & a, float * out, int64_t ldo) {
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, Avx512Pass{});
}

}  // namespace ke::kernels

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
