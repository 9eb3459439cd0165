// The `kangaroo_edge._native.kernels` submodule: the kernels, ggml's mul_mat on the same weights,
// and the paths a loaded model's weights take (for tests, benchmarks and `info`).
#pragma once

#include <pybind11/pybind11.h>

namespace ke {
void bind_kernels(pybind11::module_ & m);
}
