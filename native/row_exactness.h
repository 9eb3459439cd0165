// Whether ggml computes each row of a small batch exactly as it computes that row alone, for one
// weight in its buffer. Which kernel ggml picks (vec_dot, tinyBLAS tiles, repacked gemm/gemv)
// depends on the type, the buffer, the batch size and the CPU, and some of them round a batch
// differently from a single row; so this is measured on the machine, not assumed.
#pragma once

#include "ggml-backend.h"

namespace ke {

// Multiplies `w` by batches of 1..MAX_PROBE_ROWS activation rows on `backend` and compares each
// batched row with the one-row product, bit for bit.
bool mul_mat_rows_exact(ggml_backend_t backend, ggml_tensor * w);

}  // namespace ke
