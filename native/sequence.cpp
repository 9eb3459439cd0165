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
    // The last prompt token is evaluated: its logits are needed. If a prompt batch wrote it, the
    // batch is evaluated again from its start.
    const size_t last = prompt.size() - 1;
    const size_t evaluated = common > last ? last - (size_t) batch_start_[last] + 1 : 1;
    common = std::min({common, prompt.size() - evaluated, (size_t) std::max(0, max_reuse)});
    truncate((int) common);
    return (int) common;
}

void Sequence::append(int32_t token) {
    if (n_past() >= n_ctx_) throw InvalidArgument(format("the context is full (n_ctx=%d)", n_ctx_));
    has_logits_ = false;
    runner_.forward_tokens(kv_, ForwardSpec::every_row(0, model_.hparams().n_layer, 1, Output::Logits), &token,
                           n_past(), logits_.data());
    tokens_.push_back(token);
    batch_start_.push_back(n_past() - 1);
    has_logits_ = true;
}

void Sequence::truncate(int n) {
    if (n < 0 || n > n_past()) throw InvalidArgument(format("cannot truncate %d tokens to %d", n_past(), n));
    tokens_.resize(n);
    batch_start_.resize(n);
    has_logits_ = false;
    drafter_valid_ = std::min(drafter_valid_, n);
}

void Sequence::commit(const int32_t * tokens, int n_tokens, const float * next_logits, bool drafter_recorded,
                      Rows rows) {
    if (drafter_recorded && drafter_valid_ == n_past()) drafter_valid_ += n_tokens;
    const int start = n_past();
    for (int i = 0; i < n_tokens; ++i) batch_start_.push_back(rows == Rows::PromptBatch ? start : start + i);
    tokens_.insert(tokens_.end(), tokens, tokens + n_tokens);
    has_logits_ = next_logits != nullptr;
    if (next_logits) std::memcpy(logits_.data(), next_logits, logits_.size() * sizeof(float));
}

const std::vector<float> & Sequence::logits() const {
    if (!has_logits_) throw EngineError("no logits: nothing has been evaluated since the last change");
    return logits_;
}

}  // namespace ke
