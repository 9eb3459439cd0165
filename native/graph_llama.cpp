// The llama-family decoder layer: llama (Llama 1-3, Mistral, SmolLM2), qwen2 (q/k/v biases) and
// qwen3 (per-head q/k RMSNorm); the optional weights decide, as in llama.cpp's llama.cpp,
// qwen2.cpp and qwen3.cpp graphs, which share this order of operations and these names.
#include "graph_layers.h"

namespace ke {

ggml_tensor * build_llama_layer(GraphBuilder & b, const Model & m, KvCache & kv, ggml_tensor * x, int il,
                                const StepInputs & in) {
    const LayerWeights & L = m.layers[il];
    ggml_tensor * inp_sa = x;                                         // [n_embd, n_tokens]
    ggml_tensor * cur = b.rms_norm(x, L.attn.norm, "attn_norm", il);
    cur = b.attention(L.attn, m.hparams().attention_config(il), kv.layer(il), cur, in, m.rope_freqs, il);
    if (il == m.hparams().n_layer - 1 && in.out_ids) {
        cur = ggml_get_rows(b.ctx(), cur, in.out_ids);               // [n_embd, n_outputs]
        inp_sa = ggml_get_rows(b.ctx(), inp_sa, in.out_ids);
    }
    ggml_tensor * ffn_inp = b.named(ggml_add(b.ctx(), cur, inp_sa), "ffn_inp", il);
    cur = b.ffn(L, b.rms_norm(ffn_inp, L.ffn_norm, "ffn_norm", il), il);  // "ffn_out"
    return ggml_add(b.ctx(), cur, ffn_inp);                           // "l_out" (GraphBuilder::layers)
}

}  // namespace ke
