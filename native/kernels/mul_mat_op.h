// Our small-batch kernels as a ggml custom op inside the CPU graphs.
#pragma once

#include <string>

#include "ggml.h"

namespace ke::kernels {

// Whether the kernels multiply by weight w for activations x: a supported type in plain CPU memory
// (not a repacked or GPU buffer: ggml keeps those), whole blocks per row, and an F32 x (any number
// of rows: MAX_ROWS per pass over the weights).
bool op_takes(const ggml_tensor * w, const ggml_tensor * x);

// w x with our kernels: w [n, m] (weights), x [n, k] F32 (rows may be strided) -> [m, k] F32.
// The output rows are split across ggml's threads; each thread quantizes x itself (no barrier).
ggml_tensor * mul_mat_op(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// Whether graphs use the kernels at all: where a SIMD path of ours runs (has_simd_path), unless
// KE_KERNELS=0 (for comparisons). Elsewhere ggml's own kernels are faster than our portable C++:
// one-row steps and verification take ggml's mul_mat, and the row-exactness probe
// (row_exactness.h) decides which weights verification multiplies row by row.
bool enabled();

// Whether this CPU has a SIMD path of ours (AVX2 or better, not lowered by KE_KERNEL_ISA=none).
bool has_simd_path();

// Whether ggml's own one-row mul_mat gives our kernels' bits: an x86 ggml-cpu built with AVX2, FMA
// and F16C, whose single-row vec_dot arithmetic the kernels reproduce (so that our plain decoding
// equals llama.cpp's there, and the tests compare the kernels against ggml bit for bit).
bool ggml_single_row_matches();

// Whether ggml multiplies a batch of any size by a weight of this type one output row at a time
// with its one-row arithmetic: then our kernels give a prompt's batch ggml's (llama.cpp's) bits.
bool ggml_batch_is_row_by_row(ggml_type type);

// For `info`: the path a CPU weight of `type` takes for one-row steps and verification batches (up to MAX_ROWS
// rows), e.g. "kernels (avx2)", "ggml mul_mat (weights in CPU_REPACK)", "ggml mul_mat (no kernel
// for this type)".
std::string path_for(ggml_type type, const std::string & buffer_type_name, bool plain_cpu);

}  // namespace ke::kernels
