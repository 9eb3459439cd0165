// pybind11 module: type conversion and exception mapping only; the logic lives in the engine.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "engine.h"
#include "error.h"
#include "kernels/py_kernels.h"

namespace py = pybind11;
using namespace ke;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

py::array_t<float> to_array(const std::vector<float> & v, ssize_t rows, ssize_t cols) {
    py::array_t<float> a({rows, cols});
    std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
    return a;
}

// Layer-range forward pass on the engine's KV cache (see Runner::forward). The sequence's
// token history no longer describes the cache afterwards, so it is reset.
py::array_t<float> forward(Engine & e, py::object input, int layer_begin, int layer_end, int pos0,
                           const std::string & output, bool all_outputs) {
    const Hparams & hp = e.model.hparams();
    ForwardSpec spec;
    spec.layer_begin = layer_begin;
    spec.layer_end = layer_end;
    if (output == "hidden") spec.output = Output::Hidden;
    else if (output == "normed") spec.output = Output::NormedHidden;
    else if (output == "logits") spec.output = Output::Logits;
    else throw InvalidArgument("output must be 'hidden', 'normed' or 'logits', got '" + output + "'");

    std::vector<int32_t> tokens;
    FloatArray hidden;
    if (layer_begin == 0) {
        tokens = input.cast<std::vector<int32_t>>();
        spec.n_tokens = (int) tokens.size();
    } else {
        hidden = input.cast<FloatArray>();
        if (hidden.ndim() != 2 || hidden.shape(1) != hp.n_embd) {
            throw InvalidArgument("hidden states must have shape [n_tokens, n_embd=" + std::to_string(hp.n_embd) + "]");
        }
        spec.n_tokens = (int) hidden.shape(0);
    }
    if (spec.n_tokens < 1) throw InvalidArgument("forward needs at least one token");
    spec.n_outputs = all_outputs ? spec.n_tokens : 1;
    const int cols = spec.output == Output::Logits ? hp.n_vocab : hp.n_embd;
    std::vector<float> out((size_t) spec.n_outputs * cols);
    {
        py::gil_scoped_release release;
        e.sequence.truncate(0);
        e.runner.forward(e.sequence.kv(), spec, tokens.data(), layer_begin == 0 ? nullptr : hidden.data(), pos0,
                         out.data());
    }
    return to_array(out, spec.n_outputs, cols);
}

KangarooDecoder & require_kangaroo(Engine & e) {
    if (!e.kangaroo) throw InvalidArgument("no Kangaroo adapter is loaded");
    return *e.kangaroo;
}

