// AVX-512 VNNI path: the AVX-512 path with vpdpbusd for the byte products (x86_tiles.h). A
// translation unit of its own, so that no VNNI instruction reaches a CPU without it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
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
#include "x86_lanes.h"

// From this many rows the 16-row lane tiles (x86_lanes.h) beat the row-pair packs: SmolLM2's
// layer shapes on a Zen 5, one thread, k = 16: Q4_1 35.6 vs 43.5 ms, Q8_0 39.7 vs 45.3; at 12
// rows they lose (32.5 vs 30.8 ms), at 13 they tie, and 8-row lanes in 256-bit registers tie the
// packs at k = 5..8 (18.8 vs 19.8 ms at 8).
constexpr int LANES_MIN_ROWS = 14;

}  // namespace

void matmul_avx512_vnni(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                        const QuantizedRows & a, float * out, int64_t ldo) {
    if (a.k >= LANES_MIN_ROWS && run_lanes_any<RowsZ, 2>(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, Avx512Pass{});
}

}  // namespace ke::kernels

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
