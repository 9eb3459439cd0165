// Kangaroo self-speculative decoding (arXiv 2404.18911): the shallow layers plus the adapter
// draft, the deep layers verify the whole draft in one batch, and the agreeing prefix is kept.
#pragma once

#include <cstdint>
#include <vector>

#include "adapter.h"
#include "drafter.h"
#include "runner.h"
#include "sequence.h"
#include "speculation_controller.h"

namespace ke {

// Drafting with the adapter: the newest token through layers [0, N) (whose K/V are the full
// model's own for those layers) and the adapter, then the LM head; repeat on the draft.
class AdapterDrafter : public Drafter {
public:
    AdapterDrafter(const Model & model, Runner & runner, KvCache & model_kv, Adapter & adapter);
    int exit_layer() const override { return adapter_.params().exit_layer; }
    void prefill(const float * hidden, int n, int pos0) override;
    void record(GraphBuilder & b, ggml_tensor * hidden, const StepInputs & in) override;
    const void * state() const override { return &adapter_.kv(); }
    Draft draft(int32_t pending, int pos, int max_drafts, const KeepDrafting & keep_drafting,
                const SamplingParams & sampling, Sampler & sampler) override;
    // The adapter's logits [n, n_vocab] for exit-layer states [n, n_embd] at pos0.. (for checks).
    void logits(const float * hidden, int n, int pos0, float * out);

private:
    const Model & model_;
    Runner & runner_;
    KvCache & model_kv_;
    Adapter & adapter_;
    std::vector<float> logits_;  // [n_vocab] of the last draft step
};

struct KangarooStats {
    int64_t cycles = 0;    // verifications
    int64_t drafted = 0;   // draft tokens proposed
    int64_t accepted = 0;  // draft tokens the model agreed with
    int64_t tokens = 0;    // tokens committed by cycles (accepted + the model's own)
    std::vector<int64_t> accepted_hist;  // [a]: cycles that accepted a drafts
    double draft_seconds = 0.0;
    double verify_seconds = 0.0;
    // of the above, the cycles that drafted by prompt lookup
    int64_t lookup_cycles = 0;
    int64_t lookup_drafted = 0;
    int64_t lookup_accepted = 0;
};

class KangarooDecoder {
public:
    KangarooDecoder(const Model & model, Runner & runner, Sequence & sequence, Drafter & drafter, Sampler & sampler);

    // Prefills the prompt into every cache and returns the first new token.
    int32_t start(const std::vector<int32_t> & prompt, const SamplingParams & sampling);
    // One cycle: draft, verify, accept, roll back. Returns the tokens it adds after the pending
    // one (at least one); the last of them becomes the new pending token.
    std::vector<int32_t> step(const DraftParams & params, int max_new);
    const KangarooStats & stats() const { return stats_; }
    const SpeculationController & controller() const { return controller_; }

private:
    // The pending token and `drafts` (prompt lookup's, continuing a match of `ngram` tokens)
    // through the whole model in one graph, with the drafter's cache kept in step. Without
    // drafts this is exactly plain decoding's step.
    std::vector<int32_t> whole_model_step(const std::vector<int32_t> & drafts, int ngram);
    // Prompt lookup's drafts for this step that the controller expects to pay (may be none).
    std::vector<int32_t> lookup_drafts(const DraftParams & params, int max_new, int * ngram);
    std::vector<int32_t> speculative_step(const DraftParams & params, int max_new);
    // The tokens a cycle adds; *n_accepted counts the drafts among them.
    std::vector<int32_t> accept(const Draft & draft, int k, int * n_accepted);
    void count_cycle(int drafted, int accepted, int tokens);

    const Model & model_;
    Runner & runner_;
    Sequence & sequence_;
    Drafter & drafter_;
    Sampler & sampler_;
    SamplingParams sampling_;
    int32_t pending_ = -1;      // the newest token: chosen, not yet run through the model
    int drafter_valid_ = 0;     // positions whose drafter K/V match the sequence
    std::vector<float> verify_logits_;  // [rows, n_vocab] of the last verification
    KangarooStats stats_;
    SpeculationController controller_;
};

}  // namespace ke
