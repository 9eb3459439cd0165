#include "runner.h"

#include <cmath>
#include <cstring>

#include "error.h"
#include "kernels/mul_mat_op.h"

namespace ke {

namespace {
constexpr size_t MAX_CACHED_GRAPHS = 32;

// The runner's own kind: layers [a, b) of the base model (forward()).
const GraphKind LAYER_RANGE{"layer_range"};

// Uploads an input's values; an input the graph never reads (a graph that only writes K/V has no
// use for the mask) was not allocated, and is skipped.
void set_input(ggml_tensor * t, const void * data) {
    if (t && t->buffer) ggml_backend_tensor_set(t, data, 0, ggml_nbytes(t));
}
}  // namespace

ForwardSpec ForwardSpec::every_row(int a, int b, int n_tokens, Output output) {
    ForwardSpec s;
    s.layer_begin = a;
    s.layer_end = b;
    s.n_tokens = s.n_outputs = n_tokens;
    s.output = output;
    return s;
}

ForwardSpec ForwardSpec::last_row(int a, int b, int n_tokens, Output output) {
    ForwardSpec s = every_row(a, b, n_tokens, output);
    s.n_outputs = 1;
    return s;
}

// Identity of a cached graph: everything that changes its shape or the tensors it touches.
struct Runner::GraphKey {
    const GraphKind * kind = nullptr;
    ForwardSpec spec;
    int n_kv = 0;
    const KvCache * kv = nullptr;           // the caches the graph writes
    const KvCache * also_writes = nullptr;
    int seq_block = 0;

    bool operator==(const GraphKey & o) const {
        return kind == o.kind && n_kv == o.n_kv && seq_block == o.seq_block && kv == o.kv &&
               also_writes == o.also_writes && spec.per_token_attention == o.spec.per_token_attention &&
               spec.layer_begin == o.spec.layer_begin && spec.layer_end == o.spec.layer_end &&
               spec.n_tokens == o.spec.n_tokens && spec.n_outputs == o.spec.n_outputs && spec.output == o.spec.output;
    }
};

struct Runner::CachedGraph {
    GraphKey key;
    ggml_context * ctx = nullptr;
    ggml_cgraph * gf = nullptr;
    ggml_backend_sched_t sched = nullptr;
    StepInputs in;
    std::vector<ggml_tensor *> outs;

    ~CachedGraph() {
        if (sched) ggml_backend_sched_free(sched);
        if (ctx) ggml_free(ctx);
    }
};

Runner::Runner(const Model & model, Backends & backends) : model_(model), backends_(backends) {}

Runner::~Runner() = default;

void Runner::clear() { cache_.clear(); }

void Runner::forget(const KvCache * cache) {
    cache_.remove_if([cache](const std::unique_ptr<CachedGraph> & g) {
        return g->key.kv == cache || g->key.also_writes == cache;
    });
}

Runner::CachedGraph & Runner::graph_for(const GraphKey & key, const GraphBody & body, int n_embd_kv) {
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
        if ((*it)->key == key) {
            cache_.splice(cache_.begin(), cache_, it);
            return *cache_.front();
        }
    }
    auto g = std::make_unique<CachedGraph>();
    g->key = key;
    const Hparams & hp = model_.hparams();
    // Generous: a layer is ~40 nodes (~50 for Gemma 3; plus up to ~14 per token for weights
    // multiplied row by row); the adapter block and head add a few dozen.
    const size_t per_layer = 80 + (key.spec.per_token_attention ? 16 * (size_t) key.spec.n_tokens : 0);
    const size_t max_nodes = 256 + (size_t) hp.n_layer * per_layer;
    ggml_init_params params = {ggml_tensor_overhead() * max_nodes + ggml_graph_overhead_custom(max_nodes, false),
                               nullptr, true};
    g->ctx = ggml_init(params);
    g->gf = ggml_new_graph_custom(g->ctx, max_nodes, false);

