// The layer-range graph: runs decoder layers [a, b) of a model over a batch of tokens (when
// a == 0) or of hidden states, writing their keys/values into the KV cache, and ends in hidden
// states, final-normed hidden states or logits. Built from shared helpers (norm, attention, FFN)
// that the Kangaroo adapter's graph reuses; each architecture's layer is a small builder in a
// file of its own (graph_layers.h). Operation order mirrors llama.cpp's graphs so that results
// agree with it bit for bit on the same kernels, and intermediate tensors carry llama.cpp's names
// ("attn_norm-3", "ffn_out-3"), so a node can be found by name (Engine::op_profile, by name).
#pragma once

#include <functional>

#include "ggml.h"
#include "kv_cache.h"
#include "model.h"

namespace ke {

// Per-step values, fed as graph inputs so that a built graph can be reused for many steps.
struct StepInputs {
    ggml_tensor * tokens = nullptr;   // I32 [n_tokens]               (graphs starting at layer 0)
    ggml_tensor * hidden = nullptr;   // F32 [n_embd, n_tokens]       (graphs starting later)
    ggml_tensor * pos = nullptr;      // I32 [n_tokens]               absolute positions
    ggml_tensor * kq_mask = nullptr;  // F32 [n_kv, n_tokens]         0 or -inf (causal)
    ggml_tensor * kq_mask_swa = nullptr;  // F32 [n_kv, n_tokens]     causal, only the last n_swa positions
    int n_swa = 0;                    // window of kq_mask_swa (0: the model has no local layers)
    ggml_tensor * k_idxs = nullptr;   // I64 [n_tokens]               cache cell per token
    ggml_tensor * v_idxs = nullptr;   // I64 [n_embd_kv * n_tokens]   element index into transposed V
    ggml_tensor * out_ids = nullptr;  // I32 [n_outputs]              rows kept at the last layer (or null: all)
    int n_kv = 0;                     // cells attention reads (the span of kq_mask)

    // Attention layout. Batched (prefill, as llama.cpp): one product over n_kv cells for all
    // tokens. Per token (speculative verification): every token's query is a product of its own
    // (a slice of the same node), which ggml computes with its one-token kernels: ggml's batched
    // kernels round differently, so this makes every verified row bit-identical to plain
    // decoding. Cells a token's one-token step would not read (past its own n_kv) are masked:
    // they add exact zeros.
    bool per_token = false;
    // Many sequences (BatchDecoder): row r is a sequence of its own whose cells are
    // [r * seq_block, (r + 1) * seq_block); its attention reads only those (per token, as above).
    // 0: every row belongs to one sequence over cells [0, n_kv).
    int seq_block = 0;
};

enum class Output { Hidden, NormedHidden, Logits };

// The `il` a helper names its tensors by, besides a layer's index: NO_LAYER (the embedding, the
// head: "result_norm") and ADAPTER_LAYER (the Kangaroo adapter's block: "attn_norm-adapter").
constexpr int NO_LAYER = -1;
constexpr int ADAPTER_LAYER = -2;

class GraphBuilder;

// One decoder layer of an architecture: x [n_embd, n_tokens] -> [n_embd, n_tokens] (only the
// in.out_ids rows at the model's last layer), writing layer il's K/V into kv (graph_layers.h).
using LayerBuilder = ggml_tensor * (*)(GraphBuilder & b, const Model & m, KvCache & kv, ggml_tensor * x, int il,
                                       const StepInputs & in);

class GraphBuilder {
public:
    GraphBuilder(ggml_context * ctx, ggml_cgraph * gf, const Hparams & hp);

    // Creates the input tensors for a step of `n_tokens` tokens attending over `n_kv` cells.
    StepInputs make_inputs(bool from_tokens, int n_tokens, int n_kv, int n_embd_kv, int n_outputs);

    // Graphs whose rows must come out as one-token steps compute them (per-token attention)
    // multiply by the weights `split` selects one row at a time: ggml's repacked kernels for
    // some types round a batch (gemm) unlike a single row (gemv).
    void split_rows_for(std::function<bool(const ggml_tensor *)> split) { split_rows_ = std::move(split); }
    // Multiply by CPU weights with our small-batch kernels where they take the weight (runners
    // without a GPU backend turn this on): batch-invariant, so no row splitting is needed there.
    void use_cpu_kernels(bool on) { cpu_kernels_ = on; }
    // ... and only for the weights `take` selects (a prompt's batch: where they give ggml's bits).
    void kernels_only_for(std::function<bool(const ggml_tensor *)> take) { kernels_for_ = std::move(take); }
    // w x for a weight matrix w (our kernels, or ggml; rows one by one where split_rows_for asks)
    ggml_tensor * weight_mul_mat(ggml_tensor * w, ggml_tensor * x);

