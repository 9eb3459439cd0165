// Runs layer-range forward passes: builds a graph per distinct step shape once, keeps it
// allocated in its own scheduler, and afterwards only feeds new input values (graph building and
// allocation cost about as much as a whole layer of a small model, so they are not repeated).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <vector>

#include "backend.h"
#include "graph.h"
#include "kv_cache.h"
#include "model.h"
#include "op_profile.h"

namespace ke {

struct ForwardSpec {
    int layer_begin = 0;        // a: first layer run
    int layer_end = 0;          // b: one past the last layer run
    int n_tokens = 1;
    int n_outputs = 1;          // rows returned: the last n_outputs tokens (1 or n_tokens)
    Output output = Output::Logits;
    bool per_token_attention = false;  // see StepInputs::per_token
};

// Identity of a cached graph: everything that changes its shape or the tensors it touches.
// Graph kinds: one per graph-building function.
enum GraphKind {
    KIND_LAYER_RANGE = 0, KIND_DRAFT_STEP = 1, KIND_ADAPTER_PREFILL = 2, KIND_ADAPTER_LOGITS = 3, KIND_WHOLE_MODEL_STEP = 4,
    KIND_BONUS_STEP = 5, KIND_SEQUENCE_ROWS = 6
};

struct GraphKey {
    int kind = KIND_LAYER_RANGE;
    ForwardSpec spec;
    int n_kv = 0;
    const void * cache_a = nullptr;  // KV caches the graph writes
    const void * cache_b = nullptr;
    int seq_block = 0;               // > 0: one token per sequence (StepInputs::seq_block)
    bool operator==(const GraphKey & o) const;
};

// Sets key.n_kv, the cells a batch of key.spec.n_tokens tokens at pos0 attends over (the count
// grows in steps of KV_PAD).
void set_attention_span(GraphKey & key, const KvCache & kv, int pos0);

// Builds a graph's body on top of its step inputs and returns its outputs.
using GraphBody = std::function<std::vector<ggml_tensor *>(GraphBuilder & b, const StepInputs & in)>;

class Runner {
public:
    Runner(const Model & model, Backends & backends);
    ~Runner();

    // Runs spec over tokens (layer_begin == 0) or hidden states [n_tokens, n_embd] at positions
    // pos0 .. pos0+n_tokens-1, writing K/V of those positions into `kv`. `out` receives
    // [n_outputs, n_embd] hidden states or [n_outputs, n_vocab] logits, row-major.
    void forward(KvCache & kv, const ForwardSpec & spec, const int32_t * tokens, const float * hidden, int pos0,
                 float * out);

    // Runs the graph `key` (built by `body` on first use) for tokens or hidden states at
    // pos0.., then copies output i into outs[i] (each sized for that output).
    void run(const GraphKey & key, const GraphBody & body, int n_embd_kv, int n_cells, const int32_t * tokens,
             const float * hidden, int pos0, const std::vector<float *> & outs);

    // Runs the graph `key` (spec.per_token_attention on) for one token per sequence: row r is
    // sequence r's token at position pos[r], its cells [r * seq_block, (r + 1) * seq_block) of a
    // cache of n_cells (BatchDecoder). key.n_kv must cover the longest of them.
    void run_sequence_rows(const GraphKey & key, const GraphBody & body, int n_embd_kv, int n_cells, int seq_block,
                           const int32_t * tokens, const int32_t * pos, const std::vector<float *> & outs);

    // Drops cached graphs (and their compute buffers).
    void clear();
    // Drops the cached graphs that write `cache` (a KV cache about to be freed: a new one may
    // get its address, and a graph keyed by it would write freed memory).
    void forget(const void * cache);

    // While on, every graph run is timed node by node into profile() (slower: a diagnostic).
    void set_profiling(bool on) { profiling_ = on; }
    OpProfile & profile() { return profile_; }

private:
    struct CachedGraph;
    CachedGraph & graph_for(const GraphKey & key, const GraphBody & body, int n_embd_kv);
    // Computes g (its inputs set) and copies output i into outs[i].
    void compute(CachedGraph & g, const std::vector<float *> & outs);
    void validate(const ForwardSpec & spec, int n_cells, const int32_t * tokens, int pos0) const;

    const Model & model_;
    Backends & backends_;
    std::list<std::unique_ptr<CachedGraph>> cache_;  // most recently used first
    bool profiling_ = false;
    OpProfile profile_;
};

// Values of the per-step inputs (positions, causal mask, cache cells) for a contiguous run of
// tokens at pos0 .. pos0+n_tokens-1 over n_kv cells; shared by every graph of the engine.
void fill_step_inputs(const StepInputs & in, int pos0, int n_tokens, int n_kv, int n_embd_kv, int n_cells);
// The same for one token per sequence (StepInputs::seq_block): row r at position pos[r] of its block.
void fill_sequence_row_inputs(const StepInputs & in, const int32_t * pos, int n_rows, int n_kv, int n_embd_kv,
                              int n_cells);

}  // namespace ke
