// pybind11 module: type conversion and exception mapping only; the logic lives in the engine.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <limits>

#include "engine.h"
#include "error.h"
#include "kernels/py_kernels.h"

namespace py = pybind11;
using namespace ke;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

py::array_t<float> to_array(const float * data, ssize_t rows, ssize_t cols) {
    py::array_t<float> a({rows, cols});
    std::memcpy(a.mutable_data(), data, (size_t) rows * cols * sizeof(float));
    return a;
}

const FloatArray & check_hidden(const FloatArray & hidden, const Hparams & hp) {
    if (hidden.ndim() != 2 || hidden.shape(1) != hp.n_embd || hidden.shape(0) < 1) {
        throw InvalidArgument("hidden states must have shape [n_tokens >= 1, n_embd=" + std::to_string(hp.n_embd) + "]");
    }
    return hidden;
}

// Layer-range forward pass (Engine::forward): token ids for layer_begin == 0, else hidden states.
py::array_t<float> forward(Engine & e, py::object input, int layer_begin, int layer_end, int pos0,
                           const std::string & output, bool all_outputs) {
    const Hparams & hp = e.hparams();
    ForwardRequest r;
    r.spec.layer_begin = layer_begin;
    r.spec.layer_end = layer_end;
    r.pos0 = pos0;
    if (output == "hidden") r.spec.output = Output::Hidden;
    else if (output == "normed") r.spec.output = Output::NormedHidden;
    else if (output == "logits") r.spec.output = Output::Logits;
    else throw InvalidArgument("output must be 'hidden', 'normed' or 'logits', got '" + output + "'");
    std::vector<int32_t> tokens;
    FloatArray hidden;
    if (layer_begin == 0) {
        tokens = input.cast<std::vector<int32_t>>();
        r.spec.n_tokens = (int) tokens.size();
        r.tokens = tokens.data();
    } else {
        hidden = check_hidden(input.cast<FloatArray>(), hp);
        r.spec.n_tokens = (int) hidden.shape(0);
        r.hidden = hidden.data();
    }
    if (r.spec.n_tokens < 1) throw InvalidArgument("forward needs at least one token");
    r.spec.n_outputs = all_outputs ? r.spec.n_tokens : 1;
    const int cols = r.spec.output == Output::Logits ? hp.n_vocab : hp.n_embd;
    std::vector<float> out((size_t) r.spec.n_outputs * cols);
    {
        py::gil_scoped_release release;
        e.forward(r, out.data());
    }
    return to_array(out.data(), r.spec.n_outputs, cols);
}

// A Python constraint as the decoder's LogitsMask: any object with allowed(address, n_bytes),
// which writes the bitmask of allowed tokens at that address, accept(token) and, optionally,
// rollback(n) (undo the last n accepts; without it drafts are not masked). The engine
// runs without the GIL; each callback takes it for its own duration only.
class PyLogitsMask : public LogitsMask {
public:
    explicit PyLogitsMask(py::object obj) : can_rollback_(py::hasattr(obj, "rollback")), obj_(std::move(obj)) {}
    ~PyLogitsMask() override {
        py::gil_scoped_acquire gil;
        obj_ = py::object();
    }
    void allowed(uint32_t * bits, int n_words) override {
        py::gil_scoped_acquire gil;
        obj_.attr("allowed")(reinterpret_cast<uintptr_t>(bits), (size_t) n_words * sizeof(uint32_t));
    }
    void accept(int32_t token) override {
        py::gil_scoped_acquire gil;
        obj_.attr("accept")(token);
    }
    bool can_rollback() const override { return can_rollback_; }
    void rollback(int n) override {
        py::gil_scoped_acquire gil;
        obj_.attr("rollback")(n);
    }

private:
    bool can_rollback_;  // the object has rollback(n): drafts are masked too
    py::object obj_;
};

