// AVX-VNNI path: the AVX2 path with the 256-bit vpdpbusd (VEX) for the byte products, for CPUs
// with AVX-VNNI and no AVX-512 (Intel's laptop cores since Alder Lake). A translation unit of its
// own, so that no VNNI instruction reaches a CPU without it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#include <type_traits>
#include <utility>

#include <immintrin.h>

#include "isa_entry.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avxvnni"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#endif

namespace ke::kernels {

namespace {

#define KE_TILES_VNNI 1
#include "x86_tiles.h"
#include "x86_groups.h"
#include "x86_few.h"

bool groups_pay(ggml_type type, int k) {
    const bool unsigned_type = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    return k == 7 || k == 8 || k >= 14 || (unsigned_type && k == 4);
}

struct AvxVnniPass {
    template <class T>
    void run(int nr, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, int r0,
             float * out, int64_t ldo) const {
        run_packs<T, Ymm>(nr, w, row_bytes, i0, i1, a, r0, out, ldo);
    }
};

}  // namespace

void matmul_avx_vnni(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                     const QuantizedRows & a, float * out, int64_t ldo) {
    if (run_few_any(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    if (groups_pay(type, a.k) && run_groups_y8<8>(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, AvxVnniPass{});
}

}  // namespace ke::kernels

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