    GraphBuilder b(g->ctx, g->gf, hp);
    // Our kernels give every row the bits of a one-token step: for rows that must come out as
    // one-token steps (verification), and for one-token steps themselves (faster than ggml's
    // one-row mul_mat, and the same bits where ggml's is the x86 AVX2 vec_dot). A prompt's prefill
    // keeps ggml's batched kernels, as llama.cpp's prefill does (its batched K-quant kernels round
    // unlike single rows), except for the types ggml itself multiplies row by row.
    const bool one_row = key.spec.n_tokens == 1;
    const bool cpu_kernels = !backends_.uses_gpu() && kernels::enabled();
    b.use_cpu_kernels(cpu_kernels);
    if (cpu_kernels && !key.spec.per_token_attention && !one_row) {
        // A prompt's batch: only where ggml itself multiplies row by row with its one-row
        // arithmetic, so that prefill keeps llama.cpp's bits (and runs several rows per pass).
        const Backends & backends = backends_;
        b.kernels_only_for([&backends](const ggml_tensor * w) {
            return kernels::ggml_batch_is_row_by_row(w->type) && backends.rows_exact_in_batch(w);
        });
    }
    const ForwardSpec & spec = key.spec;
    if (spec.per_token_attention) {
        const Backends & backends = backends_;
        b.split_rows_for([&backends](const ggml_tensor * w) { return !backends.rows_exact_in_batch(w); });
    }
    g->in = b.make_inputs(spec.layer_begin == 0, spec.n_tokens, key.n_kv, n_embd_kv, spec.n_outputs);
    g->in.per_token = spec.per_token_attention;
    g->in.seq_block = key.seq_block;
    g->outs = body(b, g->in);
    for (ggml_tensor * t : g->outs) {
        ggml_set_output(t);
        ggml_build_forward_expand(g->gf, t);
    }
    g->sched = ggml_backend_sched_new(backends_.list().data(), backends_.buffer_types().data(),
                                      (int) backends_.list().size(), max_nodes, false, backends_.uses_gpu());
    if (!ggml_backend_sched_alloc_graph(g->sched, g->gf)) {
        throw EngineError(format("cannot allocate compute memory for a batch of %d tokens (graph %s)", spec.n_tokens,
                                 key.kind->name));
    }
    cache_.push_front(std::move(g));
    if (cache_.size() > MAX_CACHED_GRAPHS) cache_.pop_back();
    return *cache_.front();
}

namespace {
// Sets positions, cache cells (cell[i]: where token i's K/V go) and causal masks: token i sees
// the cells j <= pos[i] of its attention span (counted from its span's first cell).
void fill_positions_and_masks(const StepInputs & in, const std::vector<int32_t> & pos, const std::vector<int64_t> & cell,
                              int n_kv, int n_embd_kv, int n_cells) {
    const int n_tokens = (int) pos.size();
    std::vector<int64_t> v_idxs((size_t) n_embd_kv * n_tokens);
    std::vector<float> mask((size_t) n_kv * n_tokens);
    for (int i = 0; i < n_tokens; ++i) {
        for (int d = 0; d < n_embd_kv; ++d) v_idxs[(size_t) i * n_embd_kv + d] = (int64_t) d * n_cells + cell[i];
        float * row = mask.data() + (size_t) i * n_kv;
        for (int j = 0; j < n_kv; ++j) row[j] = j <= pos[i] ? 0.0f : -INFINITY;
    }
    if (in.kq_mask_swa && in.kq_mask_swa->buffer) {
        // local layers also hide the keys n_swa or more positions back (llama.cpp's standard SWA)
        std::vector<float> swa = mask;
        for (int i = 0; i < n_tokens; ++i) {
            float * row = swa.data() + (size_t) i * n_kv;
            for (int j = 0; j < n_kv && j <= pos[i] - in.n_swa; ++j) row[j] = -INFINITY;
        }
        set_input(in.kq_mask_swa, swa.data());
    }
    set_input(in.pos, pos.data());
    set_input(in.k_idxs, cell.data());
    set_input(in.v_idxs, v_idxs.data());
    set_input(in.kq_mask, mask.data());
}

// The per-step inputs for one token per sequence (StepInputs::seq_block): row r at position
// pos[r] of its block.
void fill_sequence_row_inputs(const StepInputs & in, const int32_t * pos, int n_rows, int n_kv, int n_embd_kv,
                              int n_cells) {
    std::vector<int32_t> p(pos, pos + n_rows);
    std::vector<int64_t> cell(n_rows);
    for (int r = 0; r < n_rows; ++r) cell[r] = (int64_t) r * in.seq_block + pos[r];
    fill_positions_and_masks(in, p, cell, n_kv, n_embd_kv, n_cells);
}

// The per-step inputs for a contiguous run of tokens at pos0 .. pos0+n_tokens-1 over n_kv cells.
void fill_step_inputs(const StepInputs & in, int pos0, int n_tokens, int n_kv, int n_embd_kv, int n_cells) {
    std::vector<int32_t> pos(n_tokens);
    std::vector<int64_t> cell(n_tokens);
    for (int i = 0; i < n_tokens; ++i) cell[i] = pos[i] = pos0 + i;
    fill_positions_and_masks(in, pos, cell, n_kv, n_embd_kv, n_cells);
    if (in.out_ids) {
        const int n_out = (int) in.out_ids->ne[0];
        std::vector<int32_t> ids(n_out);
        for (int i = 0; i < n_out; ++i) ids[i] = n_tokens - n_out + i;
        set_input(in.out_ids, ids.data());
    }
}

}  // namespace

