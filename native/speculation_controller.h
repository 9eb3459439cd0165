// Whether to speculate, and how far to draft, from what speculation costs and earns on the
// machine it runs on. On a laptop CPU verifying k tokens costs far more than one token, so a
// draft only pays when it is very likely right; the controller measures that instead of assuming
// it (docs/kangaroo.md, "The speculation controller"). It knows drafters only through the
// Drafter interface: each has its own costs and payoff gate here, and its own calibration.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "drafter.h"

namespace ke {

// A step's cost in seconds: the median of the recent ones, so that one step slowed by another
// process moves it little. Until a few steps are in, the fastest so far: a slow first step must
// not make the controller stop taking the steps that would correct it.
class RecentMedian {
public:
    static constexpr int MIN_STEPS = 3;  // before the median means anything
    void record(double seconds);
    bool known() const { return n_ >= MIN_STEPS; }
    int count() const { return n_; }
    double seconds() const { return n_ == 0 ? 0.0 : known() ? median_ : fastest_; }

private:
    static constexpr int WINDOW = 9;
    std::array<double, WINDOW> recent_{};
    double median_ = 0.0;
    double fastest_ = 0.0;
    int n_ = 0;
};

// One drafter's cycle costs, in seconds, per number of drafts k.
class CycleCosts {
public:
    static constexpr int MAX_K = MAX_GAMMA;
    void record_draft_step(double s) { draft_.record(s); }
    void record_bonus_step(double s) { bonus_.record(s); }
    void record_verify(int k, double s);
    double draft_step() const { return draft_.seconds(); }
    // The bonus row's step (the last draft through the exit layers alone): until measured, half
    // a draft step (it skips the adapter and the draft head).
    double bonus_step() const { return bonus_.count() > 0 ? bonus_.seconds() : 0.5 * draft_step(); }
    bool bonus_step_measured() const { return bonus_.count() > 0; }
    bool measured(int k) const { return k >= 1 && k <= MAX_K && verify_[k].count() > 0; }
    // Verifying k drafts (k = 0: a plain step): the median of its recent verifications once a few
    // are in; before that, extrapolated from the nearest smaller k whose cost is known, each further
    // row priced at a fraction of a plain step, or the fastest measured if faster still.
    double verify(int k, const Drafter & d, double plain) const;

private:
    RecentMedian draft_, bonus_;
    std::array<RecentMedian, MAX_K + 1> verify_{};
};

// Keeps a drafter on while its cycles gain time over plain decoding on average (~8 cycles), and
// otherwise off, letting a probe through after 8 chances to draft, then 16, 32 ... up to 128
// while probes keep losing. A drafter's first cycles are judged together: one cycle slowed by
// another process, or one unlucky draft, must not switch off a drafter that pays.
class PayoffGate {
public:
    static constexpr int MIN_CYCLES = 4;  // judged before a loss can switch the drafter off
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
    double gain_ = 0.0;     // average of the cycles' gains: their mean up to ~8, then running
    int n_ = 0;             // cycles judged
    int backoff_ = MIN_BACKOFF;
    int left_ = 0;          // chances to let pass before the next probe
};

struct ControllerStats {
    int64_t plain_steps = 0;  // tokens the controller decoded without drafting
    int64_t probes = 0;       // speculative cycles tried while a drafter was off
    int64_t switches_off = 0; // times a payoff gate switched its drafter off
};

class SpeculationController {
public:
    // Registers a drafter; returns its slot. Costs, gates and calibration carry over between
    // generations (same machine, same drafter).
    int add_drafter(const Drafter & d);
    void clear_drafters() { slots_.clear(); }
    // A new generation: drafters that were off probe soon.
    void begin_generation();
    // Before a step: decode this token plainly to measure (or re-measure) the yardstick?
    bool wants_plain_step();
    // The Auto rule for one cycle of drafter `slot`: draft again while the expected tokens the
    // next draft adds (all drafts so far right, and it too) are worth more than it costs (a
    // draft step and a larger verification); the first draft also needs the payoff gate.
    KeepDrafting keep_drafting(int slot);
    // The Auto rule for the bonus row after drafter `slot`'s k drafts: when the chance that all
    // of them are right, times a plain step (the token it adds), beats its cost (the bonus step
    // and one more verified row).
    bool bonus_row_pays(int slot, const Draft & draft) const;

    void record_plain(double seconds);
    // A cycle of drafter `slot`: k drafts (and a bonus row, or not), `tokens` added, the time
    // drafting, the bonus step and verifying took. Its verification is recorded under k + 1
    // drafts when it ran a bonus row: both run the same rows.
    void record_cycle(int slot, int k, bool bonus, int tokens, double draft_seconds, double bonus_seconds,
                      double verify_seconds);

    const RecentMedian & plain() const { return plain_; }
    const CycleCosts & costs(int slot) const { return slots_[slot].costs; }
    const ControllerStats & stats() const { return stats_; }
    void reset_stats() { stats_ = ControllerStats(); }

private:
    struct Slot {
        const Drafter * drafter;
        CycleCosts costs;
        PayoffGate gate;
    };
    bool gate_allows(Slot & s);
    double extra_cost(const Slot & s, int k) const;  // of draft k + 1 after k drafts

    // While speculating, one plain step in this many keeps the yardstick current (the context
    // grows, the machine's load changes).
    static constexpr int REMEASURE_EVERY = 32;
    RecentMedian plain_;  // the plain step's cost
    std::vector<Slot> slots_;
    ControllerStats stats_;
    int steps_ = 0;
};

}  // namespace ke
