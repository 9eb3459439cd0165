// AVX2 + FMA + F16C path. Compiled for those instructions by target pragmas (not by the build's
// -march), and entered only when the CPU reports them (dispatch.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
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
#include "x86_lanes.h"

// Unsigned types (Q4_1, Q5_1) take the 8-row lane tiles (x86_lanes.h) where the rows fill (or
// nearly fill) their registers: SmolLM2's Q4_1 layer shapes on a Zen 5 (KE_KERNEL_ISA=avx2), one
// thread: k = 8 19.2 vs 22.5 ms, k = 16 41.6 vs 49.0; k = 10..12 lose (two 8-row groups cost
// as 16 rows). Signed types pay the sign trick's extra operations there and stay with the
// one-row packs (Q8_0: 24.9 vs 25.1 ms at 8 rows, 55 vs 51 at 16).
bool lanes_pay(ggml_type type, int k) {
    return (type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1) && (k == 8 || k >= 14);
}

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
    if (lanes_pay(type, a.k) && run_lanes_any<RowsY, 1>(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, Avx2Pass{});
}

}  // namespace ke::kernels

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
