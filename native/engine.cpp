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
    if (n_ctx < 1 || n_ctx > (1 << 20)) {
        throw InvalidArgument(format("n_ctx must be between 1 and 1048576, got %d", n_ctx));
    }
    return n_ctx;
}

}  // namespace

void set_verbose(bool verbose) {
    g_verbose = verbose;
    ggml_log_set(log_callback, nullptr);
    llama_log_set(log_callback, nullptr);
}

Engine::Engine(const EngineParams & p)
    : backends(p.device, p.n_threads),
      model(p.model_path, backends),
      tokenizer(p.model_path),
      runner(model, backends),
      sequence(model, runner, backends.main_buffer_type(), checked_n_ctx(p.n_ctx)) {
    if (tokenizer.n_vocab() != model.hparams().n_vocab) {
        throw EngineError(format("'%s': the tokenizer has %d tokens but the model has %d", p.model_path.c_str(),
                                 tokenizer.n_vocab(), model.hparams().n_vocab));
    }
}

}  // namespace ke

namespace ke {

void Engine::load_adapter(const std::string & path) {
    // Loaded and checked first, so that a bad file leaves the current adapter in place.
    auto fresh = std::make_unique<Adapter>(path, model, backends, sequence.n_ctx());
    kangaroo.reset();
    drafter.reset();
    runner.clear();  // cached graphs may point at the old adapter's cache
    adapter = std::move(fresh);
    drafter = std::make_unique<AdapterDrafter>(model, runner, sequence.kv(), *adapter);
    kangaroo = std::make_unique<KangarooDecoder>(model, runner, sequence, *drafter, sampler);
}

}  // namespace ke
