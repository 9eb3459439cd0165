// Writing V into its transposed cache as one ggml custom op. ggml's set_rows, which llama.cpp
// uses for this, takes each value as a row of its own (one index lookup, one bounds check and one
// call of the conversion per value: 3% of a plain step's CPU time on the default model, a tenth of
// what a second verification row adds); this converts the step's values with the same ggml
// function in one call per thread and scatters them.
#pragma once

#include "ggml.h"

namespace ke::kernels {

// dst[idxs[i]] = values[i] in dst's type, for contiguous tensors: dst F16 or F32, values F32, idxs
// I64 of the same count (scatter_takes). ggml_set_rows(dst, values, idxs) for rows of one value,
// with the same bits. In place: returns a view of dst to expand into the graph.
bool scatter_takes(const ggml_tensor * dst, const ggml_tensor * values, const ggml_tensor * idxs);
ggml_tensor * scatter_op(ggml_context * ctx, ggml_tensor * dst, ggml_tensor * values, ggml_tensor * idxs);

}  // namespace ke::kernels
