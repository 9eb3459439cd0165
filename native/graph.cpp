#include "graph.h"

#include <cmath>
#include <string>

#include "graph_layers.h"
#include "kernels/cache_writes.h"
#include "kernels/mul_mat_op.h"

namespace ke {

GraphBuilder::GraphBuilder(ggml_context * ctx, ggml_cgraph * gf, const Hparams & hp)
    : ctx_(ctx), gf_(gf), hp_(hp), layer_(layer_builder(hp.arch)) {}

ggml_tensor * GraphBuilder::named(ggml_tensor * t, const char * name, int il) {
    if (il >= 0) return ggml_format_name(t, "%s-%d", name, il);
    return il == ADAPTER_LAYER ? ggml_format_name(t, "%s-adapter", name) : ggml_set_name(t, name);
}

StepInputs GraphBuilder::make_inputs(bool from_tokens, int n_tokens, int n_kv, int n_embd_kv, int n_outputs) {
    StepInputs in;
    in.n_kv = n_kv;
    auto input = [](ggml_tensor * t, const char * name) {
        ggml_set_name(t, name);
        ggml_set_input(t);
        return t;
    };
    if (from_tokens) {
        in.tokens = input(ggml_new_tensor_1d(ctx_, GGML_TYPE_I32, n_tokens), "inp_tokens");
    } else {
        in.hidden = input(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, hp_.n_embd, n_tokens), "inp_hidden");
    }
    in.pos = input(ggml_new_tensor_1d(ctx_, GGML_TYPE_I32, n_tokens), "inp_pos");
    in.kq_mask = input(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, n_kv, n_tokens), "inp_kq_mask");
    if (hp_.n_swa > 0) {
        in.kq_mask_swa = input(ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, n_kv, n_tokens), "inp_kq_mask_swa");
        in.n_swa = hp_.n_swa;
    }
    in.k_idxs = input(ggml_new_tensor_1d(ctx_, GGML_TYPE_I64, n_tokens), "inp_k_idxs");
    in.v_idxs = input(ggml_new_tensor_1d(ctx_, GGML_TYPE_I64, (int64_t) n_embd_kv * n_tokens), "inp_v_idxs");
    if (n_outputs < n_tokens) {
        in.out_ids = input(ggml_new_tensor_1d(ctx_, GGML_TYPE_I32, n_outputs), "inp_out_ids");
    }
    return in;
}

ggml_tensor * GraphBuilder::weight_mul_mat(ggml_tensor * w, ggml_tensor * x) {
    if (cpu_kernels_ && kernels::op_takes(w, x) && (!kernels_for_ || kernels_for_(w))) {
        return kernels::mul_mat_op(ctx_, w, x);
    }
    if (!split_rows_ || x->ne[1] == 1 || !split_rows_(w)) return ggml_mul_mat(ctx_, w, x);
    ggml_tensor * out = nullptr;
    for (int64_t t = 0; t < x->ne[1]; ++t) {
        ggml_tensor * y = ggml_mul_mat(ctx_, w, ggml_view_2d(ctx_, x, x->ne[0], 1, x->nb[1], t * x->nb[1]));
        out = out ? ggml_concat(ctx_, out, y, 1) : y;
    }
    return out;
}

ggml_tensor * GraphBuilder::embed(const Model & m, ggml_tensor * tokens) {
    ggml_tensor * x = named(ggml_get_rows(ctx_, m.tok_embd, tokens), "inp_embd", NO_LAYER);  // [n_embd, n_tokens]
    return hp_.embd_scale > 0.0f ? named(ggml_scale(ctx_, x, hp_.embd_scale), "inp_scaled", NO_LAYER) : x;
}

ggml_tensor * GraphBuilder::rms_norm(ggml_tensor * x, ggml_tensor * weight, const char * name, int il) {
    ggml_tensor * normed = named(ggml_rms_norm(ctx_, x, hp_.rms_eps), "norm", il);
    return named(ggml_mul(ctx_, normed, weight), name, il);
}

ggml_tensor * GraphBuilder::rope(ggml_tensor * x, const AttentionConfig & c, const StepInputs & in,
                                 ggml_tensor * rope_freqs) {
    // llama.cpp's defaults for plain (non-YaRN) RoPE
    const float ext_factor = 0.0f, attn_factor = 1.0f, beta_fast = 32.0f, beta_slow = 1.0f;
    return ggml_rope_ext(ctx_, x, in.pos, rope_freqs, (int) hp_.head_dim, hp_.rope_mode, hp_.n_ctx_train,
                         c.rope_freq_base, c.rope_freq_scale, ext_factor, attn_factor, beta_fast, beta_slow);
}

