// P(draft accepted | a drafter's signal), learned from verifications. Each drafter has its own
// signal (the adapter's top-1 probability, the length of a lookup match) and bins it its own way;
// counting and shrinking towards a prior are the same for all.
#pragma once

#include <cstdint>
#include <vector>

#include "drafter.h"

namespace ke {

class BinnedCalibration {
public:
    using BinOf = int (*)(float signal);     // a signal's bin, in [0, n_bins)
    using Prior = double (*)(float signal);  // P(accepted) before any observation
    // reported: the signals table() describes the bins at.
    BinnedCalibration(int n_bins, BinOf bin_of, Prior prior, std::vector<float> reported);

    void record(float signal, bool accepted);
    // The bin's acceptance rate, shrunk towards the prior while the bin has few observations.
    double predict(float signal) const;
    CalibrationTable table() const;

private:
    BinOf bin_of_;
    Prior prior_;
    std::vector<float> reported_;
    std::vector<int64_t> seen_, accepted_;
};

}  // namespace ke
