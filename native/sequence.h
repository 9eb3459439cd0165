// One token sequence (a conversation) and its KV cache: the committed tokens, prefix reuse,
// O(1) truncation, and how far a drafter's own cache (the adapter's K/V) is in step with it.
// The decoder (decoder.h) evaluates prompts and steps; this class owns what is valid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv_cache.h"
#include "runner.h"

namespace ke {

// Prompt tokens evaluated per forward pass during prefill (llama.cpp's default n_batch).
constexpr int PREFILL_BATCH = 512;

// A sequence's committed state copied out of its caches (Engine::save_state): what a prompt
// cache keeps of a conversation, to continue it later as if it had never been left.
struct SequenceState {
    std::string model;                 // fingerprint of the model whose cache this is
    std::vector<int32_t> tokens;       // the committed tokens
    std::vector<int> batch_start;      // per position: the first position of its batch (Sequence)
    std::vector<uint8_t> kv;           // KvCache::read_cells(0, tokens.size())
    int drafter_valid = 0;             // positions [0, drafter_valid) of drafter_kv are valid
    uint64_t drafter_id = 0;           // whose cache drafter_kv is (Engine's adapter load count)
    std::vector<uint8_t> drafter_kv;   // the stateful drafter's cells [0, drafter_valid)
    std::vector<float> logits;         // [n_vocab] after the last token, or empty
    size_t bytes() const { return kv.size() + drafter_kv.size() + logits.size() * sizeof(float) + tokens.size() * 8; }
};

class Sequence {
public:
    Sequence(const Model & model, Runner & runner, ggml_backend_buffer_type_t buft, int n_ctx);

    int n_ctx() const { return n_ctx_; }
    int n_past() const { return (int) tokens_.size(); }
    const std::vector<int32_t> & tokens() const { return tokens_; }
    KvCache & kv() { return kv_; }
    const KvCache & kv() const { return kv_; }

    // Appends one token and computes the logits that follow it: a plain one-token step that
    // leaves the drafter's cache behind (a low-level step for checks; decoding uses the decoder).
    void append(int32_t token);
    // Keeps the first n tokens; logits() are invalid until the next evaluation.
    void truncate(int n);
    // Keeps the longest prefix of the cached tokens that `prompt` starts with, at most
    // max_reuse, leaving at least the last prompt token to evaluate; returns its length. ggml
    // rounds a row differently with the size of the batch it is in (on some kernels, e.g.
    // repacked Q4_K), so when a prompt batch wrote the last prompt position, that whole batch is
    // evaluated again: the same batch gives the same bits, and a prompt sent twice gets its
    // first answer. Positions written by decoding steps (one row, or verified rows exact to one
    // row) are continued with one row, as longer decoding would have.
    int reuse_prefix(const std::vector<int32_t> & prompt, int max_reuse);
    // How the K/V of committed positions were computed: which kernels round them.
    enum class Rows { PromptBatch, DecodeStep };
    // Commits tokens whose K/V were written elsewhere (prefill, a decoding step); next_logits
    // (may be null) are the logits that follow the last of them. drafter_recorded: the step
    // also wrote the drafter's cache for these positions.
    void commit(const int32_t * tokens, int n_tokens, const float * next_logits, bool drafter_recorded, Rows rows);
    // Positions [0, drafter_valid()) hold drafter state computed from exactly these tokens.
    // Truncation lowers it; commits extend it only when they recorded drafter state too.
    int drafter_valid() const { return drafter_valid_; }
    // A new drafter (another adapter) has seen nothing of the sequence yet.
    void invalidate_drafter() { drafter_valid_ = 0; }

    // Copies the committed state out (with the drafter's cache, when given) and back in. restore
    // takes a state of this model only; with no drafter cache the drafter has seen nothing.
    SequenceState save(const KvCache * drafter_cache) const;
    void restore(const SequenceState & state, KvCache * drafter_cache);

    const std::vector<float> & logits() const;  // [n_vocab]
    bool has_logits() const { return has_logits_; }

private:
    void check_prompt(const std::vector<int32_t> & prompt) const;

    const Model & model_;
    Runner & runner_;
    int n_ctx_;
    KvCache kv_;
    std::vector<int32_t> tokens_;
    std::vector<int> batch_start_;  // per position: the first position of the batch that computed it
    std::vector<float> logits_;
    bool has_logits_ = false;
    int drafter_valid_ = 0;
};

}  // namespace ke
