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
      adapter_(adapter),
      graphs_(model, runner, model_kv, adapter),
      calibration_(CONFIDENCE_BINS, confidence_bin, confidence_prior, bin_centres()),
      logits_(adapter.draft_vocab_size()) {}

void AdapterDrafter::prefill(const float * hidden, int n, int pos0) { graphs_.write_adapter_kv(hidden, n, pos0); }

void AdapterDrafter::record(GraphBuilder & b, ggml_tensor * hidden, const StepInputs & in) {
    adapter_.build_kv(b, hidden, in);
}

void AdapterDrafter::logits(const float * hidden, int n, int pos0, float * out) {
    graphs_.adapter_logits(hidden, n, pos0, out);
}

Draft AdapterDrafter::draft(const DraftRequest & r, const KeepDrafting & keep_drafting) {
    const int n_embd = model_.hparams().n_embd;
    const int n_rows = adapter_.draft_vocab_size();
    const std::vector<int32_t> & vocab = adapter_.draft_vocab();  // row -> token id (empty: identity)
    Draft d;
    if (r.max_drafts < 1 || !keep_drafting(0, NO_SIGNAL)) return d;

    d.hidden.resize((size_t) r.max_drafts * n_embd);
    int32_t x = r.pending;
    for (int i = 0; i < r.max_drafts; ++i) {
        graphs_.draft_step(x, r.pos + i, d.hidden.data() + (size_t) i * n_embd, logits_.data());
        // under a constraint the draft distribution is the adapter's restricted to what the
        // grammar allows next: its argmax, its sample and q are all of the masked distribution
        if (r.constraint && !r.constraint->apply(logits_.data(), n_rows, vocab.empty() ? nullptr : vocab.data())) {
            break;  // the grammar allows none of the draft vocabulary's tokens here
        }

        int32_t top;
        const float confidence = top1_probability(logits_.data(), n_rows, &top);
        int32_t t = vocab.empty() ? top : vocab[top];
        if (!r.sampling.greedy()) {
            // q over the draft vocabulary, sampled with the noise verification will use at this
            // position (sampling.h): the draft is the model's own sample whenever q is close to p
            Distribution q = make_distribution(logits_.data(), n_rows, r.sampling);
            if (!vocab.empty()) for (int32_t & id : q.ids) id = vocab[id];
            t = r.sampler.sample(q, r.pos + i + 1);
        }
        d.tokens.push_back(t);
        d.signal.push_back(confidence);
        if (r.constraint) r.constraint->push(t);
        // second early exit: the draft is unsure (or ended the output); verify what we have
        if ((r.constraint && r.constraint->ended()) || !keep_drafting((int) d.tokens.size(), confidence)) break;
        x = t;
    }
    d.hidden.resize(d.tokens.size() * (size_t) n_embd);
    return d;
}

void AdapterDrafter::add_bonus_row(const DraftRequest & r, Draft & d) {
    const int k = (int) d.tokens.size();
    if (k < 1 || d.bonus) return;
    const int n_embd = model_.hparams().n_embd;
    // d_k through layers [0, N) alone: its exit-layer state for verification, and the adapter's
    // K/V at its position (a later draft attends over it); no adapter head, no draft head.
    d.hidden.resize((size_t) (k + 1) * n_embd);
    graphs_.bonus_step(d.tokens.back(), r.pos + k, d.hidden.data() + (size_t) k * n_embd);
    d.bonus = true;
}

}  // namespace ke
