#include "speculation_controller.h"

#include <algorithm>

namespace ke {

namespace {
// Running averages weigh recent steps (context grows, other processes come and go) but smooth
// single-step noise.
constexpr double COST_SMOOTHING = 0.1;
// The cycle-gain average spans ~8 cycles: single cycles are all-or-nothing (a rejected first
// draft always loses a little, an accepted run wins a lot), so no single one should decide.
constexpr double GAIN_SMOOTHING = 0.125;
// Pseudo-observations that pull a sparsely seen confidence bin towards the confidence itself.
constexpr double PRIOR_WEIGHT = 4.0;
// Until measured, one more verified row is assumed to cost this fraction of a plain step (a
// batch of 4 costs ~2x one token on a 2-core CPU, less on GPUs).
constexpr double DEFAULT_ROW_COST = 0.3;
// Until learned, P(lookup draft accepted | it continues an n-gram match of n tokens), n = 1..8:
// measured on SmolLM2-135M's greedy answers to the 240 Spec-Bench dev questions
// (docs/benchmarks.md, "Prompt lookup"); longer matches are right more often.
constexpr std::array<double, LookupCalibration::MAX_NGRAM + 1> LOOKUP_PRIOR = {
    0.0, 0.25, 0.55, 0.67, 0.72, 0.78, 0.76, 0.84, 0.87};
}  // namespace

// ---- StepCosts ---------------------------------------------------------------------------------

void StepCosts::update(double & avg, int & n, double s) {
    avg = n == 0 ? s : avg + COST_SMOOTHING * (s - avg);
    n += 1;
}

void StepCosts::record_plain(double s) {
    recent_plain_[n_plain_ % PLAIN_WINDOW] = s;
    n_plain_ += 1;
    std::array<double, PLAIN_WINDOW> sorted = recent_plain_;
    const int n = std::min(n_plain_, PLAIN_WINDOW);
    std::nth_element(sorted.begin(), sorted.begin() + n / 2, sorted.begin() + n);
    plain_ = sorted[n / 2];
}

void StepCosts::record_verify(int k, double s) {
    if (k < 1 || k > MAX_K) return;
    update(verify_[k], n_verify_[k], s);
}

double StepCosts::verify(int k) const {
    k = std::clamp(k, 1, MAX_K);
    if (n_verify_[k] > 0) return verify_[k];
    for (int j = k - 1; j >= 1; --j) {
        if (n_verify_[j] > 0) return verify_[j] + (k - j) * DEFAULT_ROW_COST * plain_;
    }
    return plain_ * (1.0 + (k - 1) * DEFAULT_ROW_COST);
}

void StepCosts::record_full_verify(int rows, double s) {
    if (rows < 1 || rows > MAX_K) return;
    update(full_verify_[rows], n_full_verify_[rows], s);
}

double StepCosts::full_verify(int rows) const {
    rows = std::clamp(rows, 1, MAX_K);
    if (n_full_verify_[rows] > 0) return full_verify_[rows];
    if (rows == 1) return plain_;
    return plain_ * verify(rows) / std::max(verify(1), 1e-9);
}

// ---- AcceptanceCalibration ---------------------------------------------------------------------

int AcceptanceCalibration::bin(float confidence) {
    return std::clamp((int) (confidence * BINS), 0, BINS - 1);
}

void AcceptanceCalibration::record(float confidence, bool accepted) {
    const int b = bin(confidence);
    seen_[b] += 1;
    accepted_[b] += accepted ? 1 : 0;
}

double AcceptanceCalibration::predict(float confidence) const {
    const int b = bin(confidence);
    const double prior = std::clamp((double) confidence, 0.0, 1.0);
    return (accepted_[b] + PRIOR_WEIGHT * prior) / (seen_[b] + PRIOR_WEIGHT);
}

std::vector<double> AcceptanceCalibration::table() const {
    std::vector<double> t(BINS);
    for (int b = 0; b < BINS; ++b) t[b] = predict((b + 0.5f) / BINS);
    return t;
}

// ---- LookupCalibration -------------------------------------------------------------------------

void LookupCalibration::record(int ngram, bool accepted) {
    const int n = std::clamp(ngram, 1, MAX_NGRAM);
    seen_[n] += 1;
    accepted_[n] += accepted ? 1 : 0;
}

double LookupCalibration::predict(int ngram) const {
    const int n = std::clamp(ngram, 1, MAX_NGRAM);
    return (accepted_[n] + PRIOR_WEIGHT * LOOKUP_PRIOR[n]) / (seen_[n] + PRIOR_WEIGHT);
}

std::vector<double> LookupCalibration::table() const {
    std::vector<double> t;
    for (int n = 1; n <= MAX_NGRAM; ++n) t.push_back(predict(n));
    return t;
}

// ---- PayoffGate --------------------------------------------------------------------------------

bool PayoffGate::probe_due() {
    if (left_ > 0) {
        left_ -= 1;
        return false;
    }
    probing_ = true;
    return true;
}

bool PayoffGate::record(double seconds) {
    gain_ += GAIN_SMOOTHING * (seconds - gain_);
    const bool was_probe = probing_;
    probing_ = false;
    if (gain_ >= 0.0) {
        if (was_probe) backoff_ = MIN_BACKOFF;
        on_ = true;
        return false;
    }
    const bool switched_off = on_;
    if (!on_) backoff_ = std::min(2 * backoff_, MAX_BACKOFF);  // another losing probe: wait longer
    on_ = false;
    left_ = backoff_;
    return switched_off;
}

// ---- SpeculationController ---------------------------------------------------------------------

void SpeculationController::begin_generation() {
    // Costs, calibration and the gain estimates carry over (same machine, same adapter).
    gate_.wake();
    lookup_gate_.wake();
}

bool SpeculationController::should_speculate() {
    if (!costs_.knows_plain()) return false;  // a few plain steps first: the yardstick
    if (gate_.on()) return ++steps_on_ % REMEASURE_EVERY != 0;
    if (!gate_.probe_due()) return false;
    stats_.probes += 1;
    return true;
}

void SpeculationController::record_plain(double seconds) {
    costs_.record_plain(seconds);
    stats_.plain_steps += 1;
}

void SpeculationController::record_cycle(int tokens, double seconds) {
    if (gate_.record(tokens * costs_.plain() - seconds)) stats_.switches_off += 1;
}

bool SpeculationController::draft_more(int k, double p_all) const {
    if (k >= StepCosts::MAX_K) return false;
    // One more draft adds an expected p_all tokens (it counts only if all k so far are right),
    // each worth a plain step; it costs a draft step and one more verified row.
    const double extra_cost = costs_.draft_step() + costs_.verify(k + 1) - costs_.verify(k);
    return p_all * costs_.plain() > extra_cost;
}

int SpeculationController::lookup_drafts(int ngram, int available) {
    if (ngram < 1 || !costs_.knows_plain()) return 0;
    // k drafts verified as k + 1 rows through the whole model yield 1 + (accepted drafts)
    // tokens; plain decoding pays a plain step for each.
    double p_all = 1.0, expected = 1.0;
    double best_gain = 0.0;
    int best = 0;
    for (int k = 1; k <= std::min(available, StepCosts::MAX_K - 1); ++k) {
        p_all *= lookup_calibration_.predict(ngram + k - 1);
        expected += p_all;
        const double gain = expected * costs_.plain() - costs_.full_verify(k + 1);
        if (gain > best_gain) {
            best_gain = gain;
            best = k;
        }
    }
    if (best > 0 && !lookup_gate_.on() && !lookup_gate_.probe_due()) return 0;
    return best;
}

}  // namespace ke
