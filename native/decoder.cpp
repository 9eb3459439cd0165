#include "decoder.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "clock.h"
#include "error.h"
#include "graph.h"

namespace ke {

namespace {
// The decoder's graph kind: the whole model over the pending token (or a lookup draft's rows).
const GraphKind WHOLE_MODEL_STEP{"whole_model_step"};
}  // namespace

void DraftParams::validate() const {
    if (!(tau >= 0.0f && tau <= 1.0f)) throw InvalidArgument(format("tau must be in [0, 1], got %g", tau));
    if (gamma < 1 || gamma > MAX_GAMMA) {
        throw InvalidArgument(format("gamma must be in [1, %d], got %d", MAX_GAMMA, gamma));
    }
}

Decoder::Decoder(const Model & model, Runner & runner, Sequence & sequence, const Tokenizer & tokenizer,
                 const Sampler & sampler)
    : model_(model), runner_(runner), sequence_(sequence), tokenizer_(tokenizer), sampler_(sampler) {}

void Decoder::set_drafters(const std::vector<Drafter *> & drafters) {
    exit_drafter_ = nullptr;
    for (Drafter * d : drafters) {
        auto * x = dynamic_cast<ExitLayerDrafter *>(d);
        if (x && exit_drafter_) throw EngineError("at most one drafter may draft from the exit layer");
        if (x) exit_drafter_ = x;
    }
    drafters_ = drafters;
    controller_.clear_drafters();
    for (Drafter * d : drafters_) controller_.add_drafter(*d);
    // the new stateful drafter's cache has seen nothing of the sequence
    sequence_.invalidate_drafter();
    pending_ = -1;
}

ExitLayerDrafter * Decoder::exit_layer_drafter(int slot) const {
    return drafters_[slot] == exit_drafter_ ? exit_drafter_ : nullptr;
}

// ---- a generation: its limits, its end and its record ----------------------------------------------

std::vector<int32_t> Decoder::start(const std::vector<int32_t> & prompt, const SamplingParams & sampling,
                                    int64_t max_tokens, std::shared_ptr<LogitsMask> mask) {
    const double t0 = now_seconds();
    std::vector<int32_t> out{prefill(prompt, sampling, std::move(mask))};
    max_tokens_ = max_tokens > 0 ? max_tokens : std::numeric_limits<int64_t>::max();
    finish_ = FinishReason::None;
    t_first_ = now_seconds();
    stats_.prompt_ms = (t_first_ - t0) * 1e3;
    end_step(out);
    return out;
}

std::vector<int32_t> Decoder::step(const DraftParams & params) {
    if (pending_ < 0) throw EngineError("start() must come before step()");
    if (finish_ != FinishReason::None) {
        throw EngineError(format("the generation has ended (%s): start() begins the next", finish_reason_name(finish_)));
    }
    const int64_t left = max_tokens_ - stats_.predicted_n;
    std::vector<int32_t> out = advance(params, (int) std::min<int64_t>(left, std::numeric_limits<int>::max()));
    end_step(out);
    stats_.predicted_ms = (now_seconds() - t_first_) * 1e3;
    return out;
}

void Decoder::end_step(std::vector<int32_t> & out) {
    // commit() (or prefill()) ended `out` at an end-of-generation token: it ends the output
    if (!out.empty() && tokenizer_.is_eog(out.back())) {
        out.pop_back();
        finish_ = FinishReason::Stop;
    }
    stats_.predicted_n += (int64_t) out.size();
    // The limits. A full context still outputs the pending token: it came from the last logits.
    if (finish_ == FinishReason::None &&
        (stats_.predicted_n >= max_tokens_ || sequence_.n_past() >= sequence_.n_ctx())) {
        finish_ = FinishReason::Length;
    }
}

void Decoder::stop(int64_t n_tokens) {
    if (n_tokens < 0 || n_tokens > stats_.predicted_n) {
        throw InvalidArgument(format("stop: %lld tokens, but the generation has output %lld", (long long) n_tokens,
                                     (long long) stats_.predicted_n));
    }
    stats_.predicted_n = n_tokens;
    finish_ = FinishReason::Stop;
}

GenerationStats Decoder::stats() const {
    GenerationStats s = stats_;
    static_cast<ControllerStats &>(s) = controller_.stats();
    return s;
}

// ---- prefill -----------------------------------------------------------------------------------

int32_t Decoder::prefill(const std::vector<int32_t> & prompt, const SamplingParams & sampling,
                         std::shared_ptr<LogitsMask> mask) {
    sampling.validate();
    sampling_ = sampling;
    mask_ = std::move(mask);
    penalties_.reset(sampling);
    stats_ = GenerationStats();
    for (Drafter * d : drafters_) stats_.by_drafter.push_back(DrafterCounts{d->name()});
    controller_.begin_generation();
    controller_.reset_stats();
    const int n_embd = model_.hparams().n_embd;
    const int n_vocab = model_.hparams().n_vocab;
    const int L = model_.hparams().n_layer;
    ExitLayerDrafter * keeper = exit_drafter_;
    const int N = keeper ? keeper->exit_layer() : L;

    // Reuse the cached positions as far as every cache (the drafter's too) still holds them.
    const int reuse = sequence_.reuse_prefix(prompt, keeper ? sequence_.drafter_valid() : sequence_.n_ctx());
    const int n = (int) prompt.size();
    stats_.cache_n = reuse;
    stats_.prompt_n = n - reuse;
    std::vector<float> hidden;
    inputs_.assign(1, prompt.back());
    logits_.resize(n_vocab);
    for (int done = reuse; done < n; done += PREFILL_BATCH) {
        const int b = std::min(PREFILL_BATCH, n - done);
        const bool last = done + b == n;
        const Output out = last ? Output::Logits : Output::Hidden;  // only the K/V matter before the end
        std::vector<float> scratch(last ? 0 : n_embd);
        float * dst = last ? logits_.data() : scratch.data();
        const int32_t * tokens = prompt.data() + done;
        if (!keeper) {
            runner_.forward_tokens(sequence_.kv(), ForwardSpec::last_row(0, L, b, out), tokens, done, dst);
        } else {
            // shallow layers for every token (the drafter's cache is filled from them), then the deep layers
            hidden.resize((size_t) b * n_embd);
            runner_.forward_tokens(sequence_.kv(), ForwardSpec::every_row(0, N, b, Output::Hidden), tokens, done,
                                   hidden.data());
            keeper->prefill(hidden.data(), b, done);
            runner_.forward_hidden(sequence_.kv(), ForwardSpec::last_row(N, L, b, out), hidden.data(), done, dst);
        }
        // each batch is committed as one: a batch of one token took the one-row kernels, as a step does
        const auto rows = b > 1 ? Sequence::Rows::PromptBatch : Sequence::Rows::DecodeStep;
        sequence_.commit(prompt.data() + done, b, last ? logits_.data() : nullptr, keeper != nullptr, rows);
    }
    constrain(0);
    pending_ = sampler_.sample(logits_.data(), n_vocab, sampling_, sequence_.n_past());
    emit(pending_);
    return pending_;
}

// ---- one step ----------------------------------------------------------------------------------

std::vector<int32_t> Decoder::advance(const DraftParams & params, int max_new) {
    params.validate();
    max_new = std::max(1, max_new);
    if (params.mode == DraftParams::Mode::Off) return plain_step();
    if (params.mode == DraftParams::Mode::Auto && controller_.wants_plain_step()) return plain_step();

    const int pos = sequence_.n_past();  // where the pending token goes
    const int room = sequence_.n_ctx() - pos;
    const DraftRequest request{pending_, pos, 0, sequence_.tokens(), sampling_, sampler_};
    for (int slot = 0; slot < (int) drafters_.size(); ++slot) {
        Drafter & d = *drafters_[slot];
        if (!d.enabled_by(params)) continue;
        // k drafts are verified as verify_rows(k) rows and add up to verify_rows(k) tokens
        const int extra = d.verify_rows(1) - 1;
        DraftRequest r = request;
        r.max_drafts = std::min({params.gamma, room - extra, max_new - extra});
        if (r.max_drafts < 1) continue;
        const float tau = params.tau;
        const KeepDrafting keep = params.mode == DraftParams::Mode::Auto
                                      ? controller_.keep_drafting(slot)
                                      : KeepDrafting([&d, tau](int, float s) { return std::isnan(s) || d.confident(s, tau); });
        const double t0 = now_seconds();
        // Drafts obey the constraint too (a forbidden draft would only be rejected): the
        // constraint follows the draft and is back at the output before verification.
        std::optional<DraftMask> along;
        if (mask_ && mask_->can_rollback()) r.constraint = &along.emplace(*mask_, tokenizer_, model_.hparams().n_vocab);
        Draft draft = d.draft(r, keep);
        if (along) along->rollback();
        if (draft.tokens.empty()) continue;
        const double t1 = now_seconds();
        if (wants_bonus_row(params, slot, draft, std::min(room, max_new))) exit_drafter_->add_bonus_row(r, draft);
        return cycle(slot, draft, t1 - t0, now_seconds() - t1);
    }
    return plain_step();
}

bool Decoder::wants_bonus_row(const DraftParams & params, int slot, const Draft & draft, int max_rows) const {
    const Drafter & d = *drafters_[slot];
    const int k = (int) draft.tokens.size();
    if (!exit_layer_drafter(slot) || k + 1 > max_rows) return false;
    if (params.mode == DraftParams::Mode::Auto) return controller_.bonus_row_pays(slot, draft);
    // the fixed rule: drafting ran to gamma and would have gone on
    return k == params.gamma && d.confident(draft.signal.back(), params.tau);
}

std::vector<int32_t> Decoder::plain_step() {
    const double t0 = now_seconds();
    run_whole_model({pending_});
    controller_.record_plain(now_seconds() - t0);
    constrain(0);
    std::vector<int32_t> out{sampler_.sample(logits_.data(), model_.hparams().n_vocab, sampling_, sequence_.n_past() + 1)};
    emit(out[0]);
    commit({pending_}, out);
    return out;
}

std::vector<int32_t> Decoder::cycle(int slot, const Draft & draft, double draft_seconds, double bonus_seconds) {
    Drafter & d = *drafters_[slot];
    const int k = (int) draft.tokens.size();
    const int rows = d.verify_rows(draft);
    // The verified inputs: pending, then the drafts the rows judge the next token after.
    std::vector<int32_t> inputs{pending_};
    inputs.insert(inputs.end(), draft.tokens.begin(), draft.tokens.begin() + (rows - 1));

    // 1. Verify: row j holds the model's distribution for the token after input j. Drafts with
    //    exit-layer states need only the deep layers; attention runs per token so that each
    //    row is computed exactly as plain decoding computes it.
    const double t0 = now_seconds();
    if (const ExitLayerDrafter * x = exit_layer_drafter(slot)) {
        inputs_ = inputs;
        logits_.resize((size_t) rows * model_.hparams().n_vocab);
        ForwardSpec deep = ForwardSpec::every_row(x->exit_layer(), model_.hparams().n_layer, rows, Output::Logits);
        deep.per_token_attention = true;
        runner_.forward_hidden(sequence_.kv(), deep, draft.hidden.data(), sequence_.n_past(), logits_.data());
    } else {
        run_whole_model(inputs);
    }
    const double verify_seconds = now_seconds() - t0;

    // 2. Accept the agreeing prefix plus the model's own token at the first disagreement (or
    //    the bonus token after the last row).
    int n_accepted = 0;
    std::vector<int32_t> out = accept(draft, rows, &n_accepted);

    // 3. Roll back: keep the inputs up to the last accepted one; later cells are masked and
    //    rewritten by the next step.
    commit(inputs, out);

    // What the controller and the drafter learn: costs, and how often drafts with each signal
    // were right (drafts after the first rejection were never judged).
    for (int j = 0; j < std::min(k, n_accepted + 1); ++j) d.record_outcome(draft.signal[j], j < n_accepted);
    controller_.record_cycle(slot, k, draft.bonus, (int) out.size(), draft_seconds, bonus_seconds, verify_seconds);

    stats_.cycles += 1;
    stats_.bonus_rows += draft.bonus ? 1 : 0;
    stats_.draft_n += k;
    stats_.draft_n_accepted += n_accepted;
    stats_.cycle_tokens += (int64_t) out.size();
    if ((int) stats_.accepted_hist.size() <= n_accepted) stats_.accepted_hist.resize(n_accepted + 1, 0);
    stats_.accepted_hist[n_accepted] += 1;
    stats_.draft_ms += (draft_seconds + bonus_seconds) * 1e3;
    stats_.verify_ms += verify_seconds * 1e3;
    DrafterCounts & c = stats_.by_drafter[slot];
    c.cycles += 1;
    c.draft_n += k;
    c.draft_n_accepted += n_accepted;
    return out;
}

void Decoder::run_whole_model(const std::vector<int32_t> & tokens) {
    inputs_ = tokens;
    const int L = model_.hparams().n_layer;
    const int rows = (int) tokens.size();
    ExitLayerDrafter * keeper = exit_drafter_;
    const int N = keeper ? keeper->exit_layer() : L;
    // Plain decoding's own graph, layers [0, L), with one branch at the exit layer where the
    // stateful drafter records the positions (the adapter writes its K/V), so that drafting
    // can resume at any step. Several rows attend per token, each exactly as a one-row step.
    KvCache & kv = sequence_.kv();
    GraphRun g(WHOLE_MODEL_STEP, kv, ForwardSpec::every_row(0, L, rows, Output::Logits));
    g.spec.per_token_attention = rows > 1;
    g.also_writes = keeper ? &keeper->state() : nullptr;
    g.tokens = tokens.data();
    g.pos0 = sequence_.n_past();
    logits_.resize((size_t) rows * model_.hparams().n_vocab);
    g.outputs = {logits_.data()};
    const Model & m = model_;
    runner_.run(g, [&m, &kv, keeper, N, L](GraphBuilder & b, const StepInputs & in) {
        ggml_tensor * h = b.layers(m, kv, b.embed(m, in.tokens), 0, N, in);
        if (keeper) keeper->record(b, h, in);
        if (N < L) h = b.layers(m, kv, h, N, L, in);
        return GraphOutputs{b.head(m, h, true)};
    });
}

std::vector<int32_t> Decoder::accept(const Draft & draft, int rows, int * n_accepted) {
    const int n_vocab = model_.hparams().n_vocab;
    const int k = (int) draft.tokens.size();
    std::vector<int32_t> out;
    for (int j = 0; j < k; ++j) {
        // Under a constraint row j is masked with the state after the accepted prefix (pending,
        // d1 .. d(j-1)): a draft outside it has p = 0 and is rejected, and the token that
        // replaces it comes from the masked distribution, as a constrained plain step's would.
        constrain(j);
        const float * p_logits = logits_.data() + (size_t) j * n_vocab;
        const int32_t x = draft.tokens[j];
        // the model's own token at this position (greedy, or keyed by position: sampling.h) is
        // what plain decoding would give; the draft is kept iff it is that token
        out.push_back(sampler_.sample(p_logits, n_vocab, sampling_, sequence_.n_past() + 1 + j));
        const bool accepted = out.back() == x;
        emit(out.back());
        if (!accepted) return out;
        *n_accepted += 1;
        if (mask_ && tokenizer_.is_eog(x)) return out;  // the constraint ends with the generation
    }
    // every draft accepted: a row after the last draft gives a token of the model's own
    if (rows > k) {
        constrain(k);
        out.push_back(sampler_.sample(logits_.data() + (size_t) k * n_vocab, n_vocab, sampling_, sequence_.n_past() + 1 + k));
        emit(out.back());
    }
    return out;
}

void Decoder::constrain(int row) {
    const int n_vocab = model_.hparams().n_vocab;
    float * logits = logits_.data() + (size_t) row * n_vocab;
    penalties_.apply(logits, n_vocab);  // before the mask, as llama.cpp's chain: -inf stays -inf
    if (mask_) masked_row_.apply(*mask_, logits, n_vocab);
}

void Decoder::emit(int32_t token) {
    penalties_.accept(token);
    if (mask_) mask_->accept(token);
}

void Decoder::commit(const std::vector<int32_t> & inputs, std::vector<int32_t> & out) {
    // End of generation is decided here, before anything past it enters the sequence.
    for (size_t i = 0; i < out.size(); ++i) {
        if (tokenizer_.is_eog(out[i])) {
            out.resize(i + 1);
            break;
        }
    }
    // out[i] follows inputs[i]: the inputs through the one before out.back() are committed,
    // and the logits after the last of them become the sequence's.
    const int n = (int) out.size();
    const float * next = logits_.data() + (size_t) (n - 1) * model_.hparams().n_vocab;
    sequence_.commit(inputs.data(), n, next, exit_drafter_ != nullptr, Sequence::Rows::DecodeStep);
    pending_ = out.back();
}

}  // namespace ke
