// The Gemma 3 decoder layer, in the order of llama.cpp's gemma3.cpp graph and with its names:
// RMSNorm before and after both the attention and the FFN (the post-norm comes before the
// residual add), per-head q/k RMSNorm, q scaled before q.k, GeGLU, and local layers with a
// sliding window and their own RoPE base (hp.attention_config). The embedding scale and the
// final soft-cap live in GraphBuilder::embed() and head(), driven by Hparams.
#include "graph_layers.h"

namespace ke {

ggml_tensor * build_gemma3_layer(GraphBuilder & b, const Model & m, KvCache & kv, ggml_tensor * x, int il,
                                 const StepInputs & in) {
    const LayerWeights & L = m.layers[il];
    ggml_tensor * cur = b.rms_norm(x, L.attn.norm, "attn_norm", il);  // [n_embd, n_tokens]
    cur = b.attention(L.attn, m.hparams().attention_config(il), kv.layer(il), cur, in, m.rope_freqs, il);
    if (il == m.hparams().n_layer - 1 && in.out_ids) {
        cur = ggml_get_rows(b.ctx(), cur, in.out_ids);                 // [n_embd, n_outputs]
        x = ggml_get_rows(b.ctx(), x, in.out_ids);
    }
    ggml_tensor * sa_out = b.named(ggml_add(b.ctx(), b.rms_norm(cur, L.attn_post_norm, "attn_post_norm", il), x),
                                   "sa_out", il);
    cur = b.ffn(L, b.rms_norm(sa_out, L.ffn_norm, "ffn_norm", il), il);  // "ffn_out"
    return ggml_add(b.ctx(), b.rms_norm(cur, L.ffn_post_norm, "ffn_post_norm", il), sa_out);  // "l_out"
}

}  // namespace ke
