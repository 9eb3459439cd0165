#include "logits_mask.h"

#include <algorithm>
#include <cmath>

#include "error.h"

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

}  // namespace ke
