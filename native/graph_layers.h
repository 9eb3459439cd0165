// One decoder layer per architecture family, each in a file of its own over GraphBuilder's shared
// helpers (norm, attention, FFN), in the order of operations of llama.cpp's graph for that
// architecture (src/models/<arch>.cpp) and with its tensor names, and the table that picks one
// by architecture. A new architecture family adds a builder file and a row of the table.
#pragma once

#include "graph.h"

namespace ke {

// graph_llama.cpp: llama (Llama 1-3, Mistral, SmolLM2), qwen2 (q/k/v biases), qwen3 (q/k norms)
ggml_tensor * build_llama_layer(GraphBuilder & b, const Model & m, KvCache & kv, ggml_tensor * x, int il,
                                const StepInputs & in);
// graph_gemma3.cpp: Gemma 3 (post-norms, GeGLU, local layers with a sliding window)
ggml_tensor * build_gemma3_layer(GraphBuilder & b, const Model & m, KvCache & kv, ggml_tensor * x, int il,
                                 const StepInputs & in);

// The layer builder of an architecture (the table in graph_layers.cpp).
LayerBuilder layer_builder(Arch arch);

}  // namespace ke
