#include "runner.h"

#include <cmath>
#include <cstring>

#include "error.h"

namespace ke {

namespace {
constexpr size_t MAX_CACHED_GRAPHS = 24;
}

struct Runner::CachedGraph {
    // identity
    KvCache * kv;
    ForwardSpec spec;
    int n_kv;
    // built graph
    ggml_context * ctx = nullptr;
    ggml_cgraph * gf = nullptr;
    ggml_backend_sched_t sched = nullptr;
    StepInputs in;
    ggml_tensor * out = nullptr;

    bool matches(const KvCache * k, const ForwardSpec & s, int nkv) const {
        return k == kv && nkv == n_kv && s.layer_begin == spec.layer_begin && s.layer_end == spec.layer_end &&
               s.n_tokens == spec.n_tokens && s.n_outputs == spec.n_outputs && s.output == spec.output;
    }
    ~CachedGraph() {
        if (sched) ggml_backend_sched_free(sched);
        if (ctx) ggml_free(ctx);
    }
};

Runner::Runner(const Model & model, Backends & backends) : model_(model), backends_(backends) {}

Runner::~Runner() = default;

void Runner::clear() { cache_.clear(); }

Runner::CachedGraph & Runner::graph_for(KvCache & kv, const ForwardSpec & spec, int n_kv) {
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
        if ((*it)->matches(&kv, spec, n_kv)) {
            cache_.splice(cache_.begin(), cache_, it);
            return *cache_.front();
        }
    }
    auto g = std::make_unique<CachedGraph>();
    g->kv = &kv;
    g->spec = spec;
    g->n_kv = n_kv;

    const Hparams & hp = model_.hparams();
    const size_t max_nodes = 64 + (size_t) (spec.layer_end - spec.layer_begin + 1) * 48;
    ggml_init_params params = {ggml_tensor_overhead() * max_nodes + ggml_graph_overhead_custom(max_nodes, false),
                               nullptr, true};
    g->ctx = ggml_init(params);
    g->gf = ggml_new_graph_custom(g->ctx, max_nodes, false);

    GraphBuilder b(g->ctx, g->gf, hp);
    const bool from_tokens = spec.layer_begin == 0;
    g->in = b.make_inputs(from_tokens, spec.n_tokens, n_kv, kv.n_embd_kv(), spec.n_outputs);
    ggml_tensor * x = from_tokens ? ggml_get_rows(g->ctx, model_.tok_embd, g->in.tokens) : g->in.hidden;
    x = b.layers(model_, kv, n_kv, x, spec.layer_begin, spec.layer_end, g->in);
    if (spec.layer_end < hp.n_layer && g->in.out_ids) {
        x = ggml_get_rows(g->ctx, x, g->in.out_ids);  // the last layer did not select rows
    }
    if (spec.output != Output::Hidden) x = b.head(model_, x, spec.output == Output::Logits);
    ggml_set_output(x);
    ggml_build_forward_expand(g->gf, x);
    g->out = x;

    g->sched = ggml_backend_sched_new(backends_.list().data(), backends_.buffer_types().data(),
                                      (int) backends_.list().size(), max_nodes, false, backends_.uses_gpu());
    if (!ggml_backend_sched_alloc_graph(g->sched, g->gf)) {
        throw EngineError(format("cannot allocate compute memory for a batch of %d tokens", spec.n_tokens));
    }
    cache_.push_front(std::move(g));
    if (cache_.size() > MAX_CACHED_GRAPHS) cache_.pop_back();
    return *cache_.front();
}

void fill_step_inputs(const StepInputs & in, int pos0, int n_tokens, int n_kv, int n_embd_kv, int n_cells) {
    std::vector<int32_t> pos(n_tokens);
    std::vector<int64_t> k_idxs(n_tokens);
    std::vector<int64_t> v_idxs((size_t) n_embd_kv * n_tokens);
    std::vector<float> mask((size_t) n_kv * n_tokens);
    for (int i = 0; i < n_tokens; ++i) {
        const int p = pos0 + i;
        pos[i] = p;
        k_idxs[i] = p;
        for (int d = 0; d < n_embd_kv; ++d) v_idxs[(size_t) i * n_embd_kv + d] = (int64_t) d * n_cells + p;
        float * row = mask.data() + (size_t) i * n_kv;
        for (int j = 0; j < n_kv; ++j) row[j] = j <= p ? 0.0f : -INFINITY;
    }
    ggml_backend_tensor_set(in.pos, pos.data(), 0, ggml_nbytes(in.pos));
    ggml_backend_tensor_set(in.k_idxs, k_idxs.data(), 0, ggml_nbytes(in.k_idxs));
    ggml_backend_tensor_set(in.v_idxs, v_idxs.data(), 0, ggml_nbytes(in.v_idxs));
    ggml_backend_tensor_set(in.kq_mask, mask.data(), 0, ggml_nbytes(in.kq_mask));
    if (in.out_ids) {
        const int n_out = (int) in.out_ids->ne[0];
        std::vector<int32_t> ids(n_out);
        for (int i = 0; i < n_out; ++i) ids[i] = n_tokens - n_out + i;
        ggml_backend_tensor_set(in.out_ids, ids.data(), 0, ggml_nbytes(in.out_ids));
    }
}

void Runner::forward(KvCache & kv, const ForwardSpec & spec, const int32_t * tokens, const float * hidden, int pos0,
                     float * out) {
    const Hparams & hp = model_.hparams();
    if (spec.layer_begin < 0 || spec.layer_end > hp.n_layer || spec.layer_begin >= spec.layer_end) {
        throw InvalidArgument(format("layer range [%d, %d) is not within [0, %d)", spec.layer_begin,
                                     spec.layer_end, hp.n_layer));
    }
    if (spec.n_tokens < 1 || spec.n_outputs < 1 || spec.n_outputs > spec.n_tokens) {
        throw InvalidArgument(format("bad batch: %d tokens, %d outputs", spec.n_tokens, spec.n_outputs));
    }
    if (pos0 < 0 || pos0 + spec.n_tokens > kv.n_cells()) {
        throw InvalidArgument(format("positions %d..%d do not fit the context of %d", pos0,
                                     pos0 + spec.n_tokens - 1, kv.n_cells()));
    }
    if (spec.layer_begin == 0) {
        for (int i = 0; i < spec.n_tokens; ++i) {
            if (tokens[i] < 0 || tokens[i] >= hp.n_vocab) {
                throw InvalidArgument(format("token id %d is outside the vocabulary (0..%d)", tokens[i], hp.n_vocab - 1));
            }
        }
    }
    const int n_kv = kv.n_kv_for(pos0 + spec.n_tokens);
    CachedGraph & g = graph_for(kv, spec, n_kv);
    if (g.in.tokens) ggml_backend_tensor_set(g.in.tokens, tokens, 0, ggml_nbytes(g.in.tokens));
    if (g.in.hidden) ggml_backend_tensor_set(g.in.hidden, hidden, 0, ggml_nbytes(g.in.hidden));
    fill_step_inputs(g.in, pos0, spec.n_tokens, n_kv, kv.n_embd_kv(), kv.n_cells());
    if (ggml_backend_sched_graph_compute(g.sched, g.gf) != GGML_STATUS_SUCCESS) {
        throw EngineError("graph computation failed");
    }
    ggml_backend_tensor_get(g.out, out, 0, ggml_nbytes(g.out));
}

}  // namespace ke
