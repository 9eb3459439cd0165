// AVX2 + FMA + F16C path. Compiled for those instructions by target pragmas (not by the build's
// -march), and entered only when the CPU reports them (dispatch.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include <immintrin.h>

#include "isa_entry.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace ke::kernels {

namespace {

#include "x86_tiles.h"

struct Avx2Pass {
    template <class T>
    void run(int nr, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, int r0,
             float * out, int64_t ldo) const {
        run_packs<T, Ymm>(nr, w, row_bytes, i0, i1, a, r0, out, ldo);
    }
};

}  // namespace

void matmul_avx2(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                 const QuantizedRows & a, float * out, int64_t ldo) {
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, Avx2Pass{});
}

}  // namespace ke::kernels

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
