// AVX-512 (F, BW, VL) path (x86_tiles.h's Avx512Pass). Compiled for those instructions by target
// pragmas and entered only when the CPU reports them (dispatch.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "isa_entry.h"

// x86 only: elsewhere (ARM) this file compiles to nothing and dispatch.cpp never names it
#ifdef KE_KERNELS_X86

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#endif

namespace ke::kernels {

namespace {

#define KE_TILES_AVX512 1
#include "x86_tiles.h"

}  // namespace

void matmul_avx512(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                   const QuantizedRows & a, float * out, int64_t ldo) {
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, Avx512Pass{});
}

}  // namespace ke::kernels

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif  // KE_KERNELS_X86
