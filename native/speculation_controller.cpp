#include "speculation_controller.h"

#include <cmath>

namespace ke {

namespace {
// The cycle-gain average spans ~8 cycles: single cycles are all-or-nothing (a rejected first
// draft always loses a little, an accepted run wins a lot), so no single one should decide.
constexpr double GAIN_SMOOTHING = 0.125;
// Until measured, one more verified row is assumed to cost this fraction of a plain step (a
// batch of 4 costs ~2x one token on a 2-core CPU, less on GPUs).
constexpr double DEFAULT_ROW_COST = 0.3;
}  // namespace

// ---- RecentMedian ------------------------------------------------------------------------------

void RecentMedian::record(double s) {
    fastest_ = n_ == 0 ? s : std::min(fastest_, s);
    recent_[n_ % WINDOW] = s;
    n_ += 1;
    std::array<double, WINDOW> sorted = recent_;
    const int n = std::min(n_, WINDOW);
    std::nth_element(sorted.begin(), sorted.begin() + n / 2, sorted.begin() + n);
    median_ = sorted[n / 2];
}

// ---- CycleCosts --------------------------------------------------------------------------------

void CycleCosts::record_verify(int k, double s) {
    if (k >= 1 && k <= MAX_K) verify_[k].record(s);
}

double CycleCosts::verify(int k, const Drafter & d, double plain) const {
    k = std::clamp(k, 0, MAX_K);
    if (k == 0) return plain;
    if (verify_[k].known()) return verify_[k].seconds();
    double extrapolated = plain * (1.0 + (d.verify_rows(k) - 1) * DEFAULT_ROW_COST);
    for (int j = k - 1; j >= 1; --j) {
        if (verify_[j].known()) {
            extrapolated = verify_[j].seconds() + (d.verify_rows(k) - d.verify_rows(j)) * DEFAULT_ROW_COST * plain;
            break;
        }
    }
    return verify_[k].count() > 0 ? std::min(verify_[k].seconds(), extrapolated) : extrapolated;
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
    n_ += 1;
    gain_ += std::max(GAIN_SMOOTHING, 1.0 / n_) * (seconds - gain_);
    const bool was_probe = probing_;
    probing_ = false;
    if (gain_ >= 0.0 || n_ < MIN_CYCLES) {
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

int SpeculationController::add_drafter(const Drafter & d) {
    slots_.push_back(Slot{&d, CycleCosts(), PayoffGate()});
    return (int) slots_.size() - 1;
}

void SpeculationController::begin_generation() {
    for (Slot & s : slots_) s.gate.wake();
}

bool SpeculationController::wants_plain_step() {
    if (!plain_.known()) return true;
    return ++steps_ % REMEASURE_EVERY == 0;
}

bool SpeculationController::gate_allows(Slot & s) {
    if (s.gate.on()) return true;
    if (!s.gate.probe_due()) return false;
    stats_.probes += 1;
    return true;
}

double SpeculationController::extra_cost(const Slot & s, int k) const {
    const double plain = plain_.seconds();
    return s.costs.draft_step() + s.costs.verify(k + 1, *s.drafter, plain) - s.costs.verify(k, *s.drafter, plain);
}

KeepDrafting SpeculationController::keep_drafting(int slot) {
    double p_all = 1.0;  // chance that every draft so far, and the next, will be accepted
    return [this, slot, p_all](int k, float signal) mutable {
        Slot & s = slots_[slot];
        if (k >= CycleCosts::MAX_K) return false;
        if (std::isnan(signal)) return k > 0 || gate_allows(s);  // nothing to judge the first draft by
        p_all *= s.drafter->acceptance(signal);
        // the next draft adds a token, worth a plain step, only if it and all before it are right
        const bool worth = p_all * plain_.seconds() > extra_cost(s, k);
        return worth && (k > 0 || gate_allows(s));
    };
}

bool SpeculationController::bonus_row_pays(int slot, const Draft & draft) const {
    const Slot & s = slots_[slot];
    const int k = (int) draft.tokens.size();
    if (!plain_.known() || k < 1 || k >= CycleCosts::MAX_K) return false;
    double p_all = 1.0;
    for (float signal : draft.signal) p_all *= s.drafter->acceptance(signal);
    const double plain = plain_.seconds();
    const double cost = s.costs.bonus_step() + s.costs.verify(k + 1, *s.drafter, plain) - s.costs.verify(k, *s.drafter, plain);
    return p_all * plain > cost;
}

void SpeculationController::record_plain(double seconds) {
    plain_.record(seconds);
    stats_.plain_steps += 1;
}

void SpeculationController::record_cycle(int slot, int k, bool bonus, int tokens, double draft_seconds,
                                         double bonus_seconds, double verify_seconds) {
    Slot & s = slots_[slot];
    if (k < 1) return;
    s.costs.record_draft_step(draft_seconds / k);
    if (bonus) s.costs.record_bonus_step(bonus_seconds);
    s.costs.record_verify(k + (bonus ? 1 : 0), verify_seconds);
    if (!plain_.known()) return;  // no yardstick yet (a fixed tau): nothing to judge the gain by
    const double spent = draft_seconds + bonus_seconds + verify_seconds;
    if (s.gate.record(tokens * plain_.seconds() - spent)) stats_.switches_off += 1;
}

}  // namespace ke
