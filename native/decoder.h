// Decoding one sequence: plain decoding (one token per step) and speculative cycles with the
// registered drafters (Kangaroo's adapter, prompt lookup), through one prefill, one step and one
// commit path, so that a token comes out the same whichever way it was produced.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "drafter.h"
#include "exit_layer_drafter.h"
#include "logits_mask.h"
#include "penalties.h"
#include "runner.h"
#include "sequence.h"
#include "speculation_controller.h"
#include "tokenizer.h"

namespace ke {

struct DrafterCounts {
    std::string name;
    int64_t cycles = 0;    // verifications of this drafter's drafts
    int64_t drafted = 0;
    int64_t accepted = 0;
};

// Counters of one generation (since start()).
struct DecodeStats {
    int64_t n_cached = 0;  // prompt tokens taken from the cache instead of evaluated
    int64_t cycles = 0;    // verifications
    int64_t bonus_rows = 0;  // of them, with a bonus row (Drafter::add_bonus_row)
    int64_t drafted = 0;   // draft tokens proposed
    int64_t accepted = 0;  // draft tokens the model agreed with
    int64_t tokens = 0;    // tokens committed by cycles (accepted + the model's own)
    std::vector<int64_t> accepted_hist;  // [a]: cycles that accepted a drafts
    double draft_seconds = 0.0;
    double verify_seconds = 0.0;
    std::vector<DrafterCounts> by_drafter;  // in registration order
};

class Decoder {
public:
    Decoder(const Model & model, Runner & runner, Sequence & sequence, const Tokenizer & tokenizer, Sampler & sampler);

    // The drafters a step may use, tried in this order (none: plain decoding only). The decoder
    // does not own them; at most one may draft from the exit layer (ExitLayerDrafter: it keeps a
    // cache of its own in step with the sequence).
    void set_drafters(const std::vector<Drafter *> & drafters);
    const std::vector<Drafter *> & drafters() const { return drafters_; }

    // Evaluates the prompt, reusing the cached prefix the sequence (and the stateful drafter's
    // cache) still holds, and returns the first new token. With a mask, every token of the
    // generation comes from the masked distribution (plain steps and every verified row alike);
    // the sampling's repetition penalties apply the same way, over the output before each row.
    int32_t start(const std::vector<int32_t> & prompt, const SamplingParams & sampling,
                  std::shared_ptr<LogitsMask> mask = nullptr);
    // One step: a plain step or one cycle (draft, verify, accept, roll back). Returns the tokens
    // it adds after the pending one (1 .. max_new, ending at an end-of-generation token); the
    // last of them becomes the new pending token.
    std::vector<int32_t> step(const DraftParams & params, int max_new);

    const DecodeStats & stats() const { return stats_; }
    const SpeculationController & controller() const { return controller_; }
    // The last step's verified inputs and its logits [inputs, n_vocab] (row j: after input j),
    // for checks that verification computes what plain steps compute.
    const std::vector<int32_t> & last_inputs() const { return inputs_; }
    const std::vector<float> & last_logits() const { return logits_; }

private:
    std::vector<int32_t> plain_step();
    // Whether drafter `slot`'s k drafts get a bonus row (at most max_rows rows may be verified).
    bool wants_bonus_row(const DraftParams & params, int slot, const Draft & draft, int max_rows) const;
    // Verifies drafter `slot`'s draft, keeps the agreeing prefix, commits it.
    std::vector<int32_t> cycle(int slot, const Draft & draft, double draft_seconds, double bonus_seconds);
    // The whole model over tokens at the sequence's end, one row per token (plain decoding's
    // graph for one row), with the stateful drafter's cache kept in step -> [rows, n_vocab].
    void run_whole_model(const std::vector<int32_t> & tokens);
    // The tokens a cycle adds; *n_accepted counts the drafts among them.
    std::vector<int32_t> accept(const Draft & draft, int rows, int * n_accepted);
    // Ends `out` at its first end-of-generation token, commits the inputs whose K/V are now
    // final (pending and the accepted drafts that were run) and makes out.back() pending.
    void commit(const std::vector<int32_t> & inputs, std::vector<int32_t> & out);
    // Drafter `slot` as an ExitLayerDrafter, or null (it drafts with the core interface alone).
    ExitLayerDrafter * exit_layer_drafter(int slot) const;
    // Row `row` of logits_ under the generation's penalties and constraint (none: unchanged),
    // and both told that `token` is output. Rows are judged in order and row j only after the
    // drafts before it were accepted, so row j sees the output up to d_(j-1), as a plain step would.
    void constrain(int row);
    void emit(int32_t token);

    const Model & model_;
    Runner & runner_;
    Sequence & sequence_;
    const Tokenizer & tokenizer_;
    Sampler & sampler_;
    std::vector<Drafter *> drafters_;
    ExitLayerDrafter * exit_drafter_ = nullptr;  // the one of drafters_ that drafts from the exit layer, or null
    SamplingParams sampling_;
    std::shared_ptr<LogitsMask> mask_;  // this generation's constraint, or null
    MaskedRow masked_row_;
    PenaltyWindow penalties_;           // this generation's output, for the repetition penalties
    int32_t pending_ = -1;              // the newest token: chosen, not yet run through the model
    std::vector<int32_t> inputs_;       // [rows] the last verification's inputs (or plain step's)
    std::vector<float> logits_;         // [rows, n_vocab] their logits
    DecodeStats stats_;
    SpeculationController controller_;
};

}  // namespace ke
