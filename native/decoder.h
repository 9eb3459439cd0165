// Decoding one sequence: plain decoding (one token per step) and speculative cycles with the
// registered drafters (Kangaroo's adapter, prompt lookup), through one prefill, one step and one
// commit path, so that a token comes out the same whichever way it was produced.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "drafter.h"
#include "exit_layer_drafter.h"
#include "finish_reason.h"
#include "logits_mask.h"
#include "penalties.h"
#include "runner.h"
#include "sequence.h"
#include "speculation_controller.h"
#include "tokenizer.h"

namespace ke {

// One drafter's share of a generation's speculation (GenerationStats::by_drafter).
struct DrafterCounts {
    std::string name;              // Drafter::name()
    int64_t cycles = 0;            // verifications of this drafter's drafts
    int64_t draft_n = 0;           // draft tokens it proposed
    int64_t draft_n_accepted = 0;  // of them, the ones the model agreed with
};

// The figures of one generation (since start()): the one record from here to the server's
// `timings` and result.stats. Python sees this struct itself (kangaroo_edge._native.
// GenerationStats, bound field by field under these names) and the server's `timings` object
// uses them unchanged, so each figure has one name: llama-server's, where its `timings` has the
// figure. Derived figures are the methods below, computed here only. The controller's counters
// (plain_steps, probes, switches_off) are the base.
struct GenerationStats : ControllerStats {
    int64_t prompt_n = 0;       // prompt tokens evaluated (not taken from the cache)
    int64_t cache_n = 0;        // prompt tokens taken from the cache instead of evaluated
    double prompt_ms = 0.0;     // start(): evaluating the prompt and choosing the first token
    int64_t predicted_n = 0;    // tokens generated; an end-of-generation token is not one of them
    double predicted_ms = 0.0;  // from the end of start() to the end of the last step
    int64_t cycles = 0;         // verifications (speculative cycles)
    int64_t bonus_rows = 0;     // of them, with a bonus row (ExitLayerDrafter::add_bonus_row)
    int64_t draft_n = 0;        // draft tokens proposed
    int64_t draft_n_accepted = 0;  // draft tokens the model agreed with
    int64_t cycle_tokens = 0;   // tokens cycles added: the accepted drafts plus the model's own
    std::vector<int64_t> accepted_hist;  // [a]: cycles that accepted a drafts
    double draft_ms = 0.0;      // drafting (and bonus-row steps), over all cycles
    double verify_ms = 0.0;     // verifying, over all cycles
    std::vector<DrafterCounts> by_drafter;  // in registration order

    // ---- derived ----
    int64_t prompt_tokens() const { return prompt_n + cache_n; }  // the whole prompt
    double prompt_per_second() const { return prompt_n / std::max(prompt_ms * 1e-3, 1e-9); }
    double prompt_per_token_ms() const { return prompt_ms / (double) std::max<int64_t>(prompt_n, 1); }
    // Tokens after the first, which comes out of the prompt's forward pass (start()).
    double predicted_per_second() const {
        return (double) std::max<int64_t>(predicted_n - 1, 0) / std::max(predicted_ms * 1e-3, 1e-9);
    }
    // None when no token came after the first
    std::optional<double> predicted_per_token_ms() const {
        const double tps = predicted_per_second();
        return tps > 0 ? std::optional<double>(1e3 / tps) : std::nullopt;
    }
    // Tokens each verification added (accepted drafts plus the model's own); None without cycles.
    std::optional<double> mean_accepted() const {
        return cycles > 0 ? std::optional<double>((double) cycle_tokens / cycles) : std::nullopt;
    }
    // The share of draft tokens the model agreed with; 0 without drafts.
    double acceptance_rate() const { return draft_n > 0 ? (double) draft_n_accepted / draft_n : 0.0; }
    // The counts of the drafter called `name` (zeros if it drafted nothing or is not registered).
    DrafterCounts drafter(const std::string & name) const {
        for (const DrafterCounts & c : by_drafter) if (c.name == name) return c;
        return DrafterCounts{name};
    }
};

class Decoder {
public:
    Decoder(const Model & model, Runner & runner, Sequence & sequence, const Tokenizer & tokenizer, const Sampler & sampler);

