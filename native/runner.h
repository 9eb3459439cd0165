// Runs the engine's graphs: builds a graph per kind and distinct step shape once, keeps it
// allocated in its own scheduler, and afterwards only feeds new input values (graph building and
// allocation cost about as much as a whole layer of a small model, so they are not repeated).
// The runner owns one kind, the layer range (forward()); each other graph is a named method of
// the code that builds it (Decoder, BatchDecoder, AdapterGraphs), with a GraphKind of its own.
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
    int layer_begin = 0;        // a: first layer run (0: the inputs are tokens, else hidden states)
    int layer_end = 0;          // b: one past the last layer run
    int n_tokens = 1;
    int n_outputs = 1;          // rows returned: the last n_outputs tokens (1 or n_tokens)
    Output output = Output::Logits;
    bool per_token_attention = false;  // see StepInputs::per_token

    // Layers [a, b) over n_tokens rows, every row's `output` returned.
    static ForwardSpec every_row(int a, int b, int n_tokens, Output output);
    // Layers [a, b) over n_tokens rows, only the last row's `output` returned (a prompt's batch).
    static ForwardSpec last_row(int a, int b, int n_tokens, Output output);
};

// A kind of graph: one per graph-building function, defined as a constant by the code that
// builds it (the runner's layer range, the decoder's whole-model step, the adapter's draft
// step...), so each client owns its kinds. Its address identifies the kind in the graph cache.
struct GraphKind {
    const char * name;  // for messages
};

using GraphOutputs = std::vector<ggml_tensor *>;
// Builds a graph's body on top of its step inputs and returns its outputs.
using GraphBody = std::function<GraphOutputs(GraphBuilder & b, const StepInputs & in)>;

// One run of a cached graph: which graph (kind, spec, the caches it writes and the cells it
// attends over identify it), its inputs, and where its outputs go. The body builds it on first use.
struct GraphRun {
    GraphRun(const GraphKind & kind, KvCache & kv, const ForwardSpec & spec) : kind(&kind), spec(spec), kv(&kv) {}

    const GraphKind * kind;
    ForwardSpec spec;                       // the layers it runs, its rows, the attention layout
    KvCache * kv;                           // the rows' cells are in this cache; the graph writes their K/V
    const KvCache * also_writes = nullptr;  // a second cache the graph writes (the adapter's), or null
    int n_kv = 0;                           // cells attended (0: those up to the last row, KvCache::n_kv_for)
    const int32_t * tokens = nullptr;       // [n_tokens] inputs (spec.layer_begin == 0)
    const float * hidden = nullptr;         // [n_tokens, n_embd] inputs (otherwise)
    int pos0 = 0;                           // row i is position pos0 + i, in cell pos0 + i
    // Many sequences (spec.per_token_attention on, StepInputs::seq_block): row r is its sequence's
    // token at position row_pos[r], in cell r * seq_block + row_pos[r]; pos0 is unused.
    const int32_t * row_pos = nullptr;
    int seq_block = 0;
    std::vector<float *> outputs;           // output i is copied into outputs[i] (sized for it; null: not read)
};

class Runner {
public:
    Runner(const Model & model, Backends & backends);
    ~Runner();

    // The layer-range graph: runs spec over tokens [n_tokens] (spec.layer_begin == 0) or hidden
    // states [n_tokens, n_embd] (a later layer) at positions pos0 .., writing K/V of those
    // positions into `kv`. `out` receives [n_outputs, n_embd] hidden states or [n_outputs, n_vocab]
    // logits, row-major.
    void forward_tokens(KvCache & kv, const ForwardSpec & spec, const int32_t * tokens, int pos0, float * out) {
        forward(kv, spec, tokens, nullptr, pos0, out);
    }
    void forward_hidden(KvCache & kv, const ForwardSpec & spec, const float * hidden, int pos0, float * out) {
        forward(kv, spec, nullptr, hidden, pos0, out);
    }
    // ... either (one of tokens and hidden, as spec.layer_begin says)
    void forward(KvCache & kv, const ForwardSpec & spec, const int32_t * tokens, const float * hidden, int pos0,
                 float * out);

    // Runs the graph r describes (built by `body` on first use) and copies its outputs.
    void run(const GraphRun & r, const GraphBody & body);

    // Drops cached graphs (and their compute buffers).
    void clear();
    // Drops the cached graphs that write `cache` (a KV cache about to be freed: a new one may
    // get its address, and a graph keyed by it would write freed memory).
    void forget(const KvCache * cache);

    // While on, every graph run is timed node by node into profile() (slower: a diagnostic).
    void set_profiling(bool on) { profiling_ = on; }
    OpProfile & profile() { return profile_; }

private:
    struct GraphKey;
    struct CachedGraph;
    CachedGraph & graph_for(const GraphKey & key, const GraphBody & body, int n_embd_kv);
    // Computes g (its inputs set) and copies output i into outs[i].
    void compute(CachedGraph & g, const std::vector<float *> & outs);
    void validate(const GraphRun & r, int n_kv) const;

    const Model & model_;
    Backends & backends_;
    std::list<std::unique_ptr<CachedGraph>> cache_;  // most recently used first
    bool profiling_ = false;
    OpProfile profile_;
};

}  // namespace ke
