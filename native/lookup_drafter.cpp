#include "lookup_drafter.h"

#include <algorithm>
#include <array>

#include "prompt_lookup.h"

namespace ke {

namespace {
// Until learned, P(lookup draft accepted | it continues an n-gram match of n tokens), n = 1..8:
// measured on SmolLM2-135M's greedy answers to the 240 Spec-Bench dev questions
// (docs/benchmarks.md, "Prompt lookup"); longer matches are right more often.
constexpr std::array<double, MAX_LOOKUP_NGRAM + 1> LOOKUP_PRIOR = {
    0.0, 0.25, 0.55, 0.67, 0.72, 0.78, 0.76, 0.84, 0.87};

int ngram_bin(float ngram) { return std::clamp((int) ngram, 1, MAX_LOOKUP_NGRAM); }

double ngram_prior(float ngram) { return LOOKUP_PRIOR[ngram_bin(ngram)]; }

std::vector<float> ngram_lengths() {
    std::vector<float> n;
    for (int i = 1; i <= MAX_LOOKUP_NGRAM; ++i) n.push_back((float) i);
    return n;
}
}  // namespace

LookupDrafter::LookupDrafter() : calibration_(MAX_LOOKUP_NGRAM + 1, ngram_bin, ngram_prior, ngram_lengths()) {}

Draft LookupDrafter::draft(const DraftRequest & r, const KeepDrafting & keep_drafting) {
    history_.assign(r.history.begin(), r.history.end());
    history_.push_back(r.pending);
    const LookupMatch match = prompt_lookup(history_, MAX_LOOKUP_NGRAM, r.max_drafts);
    Draft d;
    for (size_t j = 0; j < match.tokens.size(); ++j) {
        const float signal = (float) (match.ngram + j);  // the match this draft continues
        if (!keep_drafting((int) j, signal)) break;
        // the match goes on only inside the constraint
        if (r.constraint && !r.constraint->allows(match.tokens[j])) break;
        if (r.constraint) r.constraint->push(match.tokens[j]);
        d.tokens.push_back(match.tokens[j]);
        d.signal.push_back(signal);
        // a lookup draft is certain: q is all on the drafted token
        if (r.constraint && r.constraint->ended()) break;
    }
    return d;
}

}  // namespace ke
