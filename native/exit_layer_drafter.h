// The side interface of a drafter that drafts from the exit layer (Kangaroo's adapter): its
// drafts carry the exit-layer states of their inputs, so verification runs only layers
// [exit_layer(), L), and it keeps a cache of its own (the adapter's K/V) in step with the
// sequence through the hooks below. The decoder asks each drafter once whether it is one.
#pragma once

#include "drafter.h"

struct ggml_tensor;

namespace ke {

class GraphBuilder;
class KvCache;
struct StepInputs;

class ExitLayerDrafter : public Drafter {
public:
    // N: drafts read the residual stream after layers [0, N).
    virtual int exit_layer() const = 0;
    // k drafts are verified as k rows: pending, d_1 .. d_{k-1} (their exit-layer states).
    using Drafter::verify_rows;
    int verify_rows(int k) const final { return k; }

    // The bonus row: runs the last draft d_k at r.pos + k through the exit layers too, so that
    // verification judges all k drafts and gives the model's own token after d_k: a fully
    // accepted cycle adds k + 1 tokens for less than a draft step.
    virtual void add_bonus_row(const DraftRequest & r, Draft & d) = 0;

    // Its cache in step with the sequence: prefill sees prompt positions pos0 .. pos0+n-1
    // through their exit-layer states [n, n_embd]; record does the same inside a graph that
    // runs the whole model (plain steps), on the states hidden [n_embd, n_tokens].
    virtual void prefill(const float * hidden, int n, int pos0) = 0;
    virtual void record(GraphBuilder & b, ggml_tensor * hidden, const StepInputs & in) = 0;
    // The cache record() writes (part of a cached graph's identity).
    virtual const KvCache & state() const = 0;
};

}  // namespace ke