// Text that comes from a model file (its name, chat template, or an error message quoting its
// metadata) need not be UTF-8: decoded with U+FFFD replacements instead of raising
// UnicodeDecodeError, which would hide the real message.
py::str lossy_str(const std::string & s) {
    PyObject * o = PyUnicode_DecodeUTF8(s.data(), (Py_ssize_t) s.size(), "replace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

// "stop", "length", or None while the generation goes on
py::object finish_reason_str(FinishReason r) {
    const char * name = finish_reason_name(r);
    return name ? py::object(py::str(name)) : py::object(py::none());
}

py::dict cost_model_dict(const Engine & e) {
    const CostModel m = e.cost_model();
    py::dict d;
    d["plain_seconds"] = m.plain_seconds;
    d["plain_measured"] = m.plain_measured;
    py::dict drafters;
    for (const DrafterCostModel & dm : m.drafters) {
        py::dict x;
        x["draft_step_seconds"] = dm.draft_step_seconds;
        x["bonus_step_seconds"] = dm.bonus_step_seconds;
        x["bonus_step_measured"] = dm.bonus_step_measured;  // else a prior (half a draft step)
        x["verify_seconds"] = dm.verify_seconds;    // [k-1]: a cycle of k drafts
        x["verify_measured"] = dm.verify_measured;  // [k-1]: measured, else extrapolated
        x["verify_rows"] = dm.verify_rows;
        x["calibration"] = py::dict(py::arg("signal") = dm.calibration.signal,
                                    py::arg("acceptance") = dm.calibration.acceptance,
                                    py::arg("count") = dm.calibration.count);
        drafters[py::str(dm.name)] = x;
    }
    d["drafters"] = drafters;
    return d;
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
    m.def("supported_architectures", []() { return ke::supported_architectures(); });  // GGUF names
    m.def("model_fingerprint", [](const std::string & path) { return ke::model_fingerprint(path); },
          py::arg("path"), "The fingerprint adapters are tied to (docs/formats.md), from a GGUF's metadata alone.");
    m.def("model_traits", [](const std::string & path) {
              const ModelTraits t = read_model_traits(path);
              const Hparams & hp = t.hp;
              py::dict d;
              d["arch"] = hp.arch_name;
              d["n_layer"] = hp.n_layer;
              d["n_embd"] = hp.n_embd;
              d["n_head"] = hp.n_head;
              d["n_head_kv"] = hp.n_head_kv;
              d["head_dim"] = hp.head_dim;
              d["n_vocab"] = hp.n_vocab;
              d["rms_eps"] = hp.rms_eps;
              d["rope_freq_base"] = hp.rope_freq_base;
              d["rope_type"] = hp.rope_mode == GGML_ROPE_TYPE_NEOX ? "neox" : "normal";
              d["kq_scale"] = hp.kq_scale;
              d["fingerprint"] = t.fingerprint;
              d["tied_head"] = t.tied_head;
              d["qkv_bias"] = t.qkv_bias;
              d["qk_norm"] = t.qk_norm;
              // what a forward pass outside the engine (the torch teacher) needs beyond the llama layout
              d["post_norms"] = t.post_norms;
              d["ffn_activation"] = hp.ffn_act == FfnActivation::GeLU ? "gelu" : "silu";
              d["rope_freq_scale"] = hp.rope_freq_scale;
              d["embd_scale"] = hp.embd_scale;
              d["final_logit_softcap"] = hp.final_logit_softcap;
              d["n_swa"] = hp.n_swa;
              std::vector<bool> local(hp.swa_layers.begin(), hp.swa_layers.end());
              d["swa_layers"] = local;
              d["rope_freq_base_swa"] = hp.rope_freq_base_swa;
              return d;
          },
          py::arg("path"), "What a GGUF says about its model (hyperparameters, traits, fingerprint), from its metadata alone.");

    m.attr("MAX_GAMMA") = MAX_GAMMA;
    m.attr("MAX_N_CTX") = MAX_N_CTX;
    m.attr("DEFAULT_GAMMA") = DEFAULT_GAMMA;
    m.attr("DEFAULT_TAU") = DEFAULT_TAU;
    m.attr("ADAPTER_ARCH") = ADAPTER_ARCH;

    m.attr("DEFAULT_REPEAT_LAST_N") = DEFAULT_REPEAT_LAST_N;

    py::class_<SamplingParams>(m, "SamplingParams")
        .def(py::init([](float temperature, int top_k, float top_p, float min_p, float repeat_penalty,
                         float frequency_penalty, float presence_penalty, int repeat_last_n) {
                 SamplingParams p;
                 p.temperature = temperature;
                 p.top_k = top_k;
                 p.top_p = top_p;
                 p.min_p = min_p;
                 p.repeat_penalty = repeat_penalty;
                 p.frequency_penalty = frequency_penalty;
                 p.presence_penalty = presence_penalty;
                 p.repeat_last_n = repeat_last_n;
                 p.validate();
                 return p;
             }),
             py::arg("temperature") = 0.0f, py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f,
             py::arg("repeat_penalty") = 1.0f, py::arg("frequency_penalty") = 0.0f, py::arg("presence_penalty") = 0.0f,
             py::arg("repeat_last_n") = DEFAULT_REPEAT_LAST_N)
        .def_readonly("temperature", &SamplingParams::temperature)
        .def_readonly("top_k", &SamplingParams::top_k)
        .def_readonly("top_p", &SamplingParams::top_p)
        .def_readonly("min_p", &SamplingParams::min_p)
        .def_readonly("repeat_penalty", &SamplingParams::repeat_penalty)
        .def_readonly("frequency_penalty", &SamplingParams::frequency_penalty)
        .def_readonly("presence_penalty", &SamplingParams::presence_penalty)
        .def_readonly("repeat_last_n", &SamplingParams::repeat_last_n);

    py::enum_<DraftParams::Mode>(m, "DraftMode")
        .value("OFF", DraftParams::Mode::Off)
        .value("THRESHOLD", DraftParams::Mode::Threshold)
        .value("AUTO", DraftParams::Mode::Auto);

    py::class_<DraftParams>(m, "DraftParams")
        .def(py::init([](DraftParams::Mode mode, float tau, int gamma, bool lookup) {
                 DraftParams p;
                 p.mode = mode;
                 p.tau = tau;
                 p.gamma = gamma;
                 p.lookup = lookup;
                 p.validate();
                 return p;
             }),
             py::arg("mode"), py::arg("tau") = DEFAULT_TAU, py::arg("gamma") = DEFAULT_GAMMA, py::arg("lookup") = false)
        .def_readonly("mode", &DraftParams::mode)
        .def_readonly("tau", &DraftParams::tau)
        .def_readonly("gamma", &DraftParams::gamma)
        .def_readonly("lookup", &DraftParams::lookup);

    // The record of one generation (native/decoder.h documents each figure): its fields and
    // derived figures under the struct's own names, read-only.
    py::class_<DrafterCounts>(m, "DrafterCounts")
        .def_readonly("name", &DrafterCounts::name)
        .def_readonly("cycles", &DrafterCounts::cycles)
        .def_readonly("draft_n", &DrafterCounts::draft_n)
        .def_readonly("draft_n_accepted", &DrafterCounts::draft_n_accepted);
    py::class_<GenerationStats>(m, "GenerationStats")
        .def_readonly("plain_steps", &GenerationStats::plain_steps)
        .def_readonly("probes", &GenerationStats::probes)
        .def_readonly("switches_off", &GenerationStats::switches_off)
        .def_readonly("prompt_n", &GenerationStats::prompt_n)
        .def_readonly("cache_n", &GenerationStats::cache_n)
        .def_readonly("prompt_ms", &GenerationStats::prompt_ms)
        .def_readonly("predicted_n", &GenerationStats::predicted_n)
        .def_readonly("predicted_ms", &GenerationStats::predicted_ms)
        .def_readonly("cycles", &GenerationStats::cycles)
        .def_readonly("bonus_rows", &GenerationStats::bonus_rows)
        .def_readonly("draft_n", &GenerationStats::draft_n)
        .def_readonly("draft_n_accepted", &GenerationStats::draft_n_accepted)
        .def_readonly("cycle_tokens", &GenerationStats::cycle_tokens)
        .def_readonly("accepted_hist", &GenerationStats::accepted_hist)
        .def_readonly("draft_ms", &GenerationStats::draft_ms)
        .def_readonly("verify_ms", &GenerationStats::verify_ms)
        .def_readonly("by_drafter", &GenerationStats::by_drafter)
        .def_property_readonly("prompt_tokens", &GenerationStats::prompt_tokens)
        .def_property_readonly("prompt_per_second", &GenerationStats::prompt_per_second)
        .def_property_readonly("prompt_per_token_ms", &GenerationStats::prompt_per_token_ms)
        .def_property_readonly("predicted_per_second", &GenerationStats::predicted_per_second)
        .def_property_readonly("predicted_per_token_ms", &GenerationStats::predicted_per_token_ms)
        .def_property_readonly("mean_accepted", &GenerationStats::mean_accepted)
        .def_property_readonly("acceptance_rate", &GenerationStats::acceptance_rate)
        .def("drafter", &GenerationStats::drafter, py::arg("name"));

    py::class_<BatchEvent>(m, "BatchEvent")
        .def_readonly("id", &BatchEvent::id)
        .def_readonly("token", &BatchEvent::token)
        .def_property_readonly("finish_reason", [](const BatchEvent & e) { return finish_reason_str(e.finish); },
                               "'stop': the token is an end-of-generation token (not output); 'length': the last token; None: more follow")
        .def_readonly("stats", &BatchEvent::stats, "the sequence's GenerationStats on its finishing event, else None")
        .def("__repr__", [](const BatchEvent & e) {
            const char * name = finish_reason_name(e.finish);
            return format("BatchEvent(id=%lld, token=%d, finish_reason=%s)", (long long) e.id, e.token,
                          name ? name : "None");
        });

    m.attr("MAX_BATCH_SEQUENCES") = MAX_BATCH_SEQUENCES;
    py::class_<BatchDecoder>(m, "BatchDecoder")
        .def_property_readonly("capacity", &BatchDecoder::capacity)
        .def_property_readonly("n_ctx_seq", &BatchDecoder::n_ctx_seq)
        .def_property_readonly("n_active", &BatchDecoder::n_active)
        .def_property_readonly("kv_bytes", &BatchDecoder::kv_bytes)
        .def("add", [](BatchDecoder & b, const std::vector<int32_t> & prompt, const SamplingParams & sampling,
                       uint64_t seed, int max_new) {
                 py::gil_scoped_release release;
                 return b.add(prompt, sampling, seed, max_new);
             },
             py::arg("prompt"), py::arg("sampling"), py::arg("seed"), py::arg("max_new"),
             "Prefills a prompt into a free block; returns its first token's event (its id names the sequence).")
        .def("step", [](BatchDecoder & b) {
                 py::gil_scoped_release release;
                 return b.step();
             },
             "One weight pass over every active sequence: an event each; finished sequences leave.")
        .def("end", &BatchDecoder::end, py::arg("id"), py::arg("n_output"),
             "Ends an active sequence early (a stop string, a deadline); returns its GenerationStats with its "
             "first n_output tokens as its output.")
        .def("remove", &BatchDecoder::remove, py::arg("id"));

    py::class_<SequenceState>(m, "SequenceState",
                              "A sequence's committed state copied out of the engine (Engine.save_state): opaque.")
        .def_property_readonly("tokens", [](const SequenceState & s) { return s.tokens; })
        .def_property_readonly("n_tokens", [](const SequenceState & s) { return s.tokens.size(); })
        .def_property_readonly("nbytes", &SequenceState::bytes);

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
        .def_property_readonly("arch", [](Engine & e) { return e.hparams().arch_name; })
        .def_property_readonly("n_layer", [](Engine & e) { return e.hparams().n_layer; })
        .def_property_readonly("n_embd", [](Engine & e) { return e.hparams().n_embd; })
        .def_property_readonly("n_head", [](Engine & e) { return e.hparams().n_head; })
        .def_property_readonly("n_head_kv", [](Engine & e) { return e.hparams().n_head_kv; })
        .def_property_readonly("head_dim", [](Engine & e) { return e.hparams().head_dim; })
        .def_property_readonly("n_vocab", [](Engine & e) { return e.hparams().n_vocab; })
        .def_property_readonly("n_ctx_train", [](Engine & e) { return e.hparams().n_ctx_train; })
        .def_property_readonly("rms_eps", [](Engine & e) { return e.hparams().rms_eps; })
        .def_property_readonly("rope_freq_base", [](Engine & e) { return e.hparams().rope_freq_base; })
        .def_property_readonly("fingerprint", [](Engine & e) { return e.model().fingerprint(); })
        .def_property_readonly("chat_template", [](Engine & e) { return lossy_str(e.model().chat_template()); })
        .def_property_readonly("name", [](Engine & e) { return lossy_str(e.model().name()); })
        .def_property_readonly("weight_bytes", [](Engine & e) { return e.model().weight_bytes(); })
        .def_property_readonly("kv_bytes", &Engine::kv_bytes)
        .def_property_readonly("backend", [](Engine & e) { return e.backends().description(); })
        .def_property("n_threads", [](Engine & e) { return e.backends().n_threads(); }, &Engine::set_n_threads)
        // tokenizer
        .def("tokenize", [](Engine & e, const std::string & text, bool add_special, bool parse_special) {
                 return e.tokenizer().tokenize(text, add_special, parse_special);
             },
             py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = true)
        .def("token_to_piece", [](Engine & e, int32_t t, bool special) {
                 return py::bytes(e.tokenizer().token_to_piece(t, special));
             },
             py::arg("token"), py::arg("special") = false)
        .def("detokenize", [](Engine & e, const std::vector<int32_t> & ids, bool special) {
                 return py::bytes(e.tokenizer().detokenize(ids, special));
             },
             py::arg("tokens"), py::arg("special") = false)
        .def("is_eog", [](Engine & e, int32_t t) { return e.tokenizer().is_eog(t); })
        .def_property_readonly("bos", [](Engine & e) { return e.tokenizer().bos(); })
        .def_property_readonly("eos", [](Engine & e) { return e.tokenizer().eos(); })
        // diagnostics: time per kind of graph node (benchmarks/step_profile.py)
        .def("set_profiling", &Engine::set_profiling, py::arg("on"))
        .def("op_profile", [](Engine & e) {
                 py::dict by_kind;
                 for (const auto & [kind, t] : e.op_profile().by_kind()) by_kind[py::str(kind)] = py::make_tuple(t.count, t.seconds);
                 return py::make_tuple(e.op_profile().graphs(), by_kind);
             },
             "(graphs run, {node kind: (nodes, seconds)}) since the last clear_op_profile()")
        .def("op_profile_by_name", [](Engine & e) {
                 std::map<std::string, std::pair<int64_t, double>> by_name;
                 for (const auto & [name, t] : e.op_profile().by_name()) by_name[name] = {t.count, t.seconds};
                 return by_name;
             },
             "{node name: (nodes, seconds)} since the last clear_op_profile(): every intermediate is named "
             "as llama.cpp names it (\"attn_norm-3\", \"ffn_out-29\", \"result_output\")")
        .def("clear_op_profile", [](Engine & e) { e.op_profile().clear(); })
        // the sequence
        .def_property_readonly("n_ctx", &Engine::n_ctx)
        .def_property_readonly("n_past", &Engine::n_past)
        .def_property_readonly("tokens", &Engine::tokens)
        .def("truncate", &Engine::truncate, py::arg("n"))
        .def("save_state", [](const Engine & e) {
                 py::gil_scoped_release release;
                 return e.save_state();
             },
             "The sequence's committed state (KV caches, the adapter's too), copied out.")
        .def("load_state", [](Engine & e, const SequenceState & s) {
                 py::gil_scoped_release release;
                 e.load_state(s);
             },
             py::arg("state"), "Replaces the sequence by a saved state; the next generation continues from it.")
        .def("append", [](Engine & e, int32_t token) {
                 const std::vector<float> * logits;
                 {
                     py::gil_scoped_release release;
                     logits = &e.append(token);
                 }
                 return to_array(logits->data(), 1, (ssize_t) logits->size());
             },
             py::arg("token"), "A plain one-token step (teacher forcing, for checks); returns the logits [1, n_vocab].")
        // decoding
        .def("seed", &Engine::seed, py::arg("seed"))
        .def("start", [](Engine & e, const std::vector<int32_t> & prompt, const SamplingParams & sampling,
                         const py::int_ & max_tokens, py::object mask) {
                 // any Python int: one past int64 is a limit the context reaches first
                 int overflow = 0;
                 const long long n = PyLong_AsLongLongAndOverflow(max_tokens.ptr(), &overflow);
                 if (n == -1 && PyErr_Occurred()) throw py::error_already_set();
                 const int64_t limit = overflow > 0 ? std::numeric_limits<int64_t>::max() : overflow < 0 ? 0 : n;
                 std::shared_ptr<LogitsMask> m;
                 if (!mask.is_none()) m = std::make_shared<PyLogitsMask>(mask);
                 py::gil_scoped_release release;
                 return e.start(prompt, sampling, limit, std::move(m));
             },
             py::arg("prompt"), py::arg("sampling"), py::arg("max_tokens") = 0, py::arg("mask") = py::none(),
             "Starts a generation of at most max_tokens tokens (0: until the context is full): evaluates the "
             "prompt and returns the first output token (none when it ends the generation). mask: a constraint on "
             "every token of the generation (allowed(address, n_bytes) writes the bitmask of allowed tokens, "
             "accept(token), and rollback(n), which undoes the last n accepts: with it drafts obey the mask too).")
        .def("step", [](Engine & e, const DraftParams & params) {
                 py::gil_scoped_release release;
                 return e.step(params);
             },
             py::arg("params"),
             "One decoding step of an unfinished generation: a plain step or a speculative cycle; the output it adds.")
        .def_property_readonly("finish_reason", [](Engine & e) { return finish_reason_str(e.finish_reason()); },
             "Why the generation ended ('stop', 'length'); None while it goes on.")
        .def("stop", &Engine::stop, py::arg("n_tokens"),
             "Ends the generation after its first n_tokens output tokens: a stop string (text the decoder does not see).")
        .def("last_step", [](Engine & e) {
                 const std::vector<float> & l = e.last_logits();
                 const ssize_t rows = (ssize_t) e.last_inputs().size();
                 return py::make_tuple(e.last_inputs(), to_array(l.data(), rows, e.hparams().n_vocab));
             },
             "The last step's verified inputs and their logits [inputs, n_vocab] (row j: after input j).")
        .def("stats", &Engine::stats, "The generation's record (GenerationStats), a copy.")
        .def("cost_model", &cost_model_dict, "What the speculation controller has measured on this machine.")
        // Kangaroo
        .def("load_adapter", [](Engine & e, const std::string & path) {
            py::gil_scoped_release release;
            e.load_adapter(path);
        })
        .def_property_readonly("has_adapter", [](Engine & e) { return e.adapter() != nullptr; })
        .def_property_readonly("adapter_info", [](Engine & e) -> py::object {
            if (!e.adapter()) return py::none();
            const AdapterParams & p = e.adapter()->params();
            py::dict d;
            d["path"] = e.adapter()->path();
            d["exit_layer"] = p.exit_layer;
            d["tau"] = p.default_tau;
            d["gamma"] = p.default_gamma;
            d["draft_vocab_size"] = e.adapter()->draft_vocab_size();
            return d;
        })
        .def("adapter_logits", [](Engine & e, FloatArray hidden, int pos0) {
            check_hidden(hidden, e.hparams());
            const int n = (int) hidden.shape(0);
            std::vector<float> out((size_t) n * e.hparams().n_vocab);
            {
                py::gil_scoped_release release;
                e.adapter_logits(hidden.data(), n, pos0, out.data());
            }
            return to_array(out.data(), n, e.hparams().n_vocab);
        }, py::arg("hidden"), py::arg("pos0") = 0)
        .def("new_batch", &Engine::new_batch, py::arg("n_seq"), py::arg("n_ctx_seq"), py::keep_alive<0, 1>(),
             "Many sequences decoded together (plain decoding), sharing this engine's weights.")
        .def("forward", &forward, py::arg("input"), py::arg("layer_begin"), py::arg("layer_end"),
             py::arg("pos0") = 0, py::arg("output") = "logits", py::arg("all_outputs") = true);

    bind_kernels(m);  // the `kernels` submodule (native/kernels/py_kernels.cpp)
}
