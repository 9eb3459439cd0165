// Thin bindings: argument checks and array conversion only.
#include "py_kernels.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cctype>
#include <map>
#include <memory>

#include "../engine.h"
#include "../error.h"
#include "harness.h"
#include "matmul.h"
#include "mul_mat_op.h"

namespace py = pybind11;

namespace ke {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ByteArray = py::array_t<uint8_t, py::array::c_style>;

kernels::Isa parse_isa(const std::string & name) {
    for (auto isa : kernels::ALL_ISAS) {
        if (name == kernels::isa_name(isa)) {
            if (!kernels::isa_available(isa)) throw InvalidArgument("this CPU has no " + name + " path");
            return isa;
        }
    }
    std::string names;
    for (auto isa : kernels::ALL_ISAS) names += std::string(names.empty() ? "'" : ", '") + kernels::isa_name(isa) + "'";
    throw InvalidArgument("isa must be one of " + names + ", got '" + name + "'");
}

// w: uint8 [m, row_bytes] holding m weight rows of n elements of `type`; x: [k, n]
void check_case(ggml_type type, int64_t n, const ByteArray & w, const FloatArray & x, bool kernel) {
    if ((int) type < 0 || (int) type >= GGML_TYPE_COUNT || ggml_blck_size(type) == 0) {
        throw InvalidArgument("unknown ggml type " + std::to_string((int) type));
    }
    if (kernel && !kernels::type_supported(type)) throw InvalidArgument(std::string("no kernel for ") + ggml_type_name(type));
    if (n <= 0 || n % ggml_blck_size(type) != 0) throw InvalidArgument("n must be a positive multiple of the block size");
    if (w.ndim() != 2 || (size_t) w.shape(1) != ggml_row_size(type, n)) {
        throw InvalidArgument("weights must be uint8 [m, row_bytes] with row_bytes = " + std::to_string(ggml_row_size(type, n)));
    }
    if (x.ndim() != 2 || x.shape(1) != n || x.shape(0) < 1) throw InvalidArgument("x must be float32 [k, n]");
    if (kernel && x.shape(0) > kernels::MAX_ROWS) throw InvalidArgument("the kernels take at most 16 rows");
}

py::array_t<float> kernel_matmul(int type_id, int64_t n, const ByteArray & w, const FloatArray & x, const std::string & isa) {
    const ggml_type type = (ggml_type) type_id;
    check_case(type, n, w, x, true);
    const kernels::Isa path = parse_isa(isa);
    const int k = (int) x.shape(0);
    const int64_t m = w.shape(0);
    py::array_t<float> out({(py::ssize_t) k, (py::ssize_t) m});
    {
        py::gil_scoped_release release;
        kernels::QuantizedRows rows;
        kernels::quantize_rows(type, x.data(), k, n, n, rows);
        kernels::matmul(path, type, w.data(), (size_t) w.shape(1), 0, m, rows, out.mutable_data(), m);
    }
    return out;
}

// A MatmulGraph over Python-owned weight arrays (kept alive by the wrapper).
struct PyMatmulGraph {
    std::vector<ByteArray> keep;
    std::vector<int64_t> n, m;
    int k;
    std::unique_ptr<kernels::MatmulGraph> g;

    PyMatmulGraph(const std::vector<std::tuple<int, int64_t, ByteArray>> & cases, int k_, bool use_kernels, int n_threads,
                  bool repack)
        : k(k_) {
        if (k < 1) throw InvalidArgument("k must be positive");
        if (n_threads < 1) throw InvalidArgument("n_threads must be positive");
        std::vector<kernels::MatmulCase> cs;
        for (const auto & [type_id, n, w] : cases) {
            check_case((ggml_type) type_id, n, w, FloatArray({(py::ssize_t) 1, (py::ssize_t) n}), false);
            keep.push_back(w);
            this->n.push_back(n);
            m.push_back(w.shape(0));
            cs.push_back({(ggml_type) type_id, n, w.shape(0), w.data()});
        }
        g = std::make_unique<kernels::MatmulGraph>(cs, k, use_kernels, n_threads, repack);
    }
};

py::dict engine_matmul_paths(Engine & e) {
    std::map<std::string, std::string> paths;
    auto add = [&](const ggml_tensor * w) {
        if (!w) return;
        std::string path;
        if (e.backends().uses_gpu()) {
            path = "ggml mul_mat (GPU backend)";
        } else {
            const ggml_backend_buffer_type_t buft = ggml_backend_buffer_get_type(w->buffer);
            path = kernels::path_for(w->type, ggml_backend_buft_name(buft), buft == ggml_backend_cpu_buffer_type());
        }
        std::string name = ggml_type_name(w->type);  // as gguf names it (the info's tensor types)
        for (char & c : name) c = (char) std::toupper((unsigned char) c);
        std::string & slot = paths[name];
        if (slot.empty()) slot = path;
        else if (slot.find(path) == std::string::npos) slot += "; " + path;
    };
    for (const LayerWeights & L : e.model().layers) {
        for (const ggml_tensor * w : {L.attn.wq, L.attn.wk, L.attn.wv, L.attn.wo, L.ffn_gate, L.ffn_up, L.ffn_down}) add(w);
    }
    add(e.model().output);
    py::dict d;
    for (auto & [k, v] : paths) d[py::str(k)] = v;
    return d;
}

}  // namespace

