// Many independent sequences decoded together (the data engine; parallel requests): one step runs
// the pending token of every active sequence as one row of the same weight pass, so each weight
// block is read once for all of them.
//
// Each sequence owns a block of cells of one KV cache and its row attends only to that block
// (StepInputs::seq_block). The weight products give every row a one-row step's bits (our
// kernels are batch-invariant; other weights go row by row, as in verification) and the prompt
// is prefilled alone in the same batches as Decoder::start, so a sequence decodes here token for
// token as it would alone; sampled ones too, since each has its own sampler seeded by its seed.
// Active sequences fill blocks 0..n_active-1: when one leaves, the last moves into its block.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "decoder.h"
#include "finish_reason.h"
#include "kernels/blocks.h"
#include "kv_cache.h"
#include "runner.h"
#include "penalties.h"
#include "sampling.h"
#include "tokenizer.h"

namespace ke {

// Sequences one step runs: as many rows as the kernels multiply in one pass (beyond that ggml
// would multiply by most weights one row at a time, to keep each row's bits).
constexpr int MAX_BATCH_SEQUENCES = kernels::MAX_ROWS;

// A token a sequence added.
struct BatchEvent {
    int64_t id = -1;
    int32_t token = -1;
    // Stop: the token is an end-of-generation token (not output); Length: max_new tokens or a
    // full context (the token is output); None: more follow
    FinishReason finish = FinishReason::None;
    std::optional<GenerationStats> stats;  // the sequence's record, on its finishing event
    bool finished() const { return finish != FinishReason::None; }
};

class BatchDecoder {
public:
    // Up to n_seq sequences of at most n_ctx_seq positions (prompt and generated tokens) each.
    BatchDecoder(const Model & model, Runner & runner, const Tokenizer & tokenizer, ggml_backend_buffer_type_t buft,
                 int n_seq, int n_ctx_seq);
    ~BatchDecoder();
    BatchDecoder(const BatchDecoder &) = delete;
    BatchDecoder & operator=(const BatchDecoder &) = delete;

    int capacity() const { return n_seq_; }
    int n_ctx_seq() const { return n_ctx_seq_; }
    int n_active() const { return (int) active_.size(); }
    size_t kv_bytes() const { return kv_.bytes() + scratch_.bytes(); }

    // Prefills `prompt` into a free block and samples its first token (max_new >= 1 counts it).
    // Throws when every block is taken or the prompt leaves no room for a token.
    BatchEvent add(const std::vector<int32_t> & prompt, const SamplingParams & sampling, uint64_t seed, int max_new);
    // One weight pass over every active sequence: one event each, in no particular order.
    // Finished sequences leave.
    std::vector<BatchEvent> step();
    // Ends an active sequence early (a stop string found in its text, a deadline): it leaves, and
    // its record counts its first n_output tokens as its output. Throws on an unknown id.
    GenerationStats end(int64_t id, int64_t n_output);
    // Drops an active sequence (a cancelled request); unknown ids are ignored.
    void remove(int64_t id);

private:
    struct Active {
        int64_t id;
        int n_past;       // positions in the cache
        int32_t pending;  // the newest token, not yet run
        int n_new;        // tokens added so far (pending included)
        int max_new;
        SamplingParams sampling;
        Sampler sampler;
        PenaltyWindow penalties;  // this sequence's output
        GenerationStats stats;    // plain steps only: the batch does not draft
        double t_first = 0.0;     // when add() returned (now_seconds())
    };
    // The event of a's newest token (pending), with a's record when it finishes a.
    BatchEvent event(Active & a);
    // The next token from logits [n_vocab] (penalized in place), entered into a's window.
    int32_t choose(Active & a, float * logits);
    // The whole model over one token per active sequence: row r is tokens[r] at position pos[r]
    // of block r -> logits_ [rows, n_vocab].
    void run_sequence_rows(const std::vector<int32_t> & tokens, const std::vector<int32_t> & pos);
    // Whether a sequence that just added `token` is done.
    FinishReason finish(const Active & a, int32_t token) const;
    void leave(size_t index);  // the sequence in block `index` leaves; the last moves in

    const Model & model_;
    Runner & runner_;
    const Tokenizer & tokenizer_;
    int n_seq_;
    int n_ctx_seq_;
    int block_;            // cells per sequence (n_ctx_seq rounded up to KV_PAD)
    KvCache kv_;           // n_seq blocks
    KvCache scratch_;      // one sequence: where prompts are prefilled before moving to a block
    std::vector<Active> active_;  // active_[i] owns block i
    int64_t next_id_ = 0;
    std::vector<float> logits_;
};

}  // namespace ke
