// The Gemma 3 decoder layer, in the order of llama.cpp's gemma3.cpp graph: RMSNorm before and
// after both the attention and the FFN (the post-norm comes before the residual add), per-head
// q/k RMSNorm, q scaled before q.k, GeGLU, and local layers with a sliding window and their own
// RoPE base (hp.attention_config). The embedding scale and the final soft-cap live in embed()
// and head(), driven by Hparams.
#include "graph.h"

namespace ke {

ggml_tensor * GraphBuilder::gemma3_layer(const Model & m, KvCache & kv, ggml_tensor * x, int il, bool last,
                                         const StepInputs & in) {
    const LayerWeights & L = m.layers[il];
    ggml_tensor * cur = rms_norm(x, L.attn.norm);     // [n_embd, n_tokens]
    cur = attention(L.attn, hp_.attention_config(il), kv.layer(il), cur, in, m.rope_freqs);
    if (last && in.out_ids) {
        cur = ggml_get_rows(ctx_, cur, in.out_ids);   // [n_embd, n_outputs]
        x = ggml_get_rows(ctx_, x, in.out_ids);
    }
    ggml_tensor * sa_out = ggml_add(ctx_, rms_norm(cur, L.attn_post_norm), x);
    cur = ffn(L, rms_norm(sa_out, L.ffn_norm));
    return ggml_add(ctx_, rms_norm(cur, L.ffn_post_norm), sa_out);
}

}  // namespace ke
