// Everything one loaded model needs, built in dependency order: compute devices, weights,
// tokenizer, graph runner, the sequence (KV cache) and the decoder with its drafters. The
// bindings and the Python package reach the engine only through the public API below.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "adapter.h"
#include "adapter_drafter.h"
#include "backend.h"
#include "batch_decoder.h"
#include "decoder.h"
#include "lookup_drafter.h"
#include "model.h"
#include "runner.h"
#include "sampling.h"
#include "sequence.h"
#include "tokenizer.h"

namespace ke {

// The largest context a model may be loaded with (positions).
constexpr int MAX_N_CTX = 1 << 20;

struct EngineParams {
    std::string model_path;
    int n_ctx = 4096;
    int n_threads = 0;  // 0: physical cores
    std::string device = "auto";
};

// What one drafter's cycles cost on this machine, as the speculation controller measured them.
struct DrafterCostModel {
    std::string name;
    double draft_step_seconds = 0.0;
    double bonus_step_seconds = 0.0;     // the bonus row's step (a prior until measured)
    bool bonus_step_measured = false;
    std::vector<double> verify_seconds;  // [k-1]: verifying a cycle of k drafts
    std::vector<bool> verify_measured;   // [k-1]: measured (else extrapolated)
    std::vector<int> verify_rows;        // [k-1]: rows such a verification runs
    CalibrationTable calibration;
};

struct CostModel {
    double plain_seconds = 0.0;  // one plain step (0: none measured yet)
    bool plain_measured = false;
    std::vector<DrafterCostModel> drafters;
};

// A layer-range forward pass over the engine's KV cache (see Runner::forward).
struct ForwardRequest {
    ForwardSpec spec;
    const int32_t * tokens = nullptr;  // [n_tokens] when spec.layer_begin == 0
    const float * hidden = nullptr;    // [n_tokens, n_embd] otherwise
    int pos0 = 0;
};

class Engine {
public:
    explicit Engine(const EngineParams & params);

    const Model & model() const { return model_; }
    const Hparams & hparams() const { return model_.hparams(); }
    const Tokenizer & tokenizer() const { return tokenizer_; }
    const Backends & backends() const { return backends_; }
    void set_n_threads(int n) { backends_.set_n_threads(n); }

    // Loads a Kangaroo adapter (replacing any other) and drafts with it from then on.
    void load_adapter(const std::string & path);
    const Adapter * adapter() const { return adapter_.get(); }

    // ---- decoding (Decoder): the only decode loop -------------------------------------------
    void seed(uint64_t seed) { sampler_.reseed(seed); }
    // A generation (Decoder::start, step, stop): the decoder decides when it ends.
    // mask: a constraint on every token of the generation, or null
    std::vector<int32_t> start(const std::vector<int32_t> & prompt, const SamplingParams & sampling, int64_t max_tokens,
                               std::shared_ptr<LogitsMask> mask = nullptr) {
        return decoder_.start(prompt, sampling, max_tokens, std::move(mask));
    }
    std::vector<int32_t> step(const DraftParams & params) { return decoder_.step(params); }
    FinishReason finish_reason() const { return decoder_.finish_reason(); }
    void stop(int64_t n_tokens) { decoder_.stop(n_tokens); }
    GenerationStats stats() const { return decoder_.stats(); }
    CostModel cost_model() const;
    const std::vector<int32_t> & last_inputs() const { return decoder_.last_inputs(); }
    const std::vector<float> & last_logits() const { return decoder_.last_logits(); }

    // Times every graph node while on (a diagnostic: each node then runs on its own).
    void set_profiling(bool on) { runner_.set_profiling(on); }
    OpProfile & op_profile() { return runner_.profile(); }

    // ---- the sequence ---------------------------------------------------------------------
    int n_ctx() const { return sequence_.n_ctx(); }
    int n_past() const { return sequence_.n_past(); }
    const std::vector<int32_t> & tokens() const { return sequence_.tokens(); }
    size_t kv_bytes() const { return sequence_.kv().bytes(); }
    void truncate(int n) { sequence_.truncate(n); }
    // The sequence's committed state, the adapter's cache included, copied out and back in: a
    // prompt cache of several conversations (kangaroo_edge/prompt_cache.py) switches between them.
    // A state saved before another adapter was loaded restores without the drafter's cache.
    SequenceState save_state() const;
    void load_state(const SequenceState & state);
    // A plain one-token step at the end of the sequence, returning the logits after it
    // [n_vocab] (teacher forcing for checks; it leaves the drafter's cache behind).
    const std::vector<float> & append(int32_t token);

    // ---- many sequences at once: plain decoding, each in a KV block of its own -----------------
    // The batch shares this engine's weights and graph runner: use one or the other at a time.
    std::unique_ptr<BatchDecoder> new_batch(int n_seq, int n_ctx_seq) {
        return std::make_unique<BatchDecoder>(model_, runner_, tokenizer_, backends_.main_buffer_type(), n_seq, n_ctx_seq);
    }

    // ---- low level, for training features and checks: they forget the sequence --------------
    // out: [n_outputs, n_embd] hidden states or [n_outputs, n_vocab] logits, row-major
    void forward(const ForwardRequest & r, float * out);
    // The adapter's logits [n, n_vocab] for exit-layer states [n, n_embd] at pos0..
    void adapter_logits(const float * hidden, int n, int pos0, float * out);

private:
    // The drafters a step may use: the one place a new drafter is registered.
    std::vector<Drafter *> drafters();

    Backends backends_;
    Model model_;
    Tokenizer tokenizer_;
    Runner runner_;
    Sequence sequence_;
    Sampler sampler_{0};
    LookupDrafter lookup_drafter_;
    std::unique_ptr<Adapter> adapter_;
    uint64_t adapter_loads_ = 0;  // identifies the loaded adapter's cache in saved states
    std::unique_ptr<AdapterDrafter> adapter_drafter_;
    Decoder decoder_;
};

// Turns ggml's and llama.cpp's log output on or off (off by default: they print on every load).
void set_verbose(bool verbose);

}  // namespace ke
