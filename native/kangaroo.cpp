#include "kangaroo.h"

#include <algorithm>
#include <chrono>

#include "error.h"
#include "graph.h"
#include "prompt_lookup.h"

namespace ke {

namespace {

// With a fixed drafting rule, prompt lookup drafts after a match of at least this many tokens
// (one token matches too often by chance).
constexpr int MIN_LOOKUP_NGRAM = 2;

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// norm(max(0, p - q)): where speculative sampling draws from after rejecting a draft.
Distribution residual(const Distribution & p, const Distribution & q) {
    // q as a dense table: p and q may each cover the whole vocabulary
    int32_t max_id = 0;
    for (int32_t id : q.ids) max_id = std::max(max_id, id);
    std::vector<float> q_dense((size_t) max_id + 1, 0.0f);
    for (size_t i = 0; i < q.ids.size(); ++i) q_dense[q.ids[i]] = q.probs[i];
    Distribution r;
    double z = 0.0;
    for (size_t i = 0; i < p.ids.size(); ++i) {
        const int32_t id = p.ids[i];
        const float w = std::max(0.0f, p.probs[i] - (id <= max_id ? q_dense[id] : 0.0f));
        if (w > 0.0f) {
            r.ids.push_back(id);
            r.probs.push_back(w);
            z += w;
        }
    }
    if (z <= 0.0) return p;  // p == q up to rounding: the residual is p itself
    for (float & w : r.probs) w = (float) (w / z);
    return r;
}

}  // namespace

// ---- drafting --------------------------------------------------------------------------------

AdapterDrafter::AdapterDrafter(const Model & model, Runner & runner, KvCache & model_kv, Adapter & adapter)
    : model_(model), runner_(runner), model_kv_(model_kv), adapter_(adapter), logits_(adapter.draft_vocab_size()) {}

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

Draft AdapterDrafter::draft(int32_t pending, int pos, int max_drafts, const KeepDrafting & keep_drafting,
                            const SamplingParams & sampling, Sampler & sampler) {
    const int n_embd = model_.hparams().n_embd;
    const int n_rows = adapter_.draft_vocab_size();
    const std::vector<int32_t> & vocab = adapter_.draft_vocab();  // row -> token id (empty: identity)
    const int N = exit_layer();
    // One graph per step: token -> layers [0, N) -> h (kept for verification) -> adapter -> draft head.
    GraphKey key;
    key.kind = KIND_DRAFT_STEP;
    key.spec = {0, N, 1, 1, Output::Logits};
    key.cache_a = &model_kv_;
    key.cache_b = &adapter_.kv();
    const Model & m = model_;
    KvCache & kv = model_kv_;
    Adapter & adapter = adapter_;

    Draft d;
    d.hidden.resize((size_t) max_drafts * n_embd);
    int32_t x = pending;
    for (int i = 0; i < max_drafts; ++i) {
        key.n_kv = kv.n_kv_for(pos + i + 1);
        const int n_kv = key.n_kv;
        GraphBody body = [&m, &kv, &adapter, N, n_kv](GraphBuilder & b, const StepInputs & in) {
            ggml_tensor * h = b.layers(m, kv, n_kv, b.embed(m, in.tokens), 0, N, in);
            ggml_tensor * z = adapter.build(b, h, in, n_kv);
            return std::vector<ggml_tensor *>{h, ggml_mul_mat(b.ctx(), adapter.draft_head(), z)};
        };
        runner_.run(key, body, kv.n_embd_kv(), kv.n_cells(), &x, nullptr, pos + i,
                    {d.hidden.data() + (size_t) i * n_embd, logits_.data()});

        int32_t top;
        const float confidence = top1_probability(logits_.data(), n_rows, &top);
        int32_t t = vocab.empty() ? top : vocab[top];
        if (!sampling.greedy()) {
            // q over the draft vocabulary; tokens outside it have q = 0, which speculative
            // sampling handles exactly (they can only come from the residual distribution)
            Distribution q = make_distribution(logits_.data(), n_rows, sampling);
            if (!vocab.empty()) for (int32_t & id : q.ids) id = vocab[id];
            t = sampler.sample(q);
            d.q.push_back(std::move(q));
        }
        d.tokens.push_back(t);
        d.confidence.push_back(confidence);
        // second early exit: the draft is unsure; verify what we have
        if (!keep_drafting((int) d.tokens.size(), confidence)) break;
        x = t;
    }
    d.hidden.resize(d.tokens.size() * (size_t) n_embd);
    return d;
}

// ---- the decoder -----------------------------------------------------------------------------

KangarooDecoder::KangarooDecoder(const Model & model, Runner & runner, Sequence & sequence, Drafter & drafter,
                                 Sampler & sampler)
    : model_(model), runner_(runner), sequence_(sequence), drafter_(drafter), sampler_(sampler) {}

int32_t KangarooDecoder::start(const std::vector<int32_t> & prompt, const SamplingParams & sampling) {
    sampling.validate();
    sampling_ = sampling;
    stats_ = KangarooStats();
    controller_.begin_generation();
    controller_.reset_stats();
    const int n_embd = model_.hparams().n_embd;
    const int n_vocab = model_.hparams().n_vocab;
    const int N = drafter_.exit_layer();
    const int L = model_.hparams().n_layer;

    // Reuse cached positions only as far as the drafter's cache is also valid.
    drafter_valid_ = std::min(drafter_valid_, sequence_.take_low_water());
    const int reuse = sequence_.reuse_prefix(prompt, drafter_valid_);
    const int n = (int) prompt.size();
    std::vector<float> hidden, logits(n_vocab);
    for (int done = reuse; done < n; done += PREFILL_BATCH) {
        const int b = std::min(PREFILL_BATCH, n - done);
        const bool last = done + b == n;
        // shallow layers for every token (the drafter reads them), then the deep layers
        hidden.resize((size_t) b * n_embd);
        runner_.forward(sequence_.kv(), {0, N, b, b, Output::Hidden}, prompt.data() + done, nullptr, done, hidden.data());
        drafter_.prefill(hidden.data(), b, done);
        std::vector<float> deep_out(last ? n_vocab : n_embd);
        runner_.forward(sequence_.kv(), {N, L, b, 1, last ? Output::Logits : Output::Hidden}, nullptr, hidden.data(),
                        done, deep_out.data());
        if (last) logits = deep_out;
    }
    sequence_.commit(prompt.data() + reuse, n - reuse, logits.data());
    drafter_valid_ = sequence_.n_past();
    sequence_.take_low_water();
    pending_ = sampler_.sample(logits.data(), n_vocab, sampling_);
    return pending_;
}

std::vector<int32_t> KangarooDecoder::step(const DraftParams & params, int max_new) {
    if (pending_ < 0) throw EngineError("start() must come before step()");
    if (sequence_.take_low_water() < drafter_valid_) {
        throw EngineError("the sequence changed since start(): call start() again");
    }
    if (sequence_.n_past() >= sequence_.n_ctx()) {
        throw InvalidArgument(format("the context is full (n_ctx=%d)", sequence_.n_ctx()));
    }
    int ngram = 0;
    const std::vector<int32_t> lookup = lookup_drafts(params, max_new, &ngram);
    if (!lookup.empty()) return whole_model_step(lookup, ngram);
    if (params.auto_tune && !controller_.should_speculate()) return whole_model_step({}, 0);
    return speculative_step(params, max_new);
}

std::vector<int32_t> KangarooDecoder::lookup_drafts(const DraftParams & params, int max_new, int * ngram) {
    // k drafts are verified as k + 1 rows and add up to k + 1 tokens
    const int room = sequence_.n_ctx() - sequence_.n_past();
    const int max_drafts = std::min({params.gamma, room - 1, max_new - 1});
    if (!params.lookup || max_drafts < 1) return {};
    std::vector<int32_t> history = sequence_.tokens();
    history.push_back(pending_);
    LookupMatch match = prompt_lookup(history, LookupCalibration::MAX_NGRAM, max_drafts);
    // the controller keeps the drafts worth verifying; a fixed rule keeps all of a real match
    const int n = (int) match.tokens.size();
    match.tokens.resize(params.auto_tune ? controller_.lookup_drafts(match.ngram, n)
                                         : (match.ngram >= MIN_LOOKUP_NGRAM ? n : 0));
    *ngram = match.ngram;
    return match.tokens;
}

std::vector<int32_t> KangarooDecoder::whole_model_step(const std::vector<int32_t> & drafts, int ngram) {
    const int pos = sequence_.n_past();
    const int n_vocab = model_.hparams().n_vocab;
    const int N = drafter_.exit_layer();
    const int L = model_.hparams().n_layer;
    const int k = (int) drafts.size();
    const int rows = k + 1;
    std::vector<int32_t> inputs{pending_};
    inputs.insert(inputs.end(), drafts.begin(), drafts.end());
    const double t0 = now_seconds();
    // Plain decoding's own graph, layers [0, L), with one branch added at the exit layer: the
    // drafter records the positions (the adapter writes its K/V), so that drafting can resume
    // at any step. One graph, so a plain step costs what plain decoding's costs. Several rows
    // attend per token, each computed exactly as a one-token step computes it.
    KvCache & kv = sequence_.kv();
    GraphKey key;
    key.kind = KIND_WHOLE_MODEL_STEP;
    key.spec = {0, L, rows, rows, Output::Logits, /*per_token=*/rows > 1};
    set_attention_span(key, kv, pos);
    key.cache_a = &kv;
    key.cache_b = drafter_.state();
    const Model & m = model_;
    Drafter & drafter = drafter_;
    const int n_kv = key.n_kv;
    GraphBody body = [&m, &kv, &drafter, N, L, n_kv](GraphBuilder & b, const StepInputs & in) {
        ggml_tensor * h = b.layers(m, kv, n_kv, b.embed(m, in.tokens), 0, N, in);
        drafter.record(b, h, in);
        return std::vector<ggml_tensor *>{b.head(m, b.layers(m, kv, n_kv, h, N, L, in), true)};
    };
    verify_logits_.resize((size_t) rows * n_vocab);
    runner_.run(key, body, kv.n_embd_kv(), kv.n_cells(), inputs.data(), nullptr, pos, {verify_logits_.data()});
    const double t1 = now_seconds();

    // Row j holds the model's distribution after input j: it judges draft j + 1, and the last
    // row gives a token of the model's own when every draft is accepted.
    int n_accepted = 0;
    std::vector<int32_t> out;
    if (k > 0) {
        Draft draft;
        draft.tokens = drafts;
        // a lookup draft is certain: q is all on the drafted token
        if (!sampling_.greedy()) for (int32_t x : drafts) draft.q.push_back(Distribution{{x}, {1.0f}});
        out = accept(draft, k, &n_accepted);
    }
    const float * next = verify_logits_.data() + (size_t) n_accepted * n_vocab;
    if (n_accepted == k) out.push_back(sampler_.sample(next, n_vocab, sampling_));

    // Keep the inputs up to the last accepted draft; later cells are masked and rewritten.
    sequence_.commit(inputs.data(), n_accepted + 1, next);
    sequence_.take_low_water();
    drafter_valid_ = sequence_.n_past();
    pending_ = out.back();

    if (k == 0) {
        controller_.record_plain(t1 - t0);
        return out;
    }
    controller_.record_full_verify(rows, t1 - t0);
    controller_.record_lookup_cycle((int) out.size(), now_seconds() - t0);
    for (int j = 0; j < std::min(k, n_accepted + 1); ++j) controller_.record_lookup_outcome(ngram + j, j < n_accepted);
    count_cycle(k, n_accepted, (int) out.size());
    stats_.verify_seconds += t1 - t0;
    stats_.lookup_cycles += 1;
    stats_.lookup_drafted += k;
    stats_.lookup_accepted += n_accepted;
    return out;
}

std::vector<int32_t> KangarooDecoder::speculative_step(const DraftParams & params, int max_new) {
    const int pos = sequence_.n_past();  // where the pending token goes
    const int room = sequence_.n_ctx() - pos;
    const int max_drafts = std::max(1, std::min({params.gamma, room, max_new}));
    const int n_vocab = model_.hparams().n_vocab;

    // 1. Draft with the shallow layers and the adapter until unsure or max_drafts. Unsure means
    //    a top-1 probability below tau, or (auto) one more draft not worth its cost.
    double p_all = 1.0;  // chance that every draft so far will be accepted
    const KeepDrafting keep_drafting = [&](int k, float confidence) {
        if (!params.auto_tune) return confidence >= params.tau;
        p_all *= controller_.acceptance(confidence);
        return controller_.draft_more(k, p_all);
    };
    double t0 = now_seconds();
    const Draft draft = drafter_.draft(pending_, pos, max_drafts, keep_drafting, sampling_, sampler_);
    const int k = (int) draft.tokens.size();
    double t1 = now_seconds();

    // 2. Verify: the deep layers over the k stacked exit-layer states, one batch. Row j holds the
    //    model's distribution for the token after input j (pending, d_1, ..., d_{k-1}).
    verify_logits_.resize((size_t) k * n_vocab);
    //    Attention runs per token so each row is computed exactly as plain decoding computes it.
    ForwardSpec verify{drafter_.exit_layer(), model_.hparams().n_layer, k, k, Output::Logits, /*per_token=*/true};
    runner_.forward(sequence_.kv(), verify, nullptr, draft.hidden.data(), pos, verify_logits_.data());
    const double t2 = now_seconds();
    stats_.draft_seconds += t1 - t0;
    stats_.verify_seconds += t2 - t1;

    // 3. Accept the agreeing prefix plus the model's own token at the first disagreement.
    int n_accepted = 0;
    std::vector<int32_t> out = accept(draft, k, &n_accepted);

    // 4. Roll back: the inputs whose K/V are now final are pending and the accepted drafts that
    //    were themselves run (all but the last token out); later cells are masked and rewritten.
    std::vector<int32_t> committed{pending_};
    committed.insert(committed.end(), out.begin(), out.end() - 1);
    sequence_.commit(committed.data(), (int) committed.size(), nullptr);
    sequence_.take_low_water();
    drafter_valid_ = sequence_.n_past();
    pending_ = out.back();

    // What the controller learns: costs, and how often drafts of each confidence were right
    // (drafts after the first rejection were never judged).
    controller_.record_draft_step((t1 - t0) / k);
    controller_.record_verify(k, t2 - t1);
    for (int j = 0; j < std::min(k, n_accepted + 1); ++j) controller_.record_draft_outcome(draft.confidence[j], j < n_accepted);
    controller_.record_cycle((int) out.size(), now_seconds() - t0);

    count_cycle(k, n_accepted, (int) out.size());
    return out;
}

void KangarooDecoder::count_cycle(int drafted, int accepted, int tokens) {
    stats_.cycles += 1;
    stats_.drafted += drafted;
    stats_.accepted += accepted;
    stats_.tokens += tokens;
    if ((int) stats_.accepted_hist.size() <= accepted) stats_.accepted_hist.resize(accepted + 1, 0);
    stats_.accepted_hist[accepted] += 1;
}

std::vector<int32_t> KangarooDecoder::accept(const Draft & draft, int k, int * n_accepted) {
    const int n_vocab = model_.hparams().n_vocab;
    std::vector<int32_t> out;
    for (int j = 0; j < k; ++j) {
        const float * p_logits = verify_logits_.data() + (size_t) j * n_vocab;
        const int32_t x = draft.tokens[j];
        if (sampling_.greedy()) {
            const int32_t t = argmax(p_logits, n_vocab);
            out.push_back(t);
            if (t != x) return out;  // the model's own token replaces the first wrong draft
            *n_accepted += 1;
            continue;
        }
        // Speculative sampling: keep x ~ q with probability min(1, p(x) / q(x)); otherwise draw
        // from norm(max(0, p - q)). Either way the token is distributed exactly as p.
        const Distribution p = make_distribution(p_logits, n_vocab, sampling_);
        const float px = p.prob_of(x);
        const float qx = draft.q[j].prob_of(x);
        if (sampler_.uniform() * qx < px) {
            out.push_back(x);
            *n_accepted += 1;
            continue;
        }
        out.push_back(sampler_.sample(residual(p, draft.q[j])));
        return out;
    }
    return out;  // every draft accepted
}

}  // namespace ke
