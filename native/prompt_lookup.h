// Prompt lookup (n-gram) drafting: when the text being written repeats something already in
// the context (a summary quoting its source, a translation keeping names, code reusing a
// line), the tokens that followed the earlier occurrence are likely to follow again. These
// drafts cost nothing to make; the whole model verifies them, so output stays exact.
#pragma once

#include <cstdint>
#include <vector>

namespace ke {

struct LookupMatch {
    int ngram = 0;                // length of the matched suffix (0: no match)
    std::vector<int32_t> tokens;  // what followed the match, at most max_tokens
};

// The longest suffix of `history` (at most max_ngram tokens) that also occurs earlier in it,
// taking the most recent occurrence among equally long ones, and the tokens that follow it.
LookupMatch prompt_lookup(const std::vector<int32_t> & history, int max_ngram, int max_tokens);

}  // namespace ke
