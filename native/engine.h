// Everything one loaded model needs, built in dependency order: compute devices, weights,
// tokenizer, graph runner, and the sequence (KV cache) that decoding works on.
#pragma once

#include <string>

#include <memory>

#include "adapter.h"
#include "backend.h"
#include "kangaroo.h"
#include "model.h"
#include "runner.h"
#include "sampling.h"
#include "sequence.h"
#include "tokenizer.h"

namespace ke {

struct EngineParams {
    std::string model_path;
    int n_ctx = 4096;
    int n_threads = 0;  // 0: physical cores
    std::string device = "auto";
};

class Engine {
public:
    explicit Engine(const EngineParams & params);

    // Loads a Kangaroo adapter (replacing any other) and sets up speculative decoding with it.
    void load_adapter(const std::string & path);
    bool has_adapter() const { return adapter != nullptr; }

    Backends backends;
    Model model;
    Tokenizer tokenizer;
    Runner runner;
    Sequence sequence;
    Sampler sampler{0};
    std::unique_ptr<Adapter> adapter;
    std::unique_ptr<AdapterDrafter> drafter;
    std::unique_ptr<KangarooDecoder> kangaroo;
};

// Turns ggml's and llama.cpp's log output on or off (off by default: they print on every load).
void set_verbose(bool verbose);

}  // namespace ke