ggml_tensor * GraphBuilder::project_rope(ggml_tensor * w, ggml_tensor * b, ggml_tensor * norm, int n_heads,
                                         const AttentionConfig & c, ggml_tensor * x, const StepInputs & in,
                                         ggml_tensor * rope_freqs, const char * name, int il) {
    ggml_tensor * y = named(weight_mul_mat(w, x), name, il);  // [n_heads*hd, n_tokens]
    if (b) y = named(ggml_add(ctx_, y, b), name, il);
    y = ggml_reshape_3d(ctx_, y, hp_.head_dim, n_heads, x->ne[1]);
    if (norm) y = rms_norm(y, norm, (std::string(name) + "_normed").c_str(), il);  // each head's vector on its own
    return named(rope(y, c, in, rope_freqs), name, il);
}

void GraphBuilder::store_kv(const AttentionWeights & w, const AttentionConfig & c, KvLayer & cache, ggml_tensor * x,
                            const StepInputs & in, ggml_tensor * rope_freqs, int il) {
    const int64_t n_tokens = x->ne[1];
    const int64_t hd = hp_.head_dim;
    const int64_t n_embd_kv = (int64_t) hp_.n_head_kv * hd;
    ggml_tensor * k = project_rope(w.wk, w.bk, w.k_norm, hp_.n_head_kv, c, x, in, rope_freqs, "Kcur", il);  // [hd, n_head_kv, n_tokens]
    ggml_tensor * v = named(weight_mul_mat(w.wv, x), "Vcur", il);  // [n_embd_kv, n_tokens]
    if (w.bv) v = named(ggml_add(ctx_, v, w.bv), "Vcur", il);
    v = ggml_reshape_3d(ctx_, v, hd, hp_.n_head_kv, n_tokens);

    // K: a row per cell; V transposed: one element per row of a flat view.
    ggml_tensor * k_rows = ggml_view_2d(ctx_, k, n_embd_kv, n_tokens, k->nb[2], 0);
    ggml_build_forward_expand(gf_, ggml_set_rows(ctx_, cache.k, k_rows, in.k_idxs));
    ggml_tensor * v_flat = ggml_reshape_2d(ctx_, v, 1, ggml_nelements(v));
    ggml_tensor * v_cache_flat = ggml_reshape_2d(ctx_, cache.v, 1, ggml_nelements(cache.v));
    const bool scatter = cpu_kernels_ && kernels::scatter_takes(v_cache_flat, v_flat, in.v_idxs);
    ggml_build_forward_expand(gf_, scatter ? kernels::scatter_op(ctx_, v_cache_flat, v_flat, in.v_idxs)
                                           : ggml_set_rows(ctx_, v_cache_flat, v_flat, in.v_idxs));
}

ggml_tensor * GraphBuilder::attention(const AttentionWeights & w, const AttentionConfig & c, KvLayer & cache,
                                      ggml_tensor * x, const StepInputs & in, ggml_tensor * rope_freqs, int il) {
    const int64_t n_tokens = x->ne[1];
    const int64_t hd = hp_.head_dim;

    ggml_tensor * q = project_rope(w.wq, w.bq, w.q_norm, hp_.n_head, c, x, in, rope_freqs, "Qcur", il);  // [hd, n_head, n_tokens]
    // Gemma scales q itself (llama.cpp's order; a scale inside the softmax rounds differently)
    if (hp_.scale_q) q = named(ggml_scale(ctx_, q, hp_.kq_scale), "Qcur_scaled", il);
    ggml_build_forward_expand(gf_, q);
    store_kv(w, c, cache, x, in, rope_freqs, il);

    ggml_tensor * mask = c.sliding_window ? in.kq_mask_swa : in.kq_mask;  // [n_kv, n_tokens]
    // Batched: the tokens are the rows of one product. Per token: each token is a slice of its
    // own in dimension 3, where ggml multiplies one query row at a time (its one-token kernels).
    ggml_tensor * Q = in.per_token ? ggml_reshape_4d(ctx_, q, hd, 1, hp_.n_head, n_tokens)
                                   : ggml_permute(ctx_, q, 0, 2, 1, 3);
    if (in.per_token) mask = ggml_reshape_4d(ctx_, mask, mask->ne[0], 1, 1, n_tokens);
    ggml_tensor * cur = attend(cache, in.n_kv, Q, mask, n_tokens, in.seq_block, il);
    ggml_build_forward_expand(gf_, cur);
    return named(weight_mul_mat(w.wo, cur), "attn_out", il);  // [n_embd, n_tokens]
}

