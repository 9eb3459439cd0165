#include "engine.h"

#include <cstdio>

#include "error.h"
#include "llama.h"

namespace ke {

namespace {

bool g_verbose = false;

void log_callback(ggml_log_level, const char * text, void *) {
    // Errors reach the user as exceptions; the log is for debugging (verbose=True).
    if (g_verbose) fputs(text, stderr);
}

int checked_n_ctx(int n_ctx) {
    if (n_ctx < 1 || n_ctx > MAX_N_CTX) {
        throw InvalidArgument(format("n_ctx must be between 1 and %d, got %d", MAX_N_CTX, n_ctx));
    }
    return n_ctx;
}

// Cost tables cover the draft lengths `bench --tune` reports.
constexpr int COST_MODEL_MAX_K = 16;

}  // namespace

void set_verbose(bool verbose) {
    g_verbose = verbose;
    ggml_log_set(log_callback, nullptr);
    llama_log_set(log_callback, nullptr);
}

Engine::Engine(const EngineParams & p)
    : backends_(p.device, p.n_threads),
      model_(p.model_path, backends_),
      tokenizer_(p.model_path),
      runner_(model_, backends_),
      sequence_(model_, runner_, backends_.main_buffer_type(), checked_n_ctx(p.n_ctx)),
      decoder_(model_, runner_, sequence_, tokenizer_, sampler_) {
    if (tokenizer_.n_vocab() != model_.hparams().n_vocab) {
        throw EngineError(format("'%s': the tokenizer has %d tokens but the model has %d", p.model_path.c_str(),
                                 tokenizer_.n_vocab(), model_.hparams().n_vocab));
    }
    decoder_.set_drafters(drafters());
}

std::vector<Drafter *> Engine::drafters() {
    // tried in this order: prompt lookup first, its drafts cost nothing to make
    std::vector<Drafter *> out{&lookup_drafter_};
    if (adapter_drafter_) out.push_back(adapter_drafter_.get());
    return out;
}

void Engine::load_adapter(const std::string & path) {
    // Loaded and checked first, so that a bad file leaves the current adapter in place.
    auto fresh = std::make_unique<Adapter>(path, model_, backends_, sequence_.n_ctx());
    adapter_drafter_.reset();
    decoder_.set_drafters(drafters());
    runner_.clear();  // cached graphs may point at the old adapter's cache
    adapter_ = std::move(fresh);
    ++adapter_loads_;
    adapter_drafter_ = std::make_unique<AdapterDrafter>(model_, runner_, sequence_.kv(), *adapter_);
    decoder_.set_drafters(drafters());
}

CostModel Engine::cost_model() const {
    const SpeculationController & c = decoder_.controller();
    CostModel m;
    m.plain_seconds = c.plain().seconds();
    m.plain_measured = c.plain().known();
    const std::vector<Drafter *> & drafters = decoder_.drafters();
    for (int slot = 0; slot < (int) drafters.size(); ++slot) {
        const Drafter & d = *drafters[slot];
        DrafterCostModel dm;
        dm.name = d.name();
        dm.draft_step_seconds = c.costs(slot).draft_step();
        dm.bonus_step_seconds = c.costs(slot).bonus_step();
        dm.bonus_step_measured = c.costs(slot).bonus_step_measured();
        for (int k = 1; k <= COST_MODEL_MAX_K; ++k) {
            dm.verify_seconds.push_back(c.costs(slot).verify(k, d, m.plain_seconds));
            dm.verify_measured.push_back(c.costs(slot).measured(k));
            dm.verify_rows.push_back(d.verify_rows(k));
        }
        dm.calibration = d.calibration_table();
        m.drafters.push_back(std::move(dm));
    }
    return m;
}

SequenceState Engine::save_state() const {
    SequenceState s = sequence_.save(adapter_ ? &adapter_->kv() : nullptr);
    s.drafter_id = adapter_loads_;
    return s;
}

void Engine::load_state(const SequenceState & state) {
    const bool same_adapter = adapter_ && state.drafter_id == adapter_loads_;
    decoder_.restart();
    sequence_.restore(state, same_adapter ? &adapter_->kv() : nullptr);
}

const std::vector<float> & Engine::append(int32_t token) {
    sequence_.append(token);
    return sequence_.logits();
}

void Engine::forward(const ForwardRequest & r, float * out) {
    sequence_.truncate(0);  // the token history no longer describes the cache afterwards
    runner_.forward(sequence_.kv(), r.spec, r.tokens, r.hidden, r.pos0, out);
}

void Engine::adapter_logits(const float * hidden, int n, int pos0, float * out) {
    if (!adapter_drafter_) throw InvalidArgument("no Kangaroo adapter is loaded");
    sequence_.truncate(0);
    adapter_drafter_->logits(hidden, n, pos0, out);
}

}  // namespace ke
