// A base model: hyperparameters and weights of a GGUF of a supported architecture (llama, qwen2,
// qwen3, gemma3), loaded into backend buffers. Everything is validated before any ggml op sees it
// (ggml asserts abort the process).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "ggml.h"

namespace ke {

class GgufFile;

enum class Arch { Llama, Qwen2, Qwen3, Gemma3 };

enum class FfnActivation { SiLU, GeLU };  // the gate's activation: SwiGLU or GeGLU (tanh GELU)

// GGUF `general.architecture` names the engine runs, in the order `info` lists them.
const std::vector<std::string> & supported_architectures();

// How one layer's attention runs: its RoPE and, for local layers, the sliding window.
struct AttentionConfig {
    float rope_freq_base;
    float rope_freq_scale;
    bool sliding_window;  // attend only to the last n_swa positions (StepInputs::kq_mask_swa)
};

struct Hparams {
    Arch arch;
    std::string arch_name;  // a name of supported_architectures()
    int n_layer;
    int n_embd;
    int n_head;
    int n_head_kv;
    int head_dim;
    int n_ff;
    int n_vocab;
    int n_ctx_train;
    float rms_eps;
    float rope_freq_base;
    float rope_freq_scale;  // 1 / linear scaling factor
    int rope_mode;          // GGML_ROPE_TYPE_NORMAL (llama) or GGML_ROPE_TYPE_NEOX (qwen2, qwen3, gemma3)
    FfnActivation ffn_act = FfnActivation::SiLU;
    float kq_scale;         // scale of q.k: 1/sqrt(head_dim), or the GGUF's (Gemma 3)
    bool scale_q = false;   // Gemma 3: q is scaled before q.k (llama.cpp's order), not inside softmax
    float embd_scale = 0.0f;            // Gemma 3: token embeddings times sqrt(n_embd); 0: none
    float final_logit_softcap = 0.0f;   // logits = c * tanh(logits / c) when > 0
    int n_swa = 0;                      // sliding window of local layers (positions); 0: none
    std::vector<uint8_t> swa_layers;    // [n_layer] 1: the layer is local (sliding window)
    float rope_freq_base_swa = 10000.0f;  // RoPE base of local layers (their scale is 1)

    int n_embd_kv() const { return n_head_kv * head_dim; }  // K/V width per token (GQA)
    // Layer il's attention; the adapter's is the global layers' (full attention, the model's RoPE).
    AttentionConfig attention_config(int il) const;
    AttentionConfig global_attention_config() const { return {rope_freq_base, rope_freq_scale, false}; }
};

// Attention weights shared by the model's layers and the Kangaroo adapter.
struct AttentionWeights {
    ggml_tensor * norm = nullptr;  // [n_embd]
    ggml_tensor * wq = nullptr;    // [n_embd, n_head*head_dim]
    ggml_tensor * wk = nullptr;    // [n_embd, n_head_kv*head_dim]
    ggml_tensor * wv = nullptr;    // [n_embd, n_head_kv*head_dim]
    ggml_tensor * bq = nullptr;    // [n_head*head_dim]     (qwen2)
    ggml_tensor * bk = nullptr;    // [n_head_kv*head_dim]  (qwen2)
    ggml_tensor * bv = nullptr;    // [n_head_kv*head_dim]  (qwen2)
    ggml_tensor * q_norm = nullptr;  // [head_dim] per-head RMSNorm of q before RoPE (qwen3, gemma3)
    ggml_tensor * k_norm = nullptr;  // [head_dim] per-head RMSNorm of k before RoPE (qwen3, gemma3)
    ggml_tensor * wo = nullptr;    // [n_head*head_dim, n_embd]
};

struct LayerWeights {
    AttentionWeights attn;
    ggml_tensor * attn_post_norm = nullptr;  // [n_embd] norm of the attention output (gemma3)
    ggml_tensor * ffn_norm = nullptr;  // [n_embd]
    ggml_tensor * ffn_post_norm = nullptr;   // [n_embd] norm of the FFN output (gemma3)
    ggml_tensor * ffn_gate = nullptr;  // [n_embd, n_ff]
    ggml_tensor * ffn_up = nullptr;    // [n_embd, n_ff]
    ggml_tensor * ffn_down = nullptr;  // [n_ff, n_embd]
};

// Weight tensors grouped by the buffer type they live in; owns the contexts and buffers.
class WeightStore {
public:
    ~WeightStore();
    // At most this many tensors will be created in one buffer type (a GGUF's tensor count):
    // ggml contexts are sized up front, and a full one aborts the process.
    void reserve(int64_t max_tensors) { capacity_ = std::max<int64_t>(1, max_tensors); }
    // A tensor shaped like `like`, to be placed in a buffer of type `buft`.
    ggml_tensor * create(ggml_backend_buffer_type_t buft, const std::string & name, const ggml_tensor * like);
    void allocate();  // one backend buffer per buffer type
    size_t total_bytes() const;

private:
    std::map<ggml_backend_buffer_type_t, ggml_context *> ctxs_;
    std::vector<ggml_backend_buffer_t> buffers_;
    int64_t capacity_ = 64;
};

class Model {
public:
    Model(const std::string & path, Backends & backends);

