// The Kangaroo adapter: a small GGUF (docs/formats.md) holding one attention block and two
// RMSNorms that turn the exit-layer hidden state into a draft distribution through the base
// model's own LM head. Loading checks that the adapter was made for this model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv_cache.h"
#include "model.h"

namespace ke {

// general.architecture of an adapter file (docs/formats.md): the one owner of the name.
inline constexpr const char * ADAPTER_ARCH = "kangaroo-adapter";

class GgufFile;
class GraphBuilder;
struct StepInputs;

struct AdapterParams {
    int exit_layer;      // N: reads the residual stream after layers [0, N)
    float default_tau;   // confidence threshold of the second early exit
    int default_gamma;   // most drafts per cycle
};

class Adapter {
public:
    Adapter(const std::string & path, const Model & model, Backends & backends, int n_ctx);

    const std::string & path() const { return path_; }
    const AdapterParams & params() const { return params_; }
    KvCache & kv() { return kv_; }

    // The LM head drafts use: the model's own, or (FR-Spec, arXiv 2502.14856) only the rows of
    // the tokens in draft_vocab(), which the adapter file lists. Verification always uses the
    // full head, so a smaller draft vocabulary changes speed, never the output.
    ggml_tensor * draft_head() const { return draft_head_ ? draft_head_ : model_.output; }
    // Token id of each draft_head() row; empty when the head is the model's full one.
    const std::vector<int32_t> & draft_vocab() const { return draft_vocab_; }
    int draft_vocab_size() const { return draft_head()->ne[1]; }

    // h: exit-layer hidden states [n_embd, n_tokens] -> adapter output before the LM head
    // (normed, [n_embd, n_tokens]); writes the adapter's K/V at the step's positions.
    ggml_tensor * build(GraphBuilder & b, ggml_tensor * h, const StepInputs & in);
    // Only the adapter's K/V for exit-layer states h: all that positions the adapter does not
    // draft from (the prompt, plain steps) leave for later drafts.
    void build_kv(GraphBuilder & b, ggml_tensor * h, const StepInputs & in);

private:
    void load_draft_vocab(const GgufFile & f, Backends & backends);

    std::string path_;
    const Model & model_;
    AdapterParams params_{};
    AttentionWeights attn_;     // with q/k norms where the base model's layers have them
    AttentionConfig config_{};  // the base model's global attention: full window, its RoPE
    ggml_tensor * output_norm_ = nullptr;
    ggml_tensor * draft_head_ = nullptr;
    std::vector<int32_t> draft_vocab_;
    WeightStore weights_;
    KvCache kv_;
};

}  // namespace ke
