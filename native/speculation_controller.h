// Whether to speculate, and how far to draft, from what speculation costs and earns on the
// machine it runs on. On a laptop CPU verifying k tokens costs far more than one token, so a
// draft only pays when it is very likely right; the controller measures that instead of assuming
// it (docs/kangaroo.md, "The speculation controller").
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace ke {

// Running averages of step costs, in seconds.
class StepCosts {
public:
    static constexpr int MAX_K = 64;
    void record_plain(double s);
    void record_draft_step(double s) { update(draft_, n_draft_, s); }
    void record_verify(int k, double s);

    bool knows_plain() const { return n_plain_ >= 3; }
    // The median of the recent plain steps: one step slowed by another process must not make
    // speculation look good for the rest of the run.
    double plain() const { return plain_; }
    double draft_step() const { return draft_; }
    // Verifying k rows: measured, else extrapolated from the nearest measured smaller batch.
    double verify(int k) const;
    // The same through all layers (lookup drafts have no exit-layer states to start from):
    // measured, else the deep-layer verification's cost scaled to one row costing a plain step.
    void record_full_verify(int rows, double s);
    double full_verify(int rows) const;

private:
    static void update(double & avg, int & n, double s);
    static constexpr int PLAIN_WINDOW = 9;
    std::array<double, PLAIN_WINDOW> recent_plain_{};
    double plain_ = 0.0, draft_ = 0.0;
    int n_plain_ = 0, n_draft_ = 0;
    std::array<double, MAX_K + 1> verify_{}, full_verify_{};
    std::array<int, MAX_K + 1> n_verify_{}, n_full_verify_{};
};

// P(draft accepted | the drafter's top-1 probability), learned from verifications: binned
// counts, shrunk towards the confidence itself while a bin has few observations.
class AcceptanceCalibration {
public:
    static constexpr int BINS = 20;
    void record(float confidence, bool accepted);
    double predict(float confidence) const;
    std::vector<double> table() const;  // predict() at each bin's centre
    std::vector<int64_t> counts() const { return {seen_.begin(), seen_.end()}; }

private:
    static int bin(float confidence);
    std::array<int64_t, BINS> seen_{}, accepted_{};
};

// P(a lookup draft is accepted | the n-gram it continues), for drafts whose predecessors in the
// cycle were accepted: the j-th draft of a match of n tokens continues a match of n + j - 1.
// Longer matches are right more often; learned from verifications, shrunk towards a prior.
class LookupCalibration {
public:
    static constexpr int MAX_NGRAM = 8;
    void record(int ngram, bool accepted);
    double predict(int ngram) const;
    std::vector<double> table() const;  // predict(n) for n = 1 .. MAX_NGRAM
    std::vector<int64_t> counts() const { return {seen_.begin() + 1, seen_.end()}; }

private:
    std::array<int64_t, MAX_NGRAM + 1> seen_{}, accepted_{};
};

// Keeps a drafter on while its cycles gain time over plain decoding on average (~8 cycles), and
// otherwise off, letting a probe through after 8 chances to draft, then 16, 32 ... up to 128
// while probes keep losing.
class PayoffGate {
public:
    static constexpr int MIN_BACKOFF = 8;
    static constexpr int MAX_BACKOFF = 128;  // at most ~1% of steps are probes that may lose
    bool on() const { return on_; }
    // While off, a chance to draft: true when a probe is due.
    bool probe_due();
    // A cycle gained `seconds` over decoding its tokens plainly (negative: lost). Returns true
    // when this switches the drafter off.
    bool record(double seconds);
    // A new generation: if off, probe soon (its content may suit the drafter).
    void wake() { if (!on_) left_ = std::min(left_, MIN_BACKOFF); }

private:
    bool on_ = true;
    bool probing_ = false;  // the current cycle is a probe made while off
    double gain_ = 0.0;     // running average of the cycles' gains
    int backoff_ = MIN_BACKOFF;
    int left_ = 0;          // chances to let pass before the next probe
};

struct ControllerStats {
    int64_t plain_steps = 0;  // tokens the controller decoded without drafting
    int64_t probes = 0;       // speculative cycles tried while speculation was off
    int64_t switches_off = 0;
};

class SpeculationController {
public:
    // A new generation: speculation starts on and the first cycles re-judge it.
    void begin_generation();
    // Before a step: draft (true) or decode one token plainly (false)?
    bool should_speculate();
    // After the k-th draft, whose chance that it and all drafts before it are accepted is
    // p_all: is one more draft worth its cost (a draft step and a one-row-larger verification)?
    bool draft_more(int k, double p_all) const;
    // How many of `available` lookup drafts, continuing a match of `ngram` tokens, to verify:
    // the count with the largest expected saving over plain decoding; 0 when none saves, or
    // when lookup cycles have been losing time (then a probe now and then).
    int lookup_drafts(int ngram, int available);

    void record_plain(double seconds);
    void record_draft_step(double seconds) { costs_.record_draft_step(seconds); }
    void record_verify(int k, double seconds) { costs_.record_verify(k, seconds); }
    void record_draft_outcome(float confidence, bool accepted) { calibration_.record(confidence, accepted); }
    void record_full_verify(int rows, double seconds) { costs_.record_full_verify(rows, seconds); }
    void record_lookup_outcome(int ngram, bool accepted) { lookup_calibration_.record(ngram, accepted); }
    // A speculative cycle that added `tokens` tokens in `seconds`, drafting included.
    void record_cycle(int tokens, double seconds);
    void record_lookup_cycle(int tokens, double seconds) { lookup_gate_.record(tokens * costs_.plain() - seconds); }

    double acceptance(float confidence) const { return calibration_.predict(confidence); }
    const StepCosts & costs() const { return costs_; }
    const AcceptanceCalibration & calibration() const { return calibration_; }
    const LookupCalibration & lookup_calibration() const { return lookup_calibration_; }
    const ControllerStats & stats() const { return stats_; }
    void reset_stats() { stats_ = ControllerStats(); }

private:
    static constexpr int REMEASURE_EVERY = 32;  // while on, one plain step in this many keeps
                                                // the yardstick current (context grows, load changes)
    StepCosts costs_;
    AcceptanceCalibration calibration_;
    LookupCalibration lookup_calibration_;
    ControllerStats stats_;
    PayoffGate gate_;         // the adapter's drafting
    PayoffGate lookup_gate_;  // prompt lookup's
    int steps_on_ = 0;       // steps since the last plain one while on
};

}  // namespace ke
