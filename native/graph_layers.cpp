#include "graph_layers.h"

#include "error.h"

namespace ke {

namespace {
struct ArchLayer {
    Arch arch;
    LayerBuilder build;
};

// Each supported architecture (model.cpp's ARCHS) and the builder of its layers.
const ArchLayer LAYER_BUILDERS[] = {
    {Arch::Llama, build_llama_layer},
    {Arch::Qwen2, build_llama_layer},
    {Arch::Qwen3, build_llama_layer},
    {Arch::Gemma3, build_gemma3_layer},
};
}  // namespace

LayerBuilder layer_builder(Arch arch) {
    for (const ArchLayer & a : LAYER_BUILDERS) {
        if (a.arch == arch) return a.build;
    }
    throw EngineError("internal error: an architecture without a layer builder");
}

}  // namespace ke
