// The graphs Kangaroo's drafter runs, one named method each. Their kinds belong here, not to the
// runner: each is a layer range of the base model with the adapter (adapter.h) on top.
#pragma once

#include <cstdint>

#include "adapter.h"
#include "runner.h"

namespace ke {

class AdapterGraphs {
public:
    AdapterGraphs(const Model & model, Runner & runner, KvCache & model_kv, Adapter & adapter);

    // One draft step: `token` at `pos` through layers [0, N) -> hidden [n_embd] (its exit-layer
    // state, kept for verification) -> the adapter -> the draft head -> draft_logits [draft vocab].
    void draft_step(int32_t token, int pos, float * hidden, float * draft_logits);
    // The bonus row's step: `token` at `pos` through layers [0, N) -> hidden [n_embd], and the
    // adapter's K/V at pos (a later draft attends over it); no adapter output, no head.
    void bonus_step(int32_t token, int pos, float * hidden);
    // Only the adapter's K/V at positions pos0 .. pos0+n-1, from exit-layer states [n, n_embd].
    void write_adapter_kv(const float * hidden, int n, int pos0);
    // The adapter's logits through the full LM head [n, n_vocab] for exit-layer states [n, n_embd].
    void adapter_logits(const float * hidden, int n, int pos0, float * out);

private:
    // One token at pos through layers [0, N), writing the model's and the adapter's K/V.
    GraphRun shallow_step(const GraphKind & kind, const int32_t & token, int pos, Output output) const;
    // n exit-layer states at pos0.. into the adapter alone (its own cache).
    GraphRun adapter_rows(const GraphKind & kind, const float * hidden, int n, int pos0, Output output) const;
    // The shallow layers [0, N) over the step's tokens -> [n_embd, n_tokens]
    ggml_tensor * shallow_layers(GraphBuilder & b, const StepInputs & in) const;

    const Model & model_;
    Runner & runner_;
    KvCache & model_kv_;
    Adapter & adapter_;
};

}  // namespace ke
