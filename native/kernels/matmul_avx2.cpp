// AVX2 + FMA + F16C path. Compiled for those instructions by target pragmas (not by the build's
// -march), and entered only when the CPU reports them (dispatch.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include <type_traits>
#include <utility>

#include "isa_entry.h"

// x86 only: elsewhere (ARM) this file compiles to nothing and dispatch.cpp never names it
#ifdef KE_KERNELS_X86

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace ke::kernels {

namespace {

#include "x86_tiles.h"
#include "x86_groups.h"
#include "x86_few.h"
#include "x86_ymm.h"

}  // namespace

void matmul_avx2(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                 const QuantizedRows & a, float * out, int64_t ldo) {
    run_ymm(type, w, row_bytes, i0, i1, a, out, ldo);
}

}  // namespace ke::kernels

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif  // KE_KERNELS_X86
