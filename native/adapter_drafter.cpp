#include "adapter_drafter.h"

#include <algorithm>
#include <cmath>

#include "graph.h"

namespace ke {

namespace {

// The adapter's confidence in 20 bins, shrunk towards the confidence itself.
constexpr int CONFIDENCE_BINS = 20;

int confidence_bin(float confidence) { return std::clamp((int) (confidence * CONFIDENCE_BINS), 0, CONFIDENCE_BINS - 1); }

double confidence_prior(float confidence) { return std::clamp((double) confidence, 0.0, 1.0); }

std::vector<float> bin_centres() {
    std::vector<float> c;
    for (int b = 0; b < CONFIDENCE_BINS; ++b) c.push_back((b + 0.5f) / CONFIDENCE_BINS);
    return c;
}

}  // namespace

// ---- AdapterDrafter ----------------------------------------------------------------------------

AdapterDrafter::AdapterDrafter(const Model & model, Runner & runner, KvCache & model_kv, Adapter & adapter)
    : model_(model),
      runner_(runner),
      model_kv_(model_kv),
      adapter_(adapter),
      calibration_(CONFIDENCE_BINS, confidence_bin, confidence_prior, bin_centres()),
      logits_(adapter.draft_vocab_size()) {}

void AdapterDrafter::prefill(const float * hidden, int n, int pos0) {
    GraphKey key;
    key.kind = KIND_ADAPTER_PREFILL;
    key.spec = {exit_layer(), exit_layer(), n, n, Output::Hidden};  // input: hidden states
    key.n_kv = adapter_.kv().n_kv_for(pos0 + n);
    key.cache_a = &adapter_.kv();
    Adapter & adapter = adapter_;
    GraphBody body = [&adapter](GraphBuilder & b, const StepInputs & in) {
        adapter.build_kv(b, in.hidden, in);
        return std::vector<ggml_tensor *>{};  // the graph only writes the adapter's K/V
    };
    runner_.run(key, body, adapter_.kv().n_embd_kv(), adapter_.kv().n_cells(), nullptr, hidden, pos0, {});
}

void AdapterDrafter::record(GraphBuilder & b, ggml_tensor * hidden, const StepInputs & in) {
    adapter_.build_kv(b, hidden, in);
}

void AdapterDrafter::logits(const float * hidden, int n, int pos0, float * out) {
    GraphKey key;
    key.kind = KIND_ADAPTER_LOGITS;
    key.spec = {exit_layer(), exit_layer(), n, n, Output::Logits};
    key.n_kv = adapter_.kv().n_kv_for(pos0 + n);
    key.cache_a = &adapter_.kv();
    Adapter & adapter = adapter_;
    const Model & m = model_;
    const int n_kv = key.n_kv;
    GraphBody body = [&adapter, &m, n_kv](GraphBuilder & b, const StepInputs & in) {
        return std::vector<ggml_tensor *>{ggml_mul_mat(b.ctx(), m.output, adapter.build(b, in.hidden, in, n_kv))};
    };
    runner_.run(key, body, adapter_.kv().n_embd_kv(), adapter_.kv().n_cells(), nullptr, hidden, pos0, {out});
}

Draft AdapterDrafter::draft(const DraftRequest & r, const KeepDrafting & keep_drafting) {
    const int n_embd = model_.hparams().n_embd;
    const int n_rows = adapter_.draft_vocab_size();
    const std::vector<int32_t> & vocab = adapter_.draft_vocab();  // row -> token id (empty: identity)
    const int N = exit_layer();
    Draft d;
    if (r.max_drafts < 1 || !keep_drafting(0, NO_SIGNAL)) return d;

    // One graph per step: token -> layers [0, N) -> h (kept for verification) -> adapter -> draft head.
    GraphKey key;
    key.kind = KIND_DRAFT_STEP;
    key.spec = {0, N, 1, 1, Output::Logits};
    key.cache_a = &model_kv_;
    key.cache_b = &adapter_.kv();
    const Model & m = model_;
    KvCache & kv = model_kv_;
    Adapter & adapter = adapter_;

    d.hidden.resize((size_t) r.max_drafts * n_embd);
    int32_t x = r.pending;
    for (int i = 0; i < r.max_drafts; ++i) {
        key.n_kv = kv.n_kv_for(r.pos + i + 1);
        const int n_kv = key.n_kv;
        GraphBody body = [&m, &kv, &adapter, N, n_kv](GraphBuilder & b, const StepInputs & in) {
            ggml_tensor * h = b.layers(m, kv, n_kv, b.embed(m, in.tokens), 0, N, in);
            ggml_tensor * z = adapter.build(b, h, in, n_kv);
            return std::vector<ggml_tensor *>{h, ggml_mul_mat(b.ctx(), adapter.draft_head(), z)};
        };
        runner_.run(key, body, kv.n_embd_kv(), kv.n_cells(), &x, nullptr, r.pos + i,
                    {d.hidden.data() + (size_t) i * n_embd, logits_.data()});

        int32_t top;
        const float confidence = top1_probability(logits_.data(), n_rows, &top);
        int32_t t = vocab.empty() ? top : vocab[top];
        if (!r.sampling.greedy()) {
            // q over the draft vocabulary; tokens outside it have q = 0, which speculative
            // sampling handles exactly (they can only come from the residual distribution)
            Distribution q = make_distribution(logits_.data(), n_rows, r.sampling);
            if (!vocab.empty()) for (int32_t & id : q.ids) id = vocab[id];
            t = r.sampler.sample(q);
            d.q.push_back(std::move(q));
        }
        d.tokens.push_back(t);
        d.signal.push_back(confidence);
        // second early exit: the draft is unsure; verify what we have
        if (!keep_drafting((int) d.tokens.size(), confidence)) break;
        x = t;
    }
    d.hidden.resize(d.tokens.size() * (size_t) n_embd);
    return d;
}

bool AdapterDrafter::add_bonus_row(const DraftRequest & r, Draft & d) {
    const int k = (int) d.tokens.size();
    if (k < 1 || d.bonus) return false;
    const int n_embd = model_.hparams().n_embd;
    const int N = exit_layer();
    // d_k through layers [0, N) alone: its exit-layer state for verification, and the adapter's
    // K/V at its position (a later draft attends over it); no adapter head, no draft head.
    GraphKey key;
    key.kind = KIND_BONUS_STEP;
    key.spec = {0, N, 1, 1, Output::Hidden};
    key.n_kv = model_kv_.n_kv_for(r.pos + k + 1);
    key.cache_a = &model_kv_;
    key.cache_b = &adapter_.kv();
    const Model & m = model_;
    KvCache & kv = model_kv_;
    Adapter & adapter = adapter_;
    const int n_kv = key.n_kv;
    GraphBody body = [&m, &kv, &adapter, N, n_kv](GraphBuilder & b, const StepInputs & in) {
        ggml_tensor * h = b.layers(m, kv, n_kv, b.embed(m, in.tokens), 0, N, in);
        adapter.build_kv(b, h, in);
        return std::vector<ggml_tensor *>{h};
    };
    d.hidden.resize((size_t) (k + 1) * n_embd);
    const int32_t x = d.tokens.back();
    runner_.run(key, body, kv.n_embd_kv(), kv.n_cells(), &x, nullptr, r.pos + k, {d.hidden.data() + (size_t) k * n_embd});
    d.bonus = true;
    return true;
}

}  // namespace ke
