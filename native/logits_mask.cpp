#include "logits_mask.h"

#include <algorithm>
#include <cmath>

#include "error.h"
#include "tokenizer.h"

namespace ke {

void MaskedRow::apply(LogitsMask & mask, float * logits, int n_vocab) {
    const int n_words = (n_vocab + 31) / 32;
    bits_.assign(n_words, 0u);
    mask.allowed(bits_.data(), n_words);
    bool any = false;
    for (int w = 0; w < n_words; ++w) {
        const uint32_t word = bits_[w];
        if (word == 0xFFFFFFFFu) {  // a word of allowed tokens (the common case inside strings)
            any = true;
            continue;
        }
        any = any || word != 0;
        const int end = std::min(32, n_vocab - w * 32);
        for (int b = 0; b < end; ++b) {
            if (!((word >> b) & 1u)) logits[w * 32 + b] = -INFINITY;
        }
    }
    if (!any) throw EngineError("the output constraint allows no next token (the grammar cannot continue)");
}

// ---- DraftMask ---------------------------------------------------------------------------------

DraftMask::DraftMask(LogitsMask & mask, const Tokenizer & tokenizer, int n_vocab)
    : mask_(mask), tokenizer_(tokenizer), n_vocab_(n_vocab), bits_((n_vocab + 31) / 32) {}

DraftMask::~DraftMask() {
    try {
        rollback();
    } catch (...) {
        // unwinding from a failed draft: the constraint's own error is the one that surfaces
    }
}

const std::vector<uint32_t> & DraftMask::bits() {
    if (!fresh_) {
        mask_.allowed(bits_.data(), (int) bits_.size());
        fresh_ = true;
    }
    return bits_;
}

bool DraftMask::allows(int32_t token) {
    if (ended_ || token < 0 || token >= n_vocab_) return false;
    return (bits()[token / 32] >> (token % 32)) & 1u;
}

bool DraftMask::apply(float * logits, int n, const int32_t * ids) {
    bool any = false;
    for (int i = 0; i < n; ++i) {
        if (allows(ids ? ids[i] : i)) {
            any = any || logits[i] != -INFINITY;
        } else {
            logits[i] = -INFINITY;
        }
    }
    return any;
}

void DraftMask::push(int32_t token) {
    fresh_ = false;
    if (tokenizer_.is_eog(token)) {
        ended_ = true;
        return;
    }
    mask_.accept(token);
    pushed_ += 1;
}

void DraftMask::rollback() {
    const int n = pushed_;
    pushed_ = 0;
    fresh_ = false;
    ended_ = false;
    if (n > 0) mask_.rollback(n);
}

}  // namespace ke
