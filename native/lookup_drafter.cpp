#include "lookup_drafter.h"

#include <algorithm>

#include "prompt_lookup.h"

namespace ke {

namespace {
// Pseudo-observations that pull a sparsely seen n-gram length towards its prior.
constexpr double PRIOR_WEIGHT = 4.0;
// Until learned, P(lookup draft accepted | it continues an n-gram match of n tokens), n = 1..8:
// measured on SmolLM2-135M's greedy answers to the 240 Spec-Bench dev questions
// (docs/benchmarks.md, "Prompt lookup"); longer matches are right more often.
constexpr std::array<double, LookupCalibration::MAX_NGRAM + 1> LOOKUP_PRIOR = {
    0.0, 0.25, 0.55, 0.67, 0.72, 0.78, 0.76, 0.84, 0.87};
}  // namespace

void LookupCalibration::record(int ngram, bool accepted) {
    const int n = std::clamp(ngram, 1, MAX_NGRAM);
    seen_[n] += 1;
    accepted_[n] += accepted ? 1 : 0;
}

double LookupCalibration::predict(int ngram) const {
    const int n = std::clamp(ngram, 1, MAX_NGRAM);
    return (accepted_[n] + PRIOR_WEIGHT * LOOKUP_PRIOR[n]) / (seen_[n] + PRIOR_WEIGHT);
}

CalibrationTable LookupCalibration::table() const {
    CalibrationTable t;
    for (int n = 1; n <= MAX_NGRAM; ++n) {
        t.signal.push_back((float) n);
        t.acceptance.push_back(predict(n));
        t.count.push_back(seen_[n]);
    }
    return t;
}

Draft LookupDrafter::draft(const DraftRequest & r, const KeepDrafting & keep_drafting) {
    history_.assign(r.history.begin(), r.history.end());
    history_.push_back(r.pending);
    const LookupMatch match = prompt_lookup(history_, LookupCalibration::MAX_NGRAM, r.max_drafts);
    Draft d;
    for (size_t j = 0; j < match.tokens.size(); ++j) {
        const float signal = (float) (match.ngram + j);  // the match this draft continues
        if (!keep_drafting((int) j, signal)) break;
        d.tokens.push_back(match.tokens[j]);
        d.signal.push_back(signal);
        // a lookup draft is certain: q is all on the drafted token
        if (!r.sampling.greedy()) d.q.push_back(Distribution{{match.tokens[j]}, {1.0f}});
    }
    return d;
}

}  // namespace ke
