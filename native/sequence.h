// One token sequence (a conversation) and its KV cache: the committed tokens, prefill with
// prefix reuse, one-token steps, O(1) truncation. Plain decoding is built from these steps.
#pragma once

#include <cstdint>
#include <vector>

#include "kv_cache.h"
#include "runner.h"

namespace ke {

// Prompt tokens evaluated per forward pass during prefill (llama.cpp's default n_batch).
constexpr int PREFILL_BATCH = 512;

class Sequence {
public:
    Sequence(const Model & model, Runner & runner, ggml_backend_buffer_type_t buft, int n_ctx);

    int n_ctx() const { return n_ctx_; }
    int n_past() const { return (int) tokens_.size(); }
    const std::vector<int32_t> & tokens() const { return tokens_; }
    KvCache & kv() { return kv_; }

    // Makes the sequence hold exactly `prompt`, evaluating only what differs from the tokens
    // already cached; afterwards logits() are those of the last prompt token.
    void set_prompt(const std::vector<int32_t> & prompt);
    // Appends one token and computes the logits that follow it.
    void append(int32_t token);
    // Keeps the first n tokens; logits() are invalid until the next evaluation.
    void truncate(int n);
    // Keeps the longest prefix of the cached tokens that `prompt` starts with, at most
    // max_reuse and always leaving the last prompt token to evaluate; returns its length.
    int reuse_prefix(const std::vector<int32_t> & prompt, int max_reuse);
    // Commits tokens whose K/V were written elsewhere (prefill in parts, a speculative step);
    // next_logits (may be null) are the logits that follow the last of them.
    void commit(const int32_t * tokens, int n_tokens, const float * next_logits);
    // The fewest tokens the sequence held since the previous call: K/V of other caches kept in
    // step with this one (the drafter's) are stale from there on.
    int take_low_water();

    const std::vector<float> & logits() const;  // [n_vocab]
    bool has_logits() const { return has_logits_; }

private:
    void evaluate(const int32_t * tokens, int n_tokens, int pos0);
    void check_prompt(const std::vector<int32_t> & prompt) const;

    const Model & model_;
    Runner & runner_;
    int n_ctx_;
    KvCache kv_;
    std::vector<int32_t> tokens_;
    std::vector<float> logits_;
    bool has_logits_ = false;
    int low_water_ = 0;
};

}  // namespace ke