    const std::string & path() const { return path_; }
    const Hparams & hparams() const { return hp_; }
    const std::string & fingerprint() const { return fingerprint_; }
    const std::string & chat_template() const { return chat_template_; }
    const std::string & name() const { return name_; }
    const std::string & file_type() const { return file_type_; }
    size_t weight_bytes() const { return weights_.total_bytes(); }

    ggml_tensor * tok_embd = nullptr;     // [n_embd, n_vocab] (get_rows)
    ggml_tensor * output_norm = nullptr;  // [n_embd]
    ggml_tensor * output = nullptr;       // [n_embd, n_vocab] (LM head; a copy of tok_embd when tied)
    ggml_tensor * rope_freqs = nullptr;   // [head_dim/2] (Llama 3) or null
    std::vector<LayerWeights> layers;

private:
    void create_weights(const GgufFile & f, Backends & backends);

    std::string path_;
    std::string name_;
    std::string file_type_;
    Hparams hp_{};
    std::string fingerprint_;
    std::string chat_template_;
    WeightStore weights_;
    // file tensor name -> engine tensor, for loading
    std::vector<std::pair<std::string, ggml_tensor *>> to_load_;
};

// Throws unless ggml's CPU kernels can run `op` with a weight of this type: they abort on a
// type they have no code for, and a retyped tensor of the same byte size (an F32 norm marked
// I32) gets past every size check. 1-D weights (norms, biases, RoPE factors) must be F32.
void check_weight_type(const std::string & path, const std::string & name, ggml_type type, ggml_op op);

// Throws unless the tokenizer.* keys are what llama.cpp's vocabulary loader can take safely: a
// tokenizer our architectures use, arrays of one entry per token, token ids inside the vocabulary.
void check_tokenizer_metadata(const GgufFile & f, int n_vocab);

// A GGUF's hyperparameters, validated; throws EngineError naming the file.
Hparams read_hparams(const GgufFile & f);

// FNV-1a 64 over the model's identity (docs/formats.md, "Model fingerprint"): architecture,
// shape and vocabulary. The second form reads only the file's metadata, for tools (training,
// export) that tie adapters to a model without loading its weights.
std::string model_fingerprint(const GgufFile & f, const Hparams & hp);
std::string model_fingerprint(const std::string & path);

// What a GGUF says about its model, from the file's metadata alone (no weights loaded): the one
// reading of it that training and `info` share with the engine.
struct ModelTraits {
    Hparams hp;
    std::string fingerprint;
    bool tied_head;  // no output.weight: the LM head is token_embd.weight
    bool qkv_bias;   // q/k/v biases (qwen2)
    bool qk_norm;    // per-head q/k RMSNorm (qwen3, gemma3)
    bool post_norms; // RMSNorm of the attention and FFN outputs before each residual add (gemma3)
};
ModelTraits read_model_traits(const std::string & path);

}  // namespace ke