void bind_kernels(py::module_ & parent) {
    py::module_ m = parent.def_submodule("kernels", "small-batch quantized matmul kernels (tests, benchmarks, info)");
    m.attr("MAX_ROWS") = kernels::MAX_ROWS;
    m.def("isas", [] {
        std::vector<std::string> out;
        for (auto isa : kernels::ALL_ISAS) {
            if (kernels::isa_available(isa)) out.push_back(kernels::isa_name(isa));
        }
        return out;
    });
    m.def("best_isa", [] { return std::string(kernels::isa_name(kernels::best_isa())); });
    m.def("enabled", &kernels::enabled);
    m.def("ggml_single_row_matches", &kernels::ggml_single_row_matches,
          "whether ggml's one-row mul_mat is the x86 AVX2 vec_dot whose bits the kernels reproduce");
    m.def("supported_types", [] {
        std::vector<int> out;
        for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
            if (kernels::type_supported((ggml_type) t)) out.push_back(t);
        }
        return out;
    });
    m.def("matmul", &kernel_matmul, py::arg("type"), py::arg("n"), py::arg("w"), py::arg("x"), py::arg("isa"),
          "out [k, m] = w [m, n] (raw rows of ggml type `type`) times x [k, n], on the given path");
    m.def("matmul_paths", &engine_matmul_paths, py::arg("engine"),
          "weight type name -> the path its products take for batches of 1..16 rows");
    m.def("scatter_f16", [](const FloatArray & values, const py::array_t<int64_t, py::array::c_style | py::array::forcecast> & idxs,
                            int64_t dst_size, bool use_op, int n_threads) {
              if (values.ndim() != 1 || idxs.ndim() != 1 || values.shape(0) != idxs.shape(0)) {
                  throw InvalidArgument("values and idxs must be 1-D arrays of the same length");
              }
              if (dst_size < 1 || n_threads < 1) throw InvalidArgument("dst_size and n_threads must be positive");
              std::vector<float> v(values.data(), values.data() + values.shape(0));
              std::vector<int64_t> at(idxs.data(), idxs.data() + idxs.shape(0));
              for (int64_t i : at) {
                  if (i < 0 || i >= dst_size) throw InvalidArgument("every index must be in [0, dst_size)");
              }
              std::vector<uint16_t> out;
              {
                  py::gil_scoped_release release;
                  out = kernels::scatter_in_graph(v, at, dst_size, use_op, n_threads);
              }
              return py::array_t<uint16_t>((py::ssize_t) out.size(), out.data());
          },
          py::arg("values"), py::arg("idxs"), py::arg("dst_size"), py::arg("use_op"), py::arg("n_threads"),
          "V's transposed cache write: our scatter op or ggml's set_rows (use_op=False), as F16 bits");
    m.def("read_bandwidth", &kernels::read_bandwidth, py::arg("bytes"), py::arg("n_threads"), py::arg("reps"),
          py::call_guard<py::gil_scoped_release>());

    py::class_<PyMatmulGraph>(m, "MatmulGraph")
        .def(py::init<const std::vector<std::tuple<int, int64_t, ByteArray>> &, int, bool, int, bool>(), py::arg("cases"),
             py::arg("k"), py::arg("use_kernels"), py::arg("n_threads"), py::arg("repack") = false,
             "one product per (type, n, w [m, row_bytes]) case against its own input of k rows, by our op or ggml_mul_mat")
        .def("set_input", [](PyMatmulGraph & g, size_t i, const FloatArray & x) {
            if (i >= g.m.size()) throw InvalidArgument("no such case");
            if (x.ndim() != 2 || x.shape(0) != g.k || x.shape(1) != g.n[i]) throw InvalidArgument("x must be float32 [k, n]");
            g.g->set_input(i, x.data());
        })
        .def("compute", [](PyMatmulGraph & g) { g.g->compute(); }, py::call_guard<py::gil_scoped_release>())
        .def("output", [](PyMatmulGraph & g, size_t i) {
            if (i >= g.m.size()) throw InvalidArgument("no such case");
            py::array_t<float> out({(py::ssize_t) g.k, (py::ssize_t) g.m[i]});
            g.g->get_output(i, out.mutable_data());
            return out;
        })
        .def_property_readonly("weight_bytes", [](PyMatmulGraph & g) { return g.g->weight_bytes(); })
        .def_property_readonly("n_kernel_ops", [](PyMatmulGraph & g) { return g.g->n_kernel_ops(); })
        .def_property_readonly("n_repacked", [](PyMatmulGraph & g) { return g.g->n_repacked(); });
}

}  // namespace ke
