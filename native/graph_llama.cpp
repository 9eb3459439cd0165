// The llama-family decoder layer: llama (Llama 1-3, Mistral, SmolLM2), qwen2 (q/k/v biases) and
// qwen3 (per-head q/k RMSNorm); the optional weights decide, as in llama.cpp's llama.cpp,
// qwen2.cpp and qwen3.cpp graphs, which share this order of operations.
#include "graph.h"

namespace ke {

ggml_tensor * GraphBuilder::llama_layer(const Model & m, KvCache & kv, ggml_tensor * x, int il, bool last,
                                        const StepInputs & in) {
    const LayerWeights & L = m.layers[il];
    ggml_tensor * residual = x;                       // [n_embd, n_tokens]
    ggml_tensor * cur = rms_norm(x, L.attn.norm);
    cur = attention(L.attn, hp_.attention_config(il), kv.layer(il), cur, in, m.rope_freqs);
    if (last && in.out_ids) {
        cur = ggml_get_rows(ctx_, cur, in.out_ids);   // [n_embd, n_outputs]
        residual = ggml_get_rows(ctx_, residual, in.out_ids);
    }
    ggml_tensor * ffn_in = ggml_add(ctx_, cur, residual);
    cur = ffn(L, rms_norm(ffn_in, L.ffn_norm));
    return ggml_add(ctx_, cur, ffn_in);
}

}  // namespace ke