void Runner::validate(const GraphRun & r, int n_kv) const {
    const Hparams & hp = model_.hparams();
    const ForwardSpec & spec = r.spec;
    const int n_cells = r.kv->n_cells();
    if (spec.n_tokens < 1 || spec.n_outputs < 1 || spec.n_outputs > spec.n_tokens) {
        throw InvalidArgument(format("bad batch: %d tokens, %d outputs", spec.n_tokens, spec.n_outputs));
    }
    if (r.pos0 < 0 || r.pos0 + spec.n_tokens > n_cells) {
        throw InvalidArgument(format("positions %d..%d do not fit the context of %d", r.pos0,
                                     r.pos0 + spec.n_tokens - 1, n_cells));
    }
    if (spec.layer_begin == 0) {
        for (int i = 0; i < spec.n_tokens; ++i) {
            if (r.tokens[i] < 0 || r.tokens[i] >= hp.n_vocab) {
                throw InvalidArgument(format("token id %d is outside the vocabulary (0..%d)", r.tokens[i], hp.n_vocab - 1));
            }
        }
    }
    if (!r.row_pos) return;
    const int n_rows = spec.n_tokens;
    if (!spec.per_token_attention || spec.layer_begin != 0 || spec.n_outputs != n_rows || r.seq_block < 1 ||
        (int64_t) n_rows * r.seq_block > n_cells || n_kv > r.seq_block) {
        throw EngineError("a graph run that does not describe one token per sequence");
    }
    for (int row = 0; row < n_rows; ++row) {
        if (r.row_pos[row] < 0 || r.row_pos[row] >= n_kv) {
            throw InvalidArgument(format("sequence %d: position %d is outside its %d attended cells", row,
                                         r.row_pos[row], n_kv));
        }
    }
}

void Runner::run(const GraphRun & r, const GraphBody & body) {
    const KvCache & kv = *r.kv;
    GraphKey key;
    key.kind = r.kind;
    key.spec = r.spec;
    key.n_kv = r.n_kv > 0 ? r.n_kv : kv.n_kv_for(r.pos0 + r.spec.n_tokens);
    key.kv = r.kv;
    key.also_writes = r.also_writes;
    key.seq_block = r.seq_block;
    validate(r, key.n_kv);
    CachedGraph & g = graph_for(key, body, kv.n_embd_kv());
    set_input(g.in.tokens, r.tokens);
    set_input(g.in.hidden, r.hidden);
    if (r.row_pos) {
        fill_sequence_row_inputs(g.in, r.row_pos, r.spec.n_tokens, key.n_kv, kv.n_embd_kv(), kv.n_cells());
    } else {
        fill_step_inputs(g.in, r.pos0, r.spec.n_tokens, key.n_kv, kv.n_embd_kv(), kv.n_cells());
    }
    compute(g, r.outputs);
}

void Runner::compute(CachedGraph & g, const std::vector<float *> & outs) {
    if (profiling_) profile_.count_graph();
    profile_.attach(g.sched, profiling_);
    if (ggml_backend_sched_graph_compute(g.sched, g.gf) != GGML_STATUS_SUCCESS) {
        throw EngineError("graph computation failed");
    }
    for (size_t i = 0; i < outs.size() && i < g.outs.size(); ++i) {
        if (outs[i]) ggml_backend_tensor_get(g.outs[i], outs[i], 0, ggml_nbytes(g.outs[i]));
    }
}

void Runner::forward(KvCache & kv, const ForwardSpec & s, const int32_t * tokens, const float * hidden, int pos0,
                     float * out) {
    const int n_layer = model_.hparams().n_layer;
    if (s.layer_begin < 0 || s.layer_end > n_layer || s.layer_begin >= s.layer_end) {
        throw InvalidArgument(format("layer range [%d, %d) is not within [0, %d)", s.layer_begin, s.layer_end, n_layer));
    }
    if ((s.layer_begin == 0 ? (const void *) tokens : (const void *) hidden) == nullptr) {
        throw InvalidArgument("a forward pass from layer 0 reads tokens, one from a later layer hidden states");
    }
    GraphRun graph(LAYER_RANGE, kv, s);
    graph.tokens = tokens;
    graph.hidden = hidden;
    graph.pos0 = pos0;
    graph.outputs = {out};
    const Model & m = model_;
    run(graph, [&m, &kv, s](GraphBuilder & b, const StepInputs & in) {
        ggml_tensor * x = in.tokens ? b.embed(m, in.tokens) : in.hidden;
        x = b.layers(m, kv, x, s.layer_begin, s.layer_end, in);
        if (s.layer_end < m.hparams().n_layer && in.out_ids) {
            x = ggml_get_rows(b.ctx(), x, in.out_ids);  // the model's last layer did not select rows
        }
        if (s.output != Output::Hidden) x = b.head(m, x, s.output == Output::Logits);
        return GraphOutputs{x};
    });
}

}  // namespace ke
