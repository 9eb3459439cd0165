// AVX-512 VNNI path: the AVX-512 path with vpdpbusd for the byte products (x86_tiles.h). A
// translation unit of its own, so that no VNNI instruction reaches a CPU without it.
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
#include "x86_groups.h"
#include "x86_few.h"

// Where the 16-lane groups (x86_groups.h) beat the weight-row pairs: SmolLM2's layer shapes
// (16 MB of weights streamed, one thread) on a Zen 5, groups / pairs ns per block and row: Q4_1
// k = 4 0.68 / 0.62, 6 0.63 / 0.71, 8 0.48 / 0.68, 16 0.40 / 0.58; Q8_0 k = 4 0.69-0.79 / 0.64,
// 8 0.51 / 0.77, 16 0.54 / 0.67; Q4_0, Q5_0 k = 4 0.63-0.73 / 0.77-0.81, k = 3 lose for all.
// With fewer rows, decoding each block into the buffer costs more than the groups save.
bool groups_pay(ggml_type type, int k) {
    return k >= 5 || (k == 4 && (type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q5_0));
}

// Where the few-row tiles (x86_few.h, 256-bit vpdpbusd) beat the weight-row pairs and the groups:
// SmolLM2's layer shapes on the Zen 5, few / before ns per block and row: Q4_1 k = 2 0.66 / 0.75,
// 3 0.70 / 0.69, 4 0.60 / 0.67, 5 0.59 / 0.78, 6 0.54 / 0.65; Q8_0 k = 2 0.69 / 0.79,
// 3 0.66 / 0.76, 4 0.66 / 0.70, 5 0.66 / 0.77, 6 0.63 / 0.66.
// Q4_0, Q5_0, Q5_1: not measured here (the weight-row pairs and the groups keep them).
bool few_pay(ggml_type type, int k) { return type == GGML_TYPE_Q8_0 || (type == GGML_TYPE_Q4_1 && k != 3); }

}  // namespace

void matmul_avx512_vnni(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                        const QuantizedRows & a, float * out, int64_t ldo) {
    if (few_pay(type, a.k) && run_few_any(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    if (groups_pay(type, a.k) && run_groups_z16(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, Avx512Pass{});
}

}  // namespace ke::kernels

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif  // KE_KERNELS_X86
