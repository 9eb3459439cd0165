// A drafter proposes the tokens that a speculative cycle asks the full model to verify. The
// decoder (decoder.h) knows drafters only through this interface: the Kangaroo adapter
// (adapter_drafter.h) and prompt lookup (lookup_drafter.h) are two implementations, and a new
// drafter is one new file plus one registration in Engine.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "sampling.h"

struct ggml_tensor;

namespace ke {

class GraphBuilder;
class KvCache;
struct StepInputs;

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
                                    // (drafters with exit_layer() > 0 only)
    std::vector<Distribution> q;    // draft distributions of d_1 .. d_k (sampling only)
    bool bonus = false;             // hidden also holds d_k's state: verification runs one more
                                    // row, whose token follows d_k (Drafter::add_bonus_row)
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
    Sampler & sampler;
};

class Drafter {
public:
    virtual ~Drafter() = default;
    virtual const char * name() const = 0;
    // Whether a generation with these options drafts with this drafter.
    virtual bool enabled_by(const DraftParams & /*params*/) const { return true; }

    // > 0: drafts carry the exit-layer states of their inputs, so verification runs only layers
    // [exit_layer(), L) over k rows (pending, d_1 .. d_{k-1}). 0: the whole model verifies
    // pending, d_1 .. d_k, and the last row gives a bonus token when every draft is accepted.
    virtual int exit_layer() const = 0;
    int verify_rows(int k) const { return exit_layer() > 0 ? k : k + 1; }
    int verify_rows(const Draft & d) const { return verify_rows((int) d.tokens.size()) + (d.bonus ? 1 : 0); }

    // Drafts up to r.max_drafts tokens following r.pending while keep_drafting agrees.
    virtual Draft draft(const DraftRequest & r, const KeepDrafting & keep_drafting) = 0;

    // The bonus row (drafters with exit_layer() > 0): runs the last draft d_k at r.pos + k through
    // the exit layers too, so that verification judges all k drafts and gives the model's own
    // token after d_k: a fully accepted cycle adds k + 1 tokens for less than a draft step.
    // Returns false when the drafter has no such row (lookup's rows already end with one).
    virtual bool add_bonus_row(const DraftRequest & /*r*/, Draft & /*d*/) { return false; }

    // P(draft accepted | its signal), learned from verifications (each drafter its own table).
    virtual double acceptance(float signal) const = 0;
    virtual void record_outcome(float signal, bool accepted) = 0;
    virtual CalibrationTable calibration_table() const = 0;
    // The fixed rule: is a draft with this signal worth making at threshold tau?
    virtual bool confident(float signal, float tau) const = 0;

    // Drafters with a cache of their own (the adapter's K/V) keep it in step with the sequence:
    // prefill sees prompt positions pos0 .. pos0+n-1 through their exit-layer states
    // [n, n_embd]; record does the same inside a graph that runs the whole model.
    virtual bool has_state() const { return false; }
    virtual void prefill(const float * /*hidden*/, int /*n*/, int /*pos0*/) {}
    virtual void record(GraphBuilder & /*b*/, ggml_tensor * /*hidden*/, const StepInputs & /*in*/) {}
    // Identifies the state record() writes (part of a cached graph's identity).
    virtual const KvCache * state() const { return nullptr; }
};

}  // namespace ke
