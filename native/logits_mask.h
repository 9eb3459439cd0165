// A constraint on the next token (a grammar, a JSON schema): the decoder asks it which tokens
// may come next at every position it samples from, and tells it each token that becomes output.
// The decoder judges a speculative cycle's rows in order and asks for row j's set only after the
// drafts before it were accepted, so the set is always the one after the accepted prefix.
// Drafting asks ahead of the output: DraftMask advances the constraint along the draft and rolls
// it back before verification, so the drafts stay inside the grammar too.
#pragma once

#include <cstdint>
#include <vector>

namespace ke {

class Tokenizer;

class LogitsMask {
public:
    virtual ~LogitsMask() = default;
    // bits[i / 32] >> (i % 32) & 1: token i may come next (bits: [n_words] = ceil(n_vocab / 32)).
    virtual void allowed(uint32_t * bits, int n_words) = 0;
    // `token` (one of the allowed) becomes output.
    virtual void accept(int32_t token) = 0;
    // Whether rollback() works; without it drafts are not masked (the output still is).
    virtual bool can_rollback() const { return true; }
    // Undoes the last n accept()s (never of an end-of-generation token: DraftMask stops before).
    virtual void rollback(int n) = 0;
};

// A LogitsMask's allowed set applied to one row of logits: the others become -inf, so greedy
// choice, the sampling filters and the speculative rule all see the masked distribution.
class MaskedRow {
public:
    // logits: [n_vocab], masked in place; throws EngineError when the constraint allows nothing.
    void apply(LogitsMask & mask, float * logits, int n_vocab);

private:
    std::vector<uint32_t> bits_;  // [ceil(n_vocab / 32)]
};

// The constraint along one draft: what may follow the output plus the drafts so far. A drafter
// asks allows() (or masks its row) at each draft position and push()es each draft; the decoder
// rolls the constraint back to the output before verifying (also on destruction, should drafting
// throw). An end-of-generation draft is not given to the constraint (llguidance's rollback does
// not count it): the draft ends there, since nothing after it would be output.
class DraftMask {
public:
    DraftMask(LogitsMask & mask, const Tokenizer & tokenizer, int n_vocab);
    ~DraftMask();
    DraftMask(const DraftMask &) = delete;
    DraftMask & operator=(const DraftMask &) = delete;

    // The allowed set at the next draft position ([ceil(n_vocab / 32)]; asked once per position).
    const std::vector<uint32_t> & bits();
    bool allows(int32_t token);
    // logits: [n] for tokens ids[0..n) (ids null: 0..n); disallowed ones become -inf. Returns
    // whether any is allowed.
    bool apply(float * logits, int n, const int32_t * ids);
    // `token`, allowed, is drafted: the constraint moves past it.
    void push(int32_t token);
    // An end-of-generation token was drafted: no draft may follow.
    bool ended() const { return ended_; }
    // Back to the output: undoes every push().
    void rollback();

private:
    LogitsMask & mask_;
    const Tokenizer & tokenizer_;
    int n_vocab_;
    std::vector<uint32_t> bits_;  // [ceil(n_vocab / 32)] the set at the next position
    bool fresh_ = false;          // bits_ is for the next position
    int pushed_ = 0;              // accept()s to roll back
    bool ended_ = false;
};

}  // namespace ke
