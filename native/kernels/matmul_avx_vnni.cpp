// AVX-VNNI path: the AVX2 path with the 256-bit vpdpbusd (VEX) for the byte products, for CPUs
// with AVX-VNNI and no AVX-512 (Intel's laptop cores since Alder Lake). A translation unit of its
// own, so that no VNNI instruction reaches a CPU without it.
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
#include "x86_ymm.h"

}  // namespace

void matmul_avx_vnni(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
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