// Text that comes from a model file (its name, chat template, or an error message quoting its
// metadata) need not be UTF-8: decoded with U+FFFD replacements instead of raising
// UnicodeDecodeError, which would hide the real message.
py::str lossy_str(const std::string & s) {
    PyObject * o = PyUnicode_DecodeUTF8(s.data(), (Py_ssize_t) s.size(), "replace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

SamplingParams make_params(float temperature, int top_k, float top_p, float min_p) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.validate();
    return p;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "kangaroo-edge native engine (ggml)";

    // Registered base first: pybind11 tries translators newest first, so the derived
    // InvalidArgument must come after EngineError to be matched.
    static py::exception<EngineError> engine_error(m, "EngineError", PyExc_RuntimeError);
    static py::exception<InvalidArgument> invalid_argument(m, "InvalidArgument", PyExc_ValueError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const InvalidArgument & e) {
            PyErr_SetObject(invalid_argument.ptr(), lossy_str(e.what()).ptr());
        } catch (const EngineError & e) {
            PyErr_SetObject(engine_error.ptr(), lossy_str(e.what()).ptr());
        }
    });

    m.def("ggml_version", []() { return std::string(ggml_version()); });
    m.attr("COMPILED_GGML_VERSION") = KE_GGML_VERSION;
    m.def("set_verbose", &set_verbose, py::arg("verbose"));

    py::class_<Engine>(m, "Engine")
        .def(py::init([](const std::string & path, int n_ctx, int n_threads, const std::string & device) {
                 EngineParams p;
                 p.model_path = path;
                 p.n_ctx = n_ctx;
                 p.n_threads = n_threads;
                 p.device = device;
                 py::gil_scoped_release release;
                 return std::make_unique<Engine>(p);
             }),
             py::arg("model_path"), py::arg("n_ctx"), py::arg("n_threads"), py::arg("device"))
        // model description
        .def_property_readonly("arch", [](Engine & e) { return e.model.hparams().arch_name; })
        .def_property_readonly("n_layer", [](Engine & e) { return e.model.hparams().n_layer; })
        .def_property_readonly("n_embd", [](Engine & e) { return e.model.hparams().n_embd; })
        .def_property_readonly("n_head", [](Engine & e) { return e.model.hparams().n_head; })
        .def_property_readonly("n_head_kv", [](Engine & e) { return e.model.hparams().n_head_kv; })
        .def_property_readonly("head_dim", [](Engine & e) { return e.model.hparams().head_dim; })
        .def_property_readonly("n_vocab", [](Engine & e) { return e.model.hparams().n_vocab; })
        .def_property_readonly("n_ctx_train", [](Engine & e) { return e.model.hparams().n_ctx_train; })
        .def_property_readonly("rms_eps", [](Engine & e) { return e.model.hparams().rms_eps; })
        .def_property_readonly("rope_freq_base", [](Engine & e) { return e.model.hparams().rope_freq_base; })
        .def_property_readonly("n_ctx", [](Engine & e) { return e.sequence.n_ctx(); })
        .def_property_readonly("fingerprint", [](Engine & e) { return e.model.fingerprint(); })
        .def_property_readonly("chat_template", [](Engine & e) { return lossy_str(e.model.chat_template()); })
        .def_property_readonly("name", [](Engine & e) { return lossy_str(e.model.name()); })
        .def_property_readonly("weight_bytes", [](Engine & e) { return e.model.weight_bytes(); })
        .def_property_readonly("kv_bytes", [](Engine & e) { return e.sequence.kv().bytes(); })
        .def_property_readonly("backend", [](Engine & e) { return e.backends.description(); })
        .def_property("n_threads", [](Engine & e) { return e.backends.n_threads(); },
                      [](Engine & e, int n) { e.backends.set_n_threads(n); })
        // tokenizer
        .def("tokenize", [](Engine & e, const std::string & text, bool add_special, bool parse_special) {
                 return e.tokenizer.tokenize(text, add_special, parse_special);
             },
             py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = true)
        .def("token_to_piece", [](Engine & e, int32_t t, bool special) {
                 return py::bytes(e.tokenizer.token_to_piece(t, special));
             },
             py::arg("token"), py::arg("special") = false)
        .def("detokenize", [](Engine & e, const std::vector<int32_t> & ids, bool special) {
                 return py::bytes(e.tokenizer.detokenize(ids, special));
             },
             py::arg("tokens"), py::arg("special") = false)
        .def("is_eog", [](Engine & e, int32_t t) { return e.tokenizer.is_eog(t); })
        .def_property_readonly("bos", [](Engine & e) { return e.tokenizer.bos(); })
        .def_property_readonly("eos", [](Engine & e) { return e.tokenizer.eos(); })
        // the sequence: plain decoding steps
        .def("set_prompt", [](Engine & e, const std::vector<int32_t> & t) {
                 py::gil_scoped_release release;
                 e.sequence.set_prompt(t);
             })
        .def("append", [](Engine & e, int32_t t) {
                 py::gil_scoped_release release;
                 e.sequence.append(t);
             })
        .def("truncate", [](Engine & e, int n) { e.sequence.truncate(n); })
        .def_property_readonly("n_past", [](Engine & e) { return e.sequence.n_past(); })
        .def_property_readonly("tokens", [](Engine & e) { return e.sequence.tokens(); })
        .def("logits", [](Engine & e) {
            const auto & l = e.sequence.logits();
            py::array_t<float> a((ssize_t) l.size());
            std::memcpy(a.mutable_data(), l.data(), l.size() * sizeof(float));
            return a;
        })
        .def("seed", [](Engine & e, uint64_t seed) { e.sampler.reseed(seed); })
        .def("sample", [](Engine & e, float temperature, int top_k, float top_p, float min_p) {
                 const SamplingParams p = make_params(temperature, top_k, top_p, min_p);
                 const auto & l = e.sequence.logits();
                 return e.sampler.sample(l.data(), (int) l.size(), p);
             },
             py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("min_p"))
        // Kangaroo
        .def("load_adapter", [](Engine & e, const std::string & path) {
            py::gil_scoped_release release;
            e.load_adapter(path);
        })
        .def_property_readonly("has_adapter", &Engine::has_adapter)
        .def_property_readonly("adapter_info", [](Engine & e) -> py::object {
            if (!e.adapter) return py::none();
            const AdapterParams & p = e.adapter->params();
            py::dict d;
            d["path"] = e.adapter->path();
            d["exit_layer"] = p.exit_layer;
            d["tau"] = p.default_tau;
            d["gamma"] = p.default_gamma;
            return d;
        })
        .def("kangaroo_start", [](Engine & e, const std::vector<int32_t> & prompt, float temperature, int top_k,
                                  float top_p, float min_p) {
                 const SamplingParams p = make_params(temperature, top_k, top_p, min_p);
                 py::gil_scoped_release release;
                 return require_kangaroo(e).start(prompt, p);
             },
             py::arg("prompt"), py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("min_p"))
        .def("kangaroo_step", [](Engine & e, std::optional<float> tau, int gamma, int max_new, bool lookup) {
                 if (tau && !(*tau >= 0.0f && *tau <= 1.0f)) {
                     throw InvalidArgument(format("tau must be in [0, 1], got %g", *tau));
                 }
                 if (gamma < 1 || gamma > 64) throw InvalidArgument(format("gamma must be in [1, 64], got %d", gamma));
                 DraftParams dp;
                 dp.auto_tune = !tau;
                 dp.tau = tau.value_or(0.0f);
                 dp.gamma = gamma;
                 dp.lookup = lookup;
                 py::gil_scoped_release release;
                 return require_kangaroo(e).step(dp, std::max(1, max_new));
             },
             py::arg("tau"), py::arg("gamma"), py::arg("max_new"), py::arg("lookup") = false,
             "One Kangaroo step; tau=None lets the speculation controller decide whether and how far to draft. "
             "lookup=True also drafts by prompt lookup (with tau=None: where the controller expects it to pay).")
        .def("kangaroo_stats", [](Engine & e) {
            const KangarooStats & s = require_kangaroo(e).stats();
            py::dict d;
            d["cycles"] = s.cycles;
            d["drafted"] = s.drafted;
            d["accepted"] = s.accepted;
            d["cycle_tokens"] = s.tokens;
            d["accepted_hist"] = s.accepted_hist;
            d["draft_seconds"] = s.draft_seconds;
            d["verify_seconds"] = s.verify_seconds;
            d["lookup_cycles"] = s.lookup_cycles;
            d["lookup_drafted"] = s.lookup_drafted;
            d["lookup_accepted"] = s.lookup_accepted;
            const SpeculationController & c = require_kangaroo(e).controller();
            d["plain_steps"] = c.stats().plain_steps;
            d["probes"] = c.stats().probes;
            d["switches_off"] = c.stats().switches_off;
            return d;
        })
        .def("kangaroo_cost_model", [](Engine & e) {
            // What the controller has measured on this machine, for `bench --tune` and docs.
            const SpeculationController & c = require_kangaroo(e).controller();
            py::dict d;
            d["plain_seconds"] = c.costs().plain();
            d["draft_step_seconds"] = c.costs().draft_step();
            std::vector<double> verify, full_verify;
            for (int k = 1; k <= 16; ++k) verify.push_back(c.costs().verify(k));
            for (int k = 1; k <= 16; ++k) full_verify.push_back(c.costs().full_verify(k));
            d["verify_seconds"] = verify;  // [k-1]: verifying k rows through layers [N, L)
            d["full_verify_seconds"] = full_verify;  // [k-1]: k rows through all layers (lookup)
            d["acceptance_by_confidence"] = c.calibration().table();
            d["drafts_by_confidence"] = c.calibration().counts();
            d["lookup_acceptance_by_ngram"] = c.lookup_calibration().table();  // [n-1]
            d["lookup_drafts_by_ngram"] = c.lookup_calibration().counts();
            return d;
        })
        .def("adapter_logits", [](Engine & e, FloatArray hidden, int pos0) {
            require_kangaroo(e);
            const Hparams & hp = e.model.hparams();
            if (hidden.ndim() != 2 || hidden.shape(1) != hp.n_embd) {
                throw InvalidArgument("hidden states must have shape [n_tokens, n_embd=" + std::to_string(hp.n_embd) + "]");
            }
            const int n = (int) hidden.shape(0);
            if (n < 1) throw InvalidArgument("adapter_logits needs at least one row");
            std::vector<float> out((size_t) n * hp.n_vocab);
            {
                py::gil_scoped_release release;
                e.sequence.truncate(0);
                e.drafter->logits(hidden.data(), n, pos0, out.data());
            }
            return to_array(out, n, hp.n_vocab);
        }, py::arg("hidden"), py::arg("pos0") = 0)
        .def("forward", &forward, py::arg("input"), py::arg("layer_begin"), py::arg("layer_end"),
             py::arg("pos0") = 0, py::arg("output") = "logits", py::arg("all_outputs") = true);

    bind_kernels(m);  // the `kernels` submodule (native/kernels/py_kernels.cpp)
}
