// Prompt lookup as a drafter: drafts what followed the latest tokens where they occurred before
// in the context (prompt_lookup.h). Drafting is free; the whole model verifies the drafts.
#pragma once

#include "calibration.h"
#include "drafter.h"

namespace ke {

// Lookup drafts continue matches of at most this many tokens.
constexpr int MAX_LOOKUP_NGRAM = 8;

class LookupDrafter : public Drafter {
public:
    LookupDrafter();
    const char * name() const override { return "lookup"; }
    bool enabled_by(const DraftParams & params) const override { return params.lookup; }
    // signal: the length of the match a draft continues
    Draft draft(const DraftRequest & r, const KeepDrafting & keep_drafting) override;
    double acceptance(float ngram) const override { return calibration_.predict(ngram); }
    void record_outcome(float ngram, bool accepted) override { calibration_.record(ngram, accepted); }
    // The fixed rule drafts after a match of at least two tokens (one matches too often by chance).
    bool confident(float ngram, float /*tau*/) const override { return ngram >= 2.0f; }
    CalibrationTable calibration_table() const override { return calibration_.table(); }

private:
    // P(accepted | the n-gram a draft continues), for drafts whose predecessors in the cycle were
    // accepted: the j-th draft of a match of n tokens continues a match of n + j - 1.
    BinnedCalibration calibration_;
    std::vector<int32_t> history_;  // scratch: the committed tokens and pending
};

}  // namespace ke