    // Names t "<name>-<il>" (or as NO_LAYER / ADAPTER_LAYER say) and returns it, as llama.cpp's
    // cb(t, name, il) does.
    ggml_tensor * named(ggml_tensor * t, const char * name, int il);

    // Token embeddings of tokens I32 [n_tokens] -> [n_embd, n_tokens] (scaled where the arch says)
    ggml_tensor * embed(const Model & m, ggml_tensor * tokens);
    // RMSNorm times weight, named `name` (x [n, ...] -> the same shape)
    ggml_tensor * rms_norm(ggml_tensor * x, ggml_tensor * weight, const char * name, int il);
    // Self-attention block (no residual): norm'ed input x [n_embd, n_tokens] -> [n_embd, n_tokens]
    // ("attn_out"). q/k biases and per-head q/k norms are applied where the weights have them.
    ggml_tensor * attention(const AttentionWeights & w, const AttentionConfig & c, KvLayer & cache, ggml_tensor * x,
                            const StepInputs & in, ggml_tensor * rope_freqs, int il);
    // Gated FFN (SwiGLU or GeGLU, as the model's): [n_embd, n_tokens] -> [n_embd, n_tokens] ("ffn_out")
    ggml_tensor * ffn(const LayerWeights & w, ggml_tensor * x, int il);
    // Writes the K/V of the step's tokens (norm'ed input x [n_embd, n_tokens]) into the cache:
    // what a later token needs of these ones, without attending from them.
    void store_kv(const AttentionWeights & w, const AttentionConfig & c, KvLayer & cache, ggml_tensor * x,
                  const StepInputs & in, ggml_tensor * rope_freqs, int il);
    // softmax(K^T Q * kq_scale + mask) V over the first n_kv cells: Q [hd, n_tokens, n_head]; with
    // seq_block > 0 (StepInputs::seq_block) Q [hd, 1, n_head, n_tokens], row r over its own block's cells
    ggml_tensor * attend(KvLayer & cache, int n_kv, ggml_tensor * Q, ggml_tensor * mask, int64_t n_tokens,
                         int seq_block, int il);

    // Decoder layers [a, b) on x [n_embd, n_tokens], each by its architecture's layer builder
    // ("l_out-<il>"). If b is the model's last layer and in.out_ids is set, only those rows
    // continue through the last FFN (as llama.cpp does).
    ggml_tensor * layers(const Model & m, KvCache & kv, ggml_tensor * x, int a, int b, const StepInputs & in);
    // Final norm (+ LM head when `logits`): [n_embd, n] -> [n_embd, n] ("result_norm") or
    // [n_vocab, n] ("result_output")
    ggml_tensor * head(const Model & m, ggml_tensor * x, bool logits);

    ggml_context * ctx() { return ctx_; }

private:
    // RoPE at the step's positions on x [hd, n_heads, n_tokens]
    ggml_tensor * rope(ggml_tensor * x, const AttentionConfig & c, const StepInputs & in, ggml_tensor * rope_freqs);
    // Projection w x (+ b), per-head norm, RoPE: x [n_embd, n_tokens] -> [hd, n_heads, n_tokens],
    // named `name` ("Qcur", "Kcur")
    ggml_tensor * project_rope(ggml_tensor * w, ggml_tensor * b, ggml_tensor * norm, int n_heads,
                               const AttentionConfig & c, ggml_tensor * x, const StepInputs & in,
                               ggml_tensor * rope_freqs, const char * name, int il);

    ggml_context * ctx_;
    ggml_cgraph * gf_;
    const Hparams & hp_;
    LayerBuilder layer_;  // the architecture's layer (graph_layers.h)
    std::function<bool(const ggml_tensor *)> split_rows_;
    bool cpu_kernels_ = false;
    std::function<bool(const ggml_tensor *)> kernels_for_;
};

}  // namespace ke
