#include "prompt_lookup.h"

#include <algorithm>

namespace ke {

LookupMatch prompt_lookup(const std::vector<int32_t> & history, int max_ngram, int max_tokens) {
    LookupMatch best;
    const int n = (int) history.size();
    if (n < 2 || max_ngram < 1 || max_tokens < 1) return best;
    const int32_t last = history[n - 1];
    int best_end = -1;  // one past the earlier occurrence's last token
    // Scan earlier positions newest first; an occurrence ending at `end` matches the suffix for
    // as many tokens as agree walking backwards from both ends.
    for (int end = n - 1; end >= 1; --end) {
        if (history[end - 1] != last) continue;
        int len = 1;
        while (len < max_ngram && end - 1 - len >= 0 && history[end - 1 - len] == history[n - 1 - len]) ++len;
        if (len > best.ngram) {
            best.ngram = len;
            best_end = end;
            if (len == max_ngram) break;
        }
    }
    if (best_end < 0) return best;
    const int take = std::min(max_tokens, n - best_end);
    best.tokens.assign(history.begin() + best_end, history.begin() + best_end + take);
    return best;
}

}  // namespace ke