ggml_tensor * GraphBuilder::attend(KvLayer & cache, int n_kv, ggml_tensor * Q, ggml_tensor * mask, int64_t n_tokens,
                                   int seq_block, int il) {
    const int64_t hd = hp_.head_dim;
    const int64_t n_embd_kv = (int64_t) hp_.n_head_kv * hd;
    const int64_t n_cells = cache.k->ne[1];
    // The first n_kv cells: K as [hd, n_kv, n_head_kv], V^T as [n_kv, hd, n_head_kv]
    // With one sequence per row (seq_block > 0) dimension 3 steps from a row's block to the
    // next, so each row's query slice meets only its own sequence's cells.
    const int64_t n_seq = seq_block > 0 ? n_tokens : 1;
    const size_t k_row = ggml_row_size(cache.k->type, n_embd_kv);
    ggml_tensor * K = ggml_view_4d(ctx_, cache.k, hd, hp_.n_head_kv, n_kv, n_seq, ggml_row_size(cache.k->type, hd),
                                   k_row, k_row * (seq_block > 0 ? seq_block : n_kv), 0);
    K = ggml_permute(ctx_, K, 0, 2, 1, 3);
    ggml_tensor * Vt = ggml_view_4d(ctx_, cache.v, n_kv, hp_.n_head_kv, hd, n_seq,
                                    ggml_row_size(cache.v->type, n_cells * hd), ggml_row_size(cache.v->type, n_cells),
                                    ggml_row_size(cache.v->type, seq_block > 0 ? seq_block : n_cells * n_embd_kv), 0);
    Vt = ggml_permute(ctx_, Vt, 0, 2, 1, 3);

    ggml_tensor * kq = named(ggml_mul_mat(ctx_, K, Q), "kq", il);  // [n_kv, n_tokens, n_head] (per token: [n_kv, 1, n_head, n_tokens]); GQA broadcasts
    ggml_prec_set_acc(kq, GGML_PREC_F32);
    kq = named(ggml_soft_max_ext(ctx_, kq, mask, hp_.scale_q ? 1.0f : hp_.kq_scale, 0.0f), "kq_soft_max", il);
    ggml_tensor * kqv = named(ggml_mul_mat(ctx_, Vt, kq), "kqv", il);  // [hd, n_tokens, n_head] (per token: [hd, 1, n_head, n_tokens])
    ggml_tensor * cur = ggml_permute(ctx_, kqv, 0, 2, 1, 3);
    return named(ggml_cont_2d(ctx_, cur, hd * hp_.n_head, n_tokens), "kqv_out", il);  // [n_head*hd, n_tokens]
}

ggml_tensor * GraphBuilder::ffn(const LayerWeights & w, ggml_tensor * x, int il) {
    ggml_tensor * up = named(weight_mul_mat(w.ffn_up, x), "ffn_up", il);        // [n_ff, n_tokens]
    ggml_tensor * gate = named(weight_mul_mat(w.ffn_gate, x), "ffn_gate", il);  // [n_ff, n_tokens]
    ggml_tensor * act = hp_.ffn_act == FfnActivation::GeLU
                            ? named(ggml_geglu_split(ctx_, gate, up), "ffn_geglu", il)     // gelu(gate) * up
                            : named(ggml_swiglu_split(ctx_, gate, up), "ffn_swiglu", il);  // silu(gate) * up
    return named(weight_mul_mat(w.ffn_down, act), "ffn_out", il);               // [n_embd, n_tokens]
}

ggml_tensor * GraphBuilder::layers(const Model & m, KvCache & kv, ggml_tensor * x, int a, int b,
                                   const StepInputs & in) {
    for (int il = a; il < b; ++il) x = named(layer_(*this, m, kv, x, il, in), "l_out", il);
    return x;
}

ggml_tensor * GraphBuilder::head(const Model & m, ggml_tensor * x, bool logits) {
    x = rms_norm(x, m.output_norm, "result_norm", NO_LAYER);
    if (!logits) return x;
    ggml_tensor * out = named(weight_mul_mat(m.output, x), "result_output", NO_LAYER);  // [n_vocab, n]
    const float cap = hp_.final_logit_softcap;
    if (cap > 0.0f) {
        out = ggml_scale(ctx_, ggml_tanh(ctx_, ggml_scale(ctx_, out, 1.0f / cap)), cap);
        named(out, "result_output", NO_LAYER);  // llama.cpp names the capped logits so too
    }
    return out;
}

}  // namespace ke