    // The drafters a step may use, tried in this order (none: plain decoding only). The decoder
    // does not own them; at most one may draft from the exit layer (ExitLayerDrafter: it keeps a
    // cache of its own in step with the sequence).
    void set_drafters(const std::vector<Drafter *> & drafters);
    const std::vector<Drafter *> & drafters() const { return drafters_; }

    // Starts a generation of at most max_tokens tokens (<= 0: until the context is full):
    // evaluates the prompt, reusing the cached prefix the sequence (and the stateful drafter's
    // cache) still holds, and returns the first token as the generation's first output (none
    // when it ends the generation). With a mask, every token of the generation comes from the
    // masked distribution (plain steps and every verified row alike); the sampling's repetition
    // penalties apply the same way, over the output before each row.
    std::vector<int32_t> start(const std::vector<int32_t> & prompt, const SamplingParams & sampling, int64_t max_tokens,
                               std::shared_ptr<LogitsMask> mask = nullptr);
    // One step of an unfinished generation: a plain step or one cycle (draft, verify, accept,
    // roll back). Returns the output it adds: at least one token, unless the step ends the
    // generation at an end-of-generation token (which is never output).
    std::vector<int32_t> step(const DraftParams & params);
    // Why the generation ended; None while it goes on. Decided here and nowhere else, but for
    // stop strings (stop()).
    FinishReason finish_reason() const { return finish_; }
    // The caller found a stop string in the text of the first n_tokens output tokens: the
    // generation ends there ("stop"), and the record counts those tokens only.
    void stop(int64_t n_tokens);
    // The sequence was replaced (Engine::load_state): the next step needs a start() first.
    void restart() { pending_ = -1; }

    // The generation's record, with the controller's counters as they are now.
    GenerationStats stats() const;
    const SpeculationController & controller() const { return controller_; }
    // The last step's verified inputs and its logits [inputs, n_vocab] (row j: after input j),
    // for checks that verification computes what plain steps compute.
    const std::vector<int32_t> & last_inputs() const { return inputs_; }
    const std::vector<float> & last_logits() const { return logits_; }

private:
    // Evaluates the prompt (start()) and returns the first token.
    int32_t prefill(const std::vector<int32_t> & prompt, const SamplingParams & sampling,
                    std::shared_ptr<LogitsMask> mask);
    // One step (step()): the tokens it adds after the pending one (1 .. max_new, ending at an
    // end-of-generation token); the last of them becomes the new pending token.
    std::vector<int32_t> advance(const DraftParams & params, int max_new);
    // Takes a step's tokens as output: drops an end-of-generation token, counts the rest,
    // decides whether the generation has ended.
    void end_step(std::vector<int32_t> & out);
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
    const Sampler & sampler_;  // the engine's, seeded per generation
    std::vector<Drafter *> drafters_;
    ExitLayerDrafter * exit_drafter_ = nullptr;  // the one of drafters_ that drafts from the exit layer, or null
    SamplingParams sampling_;
    std::shared_ptr<LogitsMask> mask_;  // this generation's constraint, or null
    MaskedRow masked_row_;
    PenaltyWindow penalties_;           // this generation's output, for the repetition penalties
    int32_t pending_ = -1;              // the newest token: chosen, not yet run through the model
    std::vector<int32_t> inputs_;       // [rows] the last verification's inputs (or plain step's)
    std::vector<float> logits_;         // [rows, n_vocab] their logits
    GenerationStats stats_;             // this generation's (the controller's counters: see stats())
    int64_t max_tokens_ = 0;            // this generation's token limit
    FinishReason finish_ = FinishReason::None;
    double t_first_ = 0.0;              // when start() returned (now_seconds())
    SpeculationController controller_;
};

}  // namespace ke
