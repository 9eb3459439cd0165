// A drafter proposes the tokens that a speculative step asks the full model to verify. Besides
// the tokens it hands over the exit-layer hidden states of the verified inputs, so verification
// only runs the deep layers [N, L). The Kangaroo adapter is one implementation.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "sampling.h"

struct ggml_tensor;

namespace ke {

class GraphBuilder;
struct StepInputs;

struct DraftParams {
    float tau = 0.6f;  // stop drafting once the draft's top-1 probability is below tau
    int gamma = 6;     // and after at most gamma drafts
    // Instead of tau, let the speculation controller decide when to draft at all and when to
    // stop (gamma still caps a draft).
    bool auto_tune = false;
    // Also draft by prompt lookup (prompt_lookup.h): with auto_tune where the controller expects
    // those drafts to pay, otherwise whenever the latest tokens occurred before (up to gamma).
    bool lookup = false;
};

// Asked after the k-th draft token with the drafter's top-1 probability for it: draft another?
using KeepDrafting = std::function<bool(int k, float confidence)>;

struct Draft {
    std::vector<int32_t> tokens;    // d_1 .. d_k
    std::vector<float> hidden;      // [k, n_embd] exit-layer states of the inputs pending, d_1 .. d_{k-1}
    std::vector<float> confidence;  // the drafter's top-1 probability at each draft step
    std::vector<Distribution> q;    // draft distributions of d_1 .. d_k (sampling only)
};

class Drafter {
public:
    virtual ~Drafter() = default;
    virtual int exit_layer() const = 0;
    // Lets the drafter see prompt positions pos0 .. pos0+n-1 through their exit-layer states
    // [n, n_embd] (the adapter fills its own KV cache).
    virtual void prefill(const float * hidden, int n, int pos0) = 0;
    // The same inside a graph that runs the full model (a plain step): adds what the drafter
    // keeps of the step's positions, from their exit-layer states `hidden` [n_embd, n_tokens].
    virtual void record(GraphBuilder & b, ggml_tensor * hidden, const StepInputs & in) = 0;
    // Identifies the state record() writes (part of a cached graph's identity).
    virtual const void * state() const = 0;
    // Drafts up to max_drafts tokens following `pending`, which sits at position `pos`, while
    // keep_drafting agrees.
    virtual Draft draft(int32_t pending, int pos, int max_drafts, const KeepDrafting & keep_drafting,
                        const SamplingParams & sampling, Sampler & sampler) = 0;
};

}  // namespace ke
