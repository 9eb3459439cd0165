// Quantized weight x activation-rows products for small batches (k = 1..MAX_ROWS rows) that
// decode each weight block once and apply it to every row.
//
// Exactness: every output is computed with the arithmetic of ggml's AVX2 `vec_dot` for one
// activation row (the same integer lane sums, the same 8 float lanes accumulated with FMA in block
// order, the same final horizontal sum), so it is bit-identical to ggml's single-row result on an
// x86 build of ggml, and independent of k and of the other rows in the batch. The portable, AVX2,
// AVX-VNNI, AVX-512 and AVX-512 VNNI paths perform that same arithmetic and agree bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "blocks.h"
#include "ggml.h"

namespace ke::kernels {

// AvxVnni: the AVX2 path with AVX-VNNI's 256-bit vpdpbusd (VEX), what Intel's laptop cores since
// Alder Lake have in place of AVX-512.
enum class Isa { Portable = 0, Avx2 = 1, AvxVnni = 2, Avx512 = 3, Avx512Vnni = 4 };
// Every path, slowest first: the one list that dispatch, the bindings and the tests go by.
inline constexpr Isa ALL_ISAS[] = {Isa::Portable, Isa::Avx2, Isa::AvxVnni, Isa::Avx512, Isa::Avx512Vnni};
const char * isa_name(Isa isa);
// Whether this CPU runs `isa` (checked once from cpuid; the portable path always).
bool isa_available(Isa isa);
// The fastest available path; KE_KERNEL_ISA=portable|avx2|avxvnni|avx512|avx512vnni in the environment lowers it
// (for tests and measurements; a path the CPU lacks is never chosen). KE_KERNEL_ISA=none (or
// portable) acts as a CPU without a SIMD path of ours (ARM, x86 without AVX2): the engine's graphs
// then take ggml's kernels (mul_mat_op.h: enabled()); the portable path serves only the tests.
Isa best_isa();

// Weight types the kernels multiply (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K).
bool type_supported(ggml_type type);
// The quantization ggml gives the activations for weights of `type` (its vec_dot_type).
ggml_type activation_type(ggml_type type);

// Quantizes k rows of n floats (row r at x + r * row_stride floats) as ggml does for weights of
// `type`, into `out` (reused across calls: it only grows).
void quantize_rows(ggml_type type, const float * x, int k, int64_t n, int64_t row_stride, QuantizedRows & out);

// out[r * ldo + i] = (row i of w) . (activation row r), for weight rows i in [i0, i1) and all
// a.k rows. w: rows of a.n elements of `type`, row i at w + i * row_bytes.
void matmul(Isa isa, ggml_type type, const void * w, size_t row_bytes, int64_t i0, int64_t i1,
            const QuantizedRows & a, float * out, int64_t ldo);

}  // namespace ke::kernels
