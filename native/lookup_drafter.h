// Prompt lookup as a drafter: drafts what followed the latest tokens where they occurred before
// in the context (prompt_lookup.h). Drafting is free; the whole model verifies the drafts.
#pragma once

#include <array>

#include "drafter.h"

namespace ke {

// P(a lookup draft is accepted | the n-gram it continues), for drafts whose predecessors in the
// cycle were accepted: the j-th draft of a match of n tokens continues a match of n + j - 1.
// Longer matches are right more often; learned from verifications, shrunk towards a prior.
class LookupCalibration {
public:
    static constexpr int MAX_NGRAM = 8;
    void record(int ngram, bool accepted);
    double predict(int ngram) const;
    CalibrationTable table() const;  // for n = 1 .. MAX_NGRAM

private:
    std::array<int64_t, MAX_NGRAM + 1> seen_{}, accepted_{};
};

class LookupDrafter : public Drafter {
public:
    const char * name() const override { return "lookup"; }
    bool enabled_by(const DraftParams & params) const override { return params.lookup; }
    int exit_layer() const override { return 0; }
    // signal: the length of the match a draft continues
    Draft draft(const DraftRequest & r, const KeepDrafting & keep_drafting) override;
    double acceptance(float ngram) const override { return calibration_.predict((int) ngram); }
    void record_outcome(float ngram, bool accepted) override { calibration_.record((int) ngram, accepted); }
    // The fixed rule drafts after a match of at least two tokens (one matches too often by chance).
    bool confident(float ngram, float /*tau*/) const override { return ngram >= 2.0f; }
    CalibrationTable calibration_table() const override { return calibration_.table(); }

private:
    LookupCalibration calibration_;
    std::vector<int32_t> history_;  // scratch: the committed tokens and pending
};

}  // namespace ke
