// A constraint on the next token (a grammar, a JSON schema): the decoder asks it which tokens
// may come next at every position it samples from, and tells it each token that becomes output.
// The decoder judges a speculative cycle's rows in order and asks for row j's set only after the
// drafts before it were accepted, so the set is always the one after the accepted prefix and the
// constraint never sees a token that is not output: it needs no rollback.
#pragma once

#include <cstdint>
#include <vector>

namespace ke {

class LogitsMask {
public:
    virtual ~LogitsMask() = default;
    // bits[i / 32] >> (i % 32) & 1: token i may come next (bits: [n_words] = ceil(n_vocab / 32)).
    virtual void allowed(uint32_t * bits, int n_words) = 0;
    // `token` (one of the allowed) becomes output.
    virtual void accept(int32_t token) = 0;
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

}  // namespace ke
