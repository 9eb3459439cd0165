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

SequenceState Sequence::save(const KvCache * drafter_cache) const {
    SequenceState s;
    s.model = model_.fingerprint();
    s.tokens = tokens_;
    s.batch_start = batch_start_;
    s.kv = kv_.read_cells(0, n_past());
    if (drafter_cache && drafter_valid_ > 0) {
        s.drafter_valid = drafter_valid_;
        s.drafter_kv = drafter_cache->read_cells(0, drafter_valid_);
    }
    if (has_logits_) s.logits = logits_;
    return s;
}

void Sequence::restore(const SequenceState & s, KvCache * drafter_cache) {
    const int n = (int) s.tokens.size();
    if (s.model != model_.fingerprint()) {
        throw InvalidArgument("the saved state belongs to another model (fingerprint " + s.model + ", this one " +
                              model_.fingerprint() + ")");
    }
    if (n > n_ctx_) throw InvalidArgument(format("the saved state holds %d tokens but n_ctx=%d", n, n_ctx_));
    const bool with_drafter = drafter_cache && s.drafter_valid > 0;
    if ((int) s.batch_start.size() != n || s.drafter_valid < 0 || s.drafter_valid > n ||
        (!s.logits.empty() && s.logits.size() != logits_.size()) || s.kv.size() != kv_.cells_bytes(n) ||
        (with_drafter && s.drafter_kv.size() != drafter_cache->cells_bytes(s.drafter_valid))) {
        throw InvalidArgument("the saved state is inconsistent (tokens, batch starts, caches or logits)");
    }
    for (int i = 0; i < n; ++i) {
        if (s.batch_start[i] < 0 || s.batch_start[i] > i) throw InvalidArgument("the saved state's batch starts are invalid");
    }
    kv_.write_cells(0, n, s.kv);
    if (with_drafter) drafter_cache->write_cells(0, s.drafter_valid, s.drafter_kv);
    drafter_valid_ = with_drafter ? s.drafter_valid : 0;
    tokens_ = s.tokens;
    batch_start_ = s.batch_start;
    has_logits_ = !s.logits.empty();
    if (has_logits_) logits_ = s.logits;
}

const std::vector<float> & Sequence::logits() const {
    if (!has_logits_) throw EngineError("no logits: nothing has been evaluated since the last change");
    return logits_;
}

}  // namespace ke
