#include "batch_decoder.h"

#include <algorithm>

#include "error.h"
#include "sequence.h"
#include "clock.h"

namespace ke {

namespace {
// The batch's graph kind: the whole model over one token per sequence.
const GraphKind SEQUENCE_ROWS{"sequence_rows"};
}  // namespace

BatchDecoder::BatchDecoder(const Model & model, Runner & runner, const Tokenizer & tokenizer,
                           ggml_backend_buffer_type_t buft, int n_seq, int n_ctx_seq)
    : model_(model),
      runner_(runner),
      tokenizer_(tokenizer),
      n_seq_(n_seq),
      n_ctx_seq_(n_ctx_seq),
      block_((int) GGML_PAD(std::max(n_ctx_seq, 1), KV_PAD)),
      kv_(buft, model.hparams().n_layer, model.hparams().n_head_kv, model.hparams().head_dim,
          (n_seq >= 1 && n_seq <= MAX_BATCH_SEQUENCES ? n_seq : 1) * block_),
      scratch_(buft, model.hparams().n_layer, model.hparams().n_head_kv, model.hparams().head_dim, block_) {
    if (n_seq < 1 || n_seq > MAX_BATCH_SEQUENCES) {
        throw InvalidArgument(format("n_seq must be between 1 and %d, got %d", MAX_BATCH_SEQUENCES, n_seq));
    }
    if (n_ctx_seq < 2) throw InvalidArgument(format("n_ctx_seq must be at least 2, got %d", n_ctx_seq));
    active_.reserve(n_seq);
}

BatchDecoder::~BatchDecoder() {
    runner_.forget(&kv_);
    runner_.forget(&scratch_);
}

int32_t BatchDecoder::choose(Active & a, float * logits) {
    const int n_vocab = model_.hparams().n_vocab;
    a.penalties.apply(logits, n_vocab);
    const int32_t token = a.sampler.sample(logits, n_vocab, a.sampling, a.n_past);  // the token goes at n_past
    a.penalties.accept(token);
    return token;
}

FinishReason BatchDecoder::finish(const Active & a, int32_t token) const {
    if (tokenizer_.is_eog(token)) return FinishReason::Stop;
    // the pending token needs a cell of its own for the next step
    return a.n_new >= a.max_new || a.n_past >= n_ctx_seq_ ? FinishReason::Length : FinishReason::None;
}

BatchEvent BatchDecoder::add(const std::vector<int32_t> & prompt, const SamplingParams & sampling, uint64_t seed,
                             int max_new) {
    sampling.validate();
    if (n_active() >= n_seq_) throw InvalidArgument(format("all %d sequences are taken", n_seq_));
    if (max_new < 1) throw InvalidArgument(format("max_new must be >= 1, got %d", max_new));
    const int n = (int) prompt.size();
    if (n < 1 || n >= n_ctx_seq_) {
        throw InvalidArgument(format("a prompt of %d tokens does not fit a sequence of n_ctx_seq=%d (it needs room "
                                     "for one more token)", n, n_ctx_seq_));
    }
    const double t0 = now_seconds();
    // The prompt alone, in Decoder::start's batches: the same kernels give the same K/V and logits.
    const int L = model_.hparams().n_layer;
    logits_.resize(model_.hparams().n_vocab);
    std::vector<float> hidden(model_.hparams().n_embd);
    for (int done = 0; done < n; done += PREFILL_BATCH) {
        const int b = std::min(PREFILL_BATCH, n - done);
        const bool last = done + b == n;
        runner_.forward_tokens(scratch_, ForwardSpec::last_row(0, L, b, last ? Output::Logits : Output::Hidden),
                               prompt.data() + done, done, last ? logits_.data() : hidden.data());
    }
    const int block = n_active();
    copy_cells(scratch_, 0, kv_, block * block_, n);

    Active a{next_id_++, n, -1, 1, max_new, sampling, Sampler(seed), PenaltyWindow(), GenerationStats(), 0.0};
    a.penalties.reset(sampling);
    a.pending = choose(a, logits_.data());
    a.t_first = now_seconds();
    a.stats.prompt_n = n;
    a.stats.prompt_ms = (a.t_first - t0) * 1e3;
    BatchEvent e = event(a);
    if (!e.finished()) active_.push_back(std::move(a));
    return e;
}

BatchEvent BatchDecoder::event(Active & a) {
    BatchEvent e{a.id, a.pending, finish(a, a.pending), std::nullopt};
    if (e.finish != FinishReason::Stop) a.stats.predicted_n += 1;  // an end-of-generation token is not output
    if (e.finished()) e.stats = a.stats;
    return e;
}

std::vector<BatchEvent> BatchDecoder::step() {
    const int rows = n_active();
    if (rows == 0) return {};
    const Hparams & hp = model_.hparams();
    std::vector<int32_t> tokens(rows), pos(rows);
    for (int r = 0; r < rows; ++r) {
        tokens[r] = active_[r].pending;
        pos[r] = active_[r].n_past;
    }
    run_sequence_rows(tokens, pos);

    std::vector<BatchEvent> events(rows);
    std::vector<size_t> done;
    for (int r = 0; r < rows; ++r) {
        Active & a = active_[r];
        a.n_past += 1;
        a.n_new += 1;
        a.pending = choose(a, logits_.data() + (size_t) r * hp.n_vocab);
        a.stats.plain_steps += 1;
        a.stats.predicted_ms = (now_seconds() - a.t_first) * 1e3;
        events[r] = event(a);
        if (events[r].finished()) done.push_back(r);
    }
    // from the back, so that the blocks still to leave keep their indices
    for (auto it = done.rbegin(); it != done.rend(); ++it) leave(*it);
    return events;
}

void BatchDecoder::run_sequence_rows(const std::vector<int32_t> & tokens, const std::vector<int32_t> & pos) {
    const int rows = (int) tokens.size();
    const int longest = *std::max_element(pos.begin(), pos.end()) + 1;  // cells the longest row attends over
    GraphRun g(SEQUENCE_ROWS, kv_, ForwardSpec::every_row(0, model_.hparams().n_layer, rows, Output::Logits));
    g.spec.per_token_attention = true;
    g.n_kv = std::min(block_, (int) GGML_PAD(longest, ATTENTION_STEP));  // as KvCache::n_kv_for
    g.tokens = tokens.data();
    g.row_pos = pos.data();
    g.seq_block = block_;
    logits_.resize((size_t) rows * model_.hparams().n_vocab);
    g.outputs = {logits_.data()};
    const Model & m = model_;
    KvCache & kv = kv_;
    runner_.run(g, [&m, &kv](GraphBuilder & b, const StepInputs & in) {
        ggml_tensor * h = b.layers(m, kv, b.embed(m, in.tokens), 0, m.hparams().n_layer, in);
        return GraphOutputs{b.head(m, h, true)};
    });
}

GenerationStats BatchDecoder::end(int64_t id, int64_t n_output) {
    for (size_t i = 0; i < active_.size(); ++i) {
        if (active_[i].id != id) continue;
        GenerationStats s = active_[i].stats;
        if (n_output < 0 || n_output > s.predicted_n) {
            throw InvalidArgument(format("end: %lld tokens, but the sequence has output %lld", (long long) n_output,
                                         (long long) s.predicted_n));
        }
        s.predicted_n = n_output;
        leave(i);
        return s;
    }
    throw InvalidArgument(format("end: no active sequence has id %lld", (long long) id));
}

void BatchDecoder::remove(int64_t id) {
    for (size_t i = 0; i < active_.size(); ++i) {
        if (active_[i].id == id) {
            leave(i);
            return;
        }
    }
}

void BatchDecoder::leave(size_t index) {
    const size_t last = active_.size() - 1;
    if (index != last) {
        copy_cells(kv_, (int) last * block_, kv_, (int) index * block_, active_[last].n_past);
        active_[index] = std::move(active_[last]);
    }
    active_.pop_back();
}

}  // namespace ke
