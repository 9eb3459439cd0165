// A drafter proposes the tokens that a speculative cycle asks the full model to verify. The
// decoder (decoder.h) knows drafters only through this interface: the Kangaroo adapter
// (adapter_drafter.h) and prompt lookup (lookup_drafter.h) are two implementations, and a new
// drafter is one new file plus one registration in Engine. A drafter that drafts from the exit
// layer also implements the side interface ExitLayerDrafter (exit_layer_drafter.h).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "logits_mask.h"
#include "sampling.h"

namespace ke {

// Most drafts one cycle may verify (the gamma limit), and the default gamma and tau of the
// paper's rule: the one owner of these numbers, exported to Python by the bindings.
constexpr int MAX_GAMMA = 64;
constexpr int DEFAULT_GAMMA = 6;
constexpr float DEFAULT_TAU = 0.6f;

struct DraftParams {
    enum class Mode {
        Off,        // plain decoding: one token per step
        Threshold,  // the paper's rule: stop drafting below tau, after at most gamma drafts
        Auto,       // the speculation controller decides whether and how far (gamma caps it)
    };
    Mode mode = Mode::Auto;
    float tau = DEFAULT_TAU;
    int gamma = DEFAULT_GAMMA;
    bool lookup = false;  // let prompt lookup draft too
    void validate() const;  // throws InvalidArgument naming the bad parameter
};

// A drafter's evidence for a draft it has not judged yet (the adapter's first draft).
constexpr float NO_SIGNAL = std::numeric_limits<float>::quiet_NaN();

// Asked before each further draft: make draft k + 1, after k drafts? `signal` is the drafter's
// evidence that it would be right (NO_SIGNAL when it has none).
using KeepDrafting = std::function<bool(int k, float signal)>;

struct Draft {
    std::vector<int32_t> tokens;    // d_1 .. d_k
    std::vector<float> signal;      // the evidence each draft was made on (what outcomes are learned by)
    std::vector<float> hidden;      // [k, n_embd] exit-layer states of the inputs pending, d_1 .. d_{k-1}
                                    // (ExitLayerDrafter only)
    bool bonus = false;             // hidden also holds d_k's state: verification runs one more
                                    // row, whose token follows d_k (ExitLayerDrafter::add_bonus_row)
};

// What a drafter has learned about its signal: P(accepted) and how many drafts were judged,
// at representative signal values (for `bench --tune` and the docs).
struct CalibrationTable {
    std::vector<float> signal;
    std::vector<double> acceptance;
    std::vector<int64_t> count;
};

struct DraftRequest {
    int32_t pending;                       // the newest token, at position pos
    int pos;
    int max_drafts;
    const std::vector<int32_t> & history;  // the committed tokens before pending
    const SamplingParams & sampling;
    const Sampler & sampler;  // the generation's: a sampled draft uses its noise (sampling.h)
    // The generation's constraint along the draft (null: none). A drafter drafts only tokens it
    // allows, push()es each, and stops once it allows none of its candidates or ended().
    DraftMask * constraint = nullptr;
};

class Drafter {
public:
    virtual ~Drafter() = default;
    virtual const char * name() const = 0;
    // Whether a generation with these options drafts with this drafter.
    virtual bool enabled_by(const DraftParams & /*params*/) const { return true; }

    // Rows verification runs for k drafts: here the whole model over pending, d_1 .. d_k, whose
    // last row gives a bonus token when every draft is accepted (ExitLayerDrafter: k rows).
    virtual int verify_rows(int k) const { return k + 1; }
    int verify_rows(const Draft & d) const { return verify_rows((int) d.tokens.size()) + (d.bonus ? 1 : 0); }

    // Drafts up to r.max_drafts tokens following r.pending while keep_drafting agrees.
    virtual Draft draft(const DraftRequest & r, const KeepDrafting & keep_drafting) = 0;

    // P(draft accepted | its signal), learned from verifications (each drafter its own table).
    virtual double acceptance(float signal) const = 0;
    virtual void record_outcome(float signal, bool accepted) = 0;
    virtual CalibrationTable calibration_table() const = 0;
    // The fixed rule: is a draft with this signal worth making at threshold tau?
    virtual bool confident(float signal, float tau) const = 0;
};

}  // namespace ke
