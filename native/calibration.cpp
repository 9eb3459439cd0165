#include "calibration.h"

#include <utility>

namespace ke {

namespace {
// Pseudo-observations that pull a sparsely seen bin towards the prior.
constexpr double PRIOR_WEIGHT = 4.0;
}  // namespace

BinnedCalibration::BinnedCalibration(int n_bins, BinOf bin_of, Prior prior, std::vector<float> reported)
    : bin_of_(bin_of), prior_(prior), reported_(std::move(reported)), seen_(n_bins), accepted_(n_bins) {}

void BinnedCalibration::record(float signal, bool accepted) {
    const int b = bin_of_(signal);
    seen_[b] += 1;
    accepted_[b] += accepted ? 1 : 0;
}

double BinnedCalibration::predict(float signal) const {
    const int b = bin_of_(signal);
    return (accepted_[b] + PRIOR_WEIGHT * prior_(signal)) / (seen_[b] + PRIOR_WEIGHT);
}

CalibrationTable BinnedCalibration::table() const {
    CalibrationTable t;
    for (float s : reported_) {
        t.signal.push_back(s);
        t.acceptance.push_back(predict(s));
        t.count.push_back(seen_[bin_of_(s)]);
    }
    return t;
}

}  // namespace ke
