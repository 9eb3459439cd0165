#include "sequence.h"

#include <algorithm>
#include <cstring>

#include "error.h"

namespace ke {

Sequence::Sequence(const Model & model, Runner & runner, ggml_backend_buffer_type_t buft, int n_ctx)
    : model_(model),
      runner_(runner),
      n_ctx_(n_ctx),
      kv_(buft, model.hparams().n_layer, model.hparams().n_head_kv, model.hparams().head_dim, n_ctx),
      logits_(model.hparams().n_vocab) {}

void Sequence::evaluate(const int32_t * tokens, int n_tokens, int pos0) {
    const int n_layer = model_.hparams().n_layer;
    for (int done = 0; done < n_tokens; done += PREFILL_BATCH) {
        const int n = std::min(PREFILL_BATCH, n_tokens - done);
        const bool last = done + n == n_tokens;
        ForwardSpec spec;
        spec.layer_begin = 0;
        spec.layer_end = n_layer;
        spec.n_tokens = n;
        spec.n_outputs = 1;
        if (last) {
            spec.output = Output::Logits;
            runner_.forward(kv_, spec, tokens + done, nullptr, pos0 + done, logits_.data());
        } else {
            // Only the K/V matter for a batch that is not the last one.
            std::vector<float> unused(model_.hparams().n_embd);
            spec.output = Output::Hidden;
            runner_.forward(kv_, spec, tokens + done, nullptr, pos0 + done, unused.data());
        }
    }
}

void Sequence::check_prompt(const std::vector<int32_t> & prompt) const {
    if (prompt.empty()) throw InvalidArgument("the prompt is empty (it produced no tokens)");
    if ((int) prompt.size() > n_ctx_) {
        throw InvalidArgument(format("the prompt has %zu tokens but the context holds n_ctx=%d; "
                                     "shorten it or load the model with a larger n_ctx",
                                     prompt.size(), n_ctx_));
    }
}

int Sequence::reuse_prefix(const std::vector<int32_t> & prompt, int max_reuse) {
    check_prompt(prompt);
    size_t common = 0;
    while (common < tokens_.size() && common < prompt.size() && tokens_[common] == prompt[common]) ++common;
    // At least the last prompt token is evaluated: its logits are needed.
    common = std::min({common, prompt.size() - 1, (size_t) std::max(0, max_reuse)});
    truncate((int) common);
    return (int) common;
}

void Sequence::set_prompt(const std::vector<int32_t> & prompt) {
    const int reuse = reuse_prefix(prompt, n_ctx_);
    evaluate(prompt.data() + reuse, (int) prompt.size() - reuse, reuse);
    tokens_ = prompt;
    has_logits_ = true;
}

void Sequence::append(int32_t token) {
    if (n_past() >= n_ctx_) throw InvalidArgument(format("the context is full (n_ctx=%d)", n_ctx_));
    has_logits_ = false;
    evaluate(&token, 1, n_past());
    tokens_.push_back(token);
    has_logits_ = true;
}

void Sequence::truncate(int n) {
    if (n < 0 || n > n_past()) throw InvalidArgument(format("cannot truncate %d tokens to %d", n_past(), n));
    tokens_.resize(n);
    has_logits_ = false;
    low_water_ = std::min(low_water_, n);
}

void Sequence::commit(const int32_t * tokens, int n_tokens, const float * next_logits) {
    tokens_.insert(tokens_.end(), tokens, tokens + n_tokens);
    has_logits_ = next_logits != nullptr;
    if (next_logits) std::memcpy(logits_.data(), next_logits, logits_.size() * sizeof(float));
}

int Sequence::take_low_water() {
    const int low = low_water_;
    low_water_ = n_past();
    return low;
}

const std::vector<float> & Sequence::logits() const {
    if (!has_logits_) throw EngineError("no logits: nothing has been evaluated since the last change");
    return logits_;
}

}  // namespace ke
