#include "model.h"

#include <cmath>

#include "error.h"
#include "ggml-cpu.h"
#include "gguf_file.h"

namespace ke {

void check_weight_type(const std::string & path, const std::string & name, ggml_type type, ggml_op op) {
    bool ok;
    const char * need;
    if (op == GGML_OP_MUL_MAT) {
        ok = ggml_get_type_traits_cpu(type)->vec_dot != nullptr;
        need = "a matrix type ggml can multiply";
    } else if (op == GGML_OP_GET_ROWS) {
        ok = type == GGML_TYPE_F32 || ggml_get_type_traits(type)->to_float != nullptr;
        need = "a type ggml can convert to F32";
    } else {
        ok = type == GGML_TYPE_F32;
        need = "F32";
    }
    if (!ok) {
        throw EngineError(format("'%s': tensor '%s' has type %s, expected %s", path.c_str(), name.c_str(),
                                 ggml_type_name(type), need));
    }
}

WeightStore::~WeightStore() {
    for (auto b : buffers_) ggml_backend_buffer_free(b);
    for (auto & kv : ctxs_) ggml_free(kv.second);
}

ggml_tensor * WeightStore::create(ggml_backend_buffer_type_t buft, const std::string & name, const ggml_tensor * like) {
    ggml_context *& ctx = ctxs_[buft];
    if (!ctx) {
        ggml_init_params params = {ggml_tensor_overhead() * (size_t) capacity_, nullptr, true};
        ctx = ggml_init(params);
    }
    if (ggml_used_mem(ctx) + ggml_tensor_overhead() > ggml_get_mem_size(ctx)) {
        throw EngineError(format("more weight tensors than the %lld reserved (at '%s')", (long long) capacity_,
                                 name.c_str()));
    }
    ggml_tensor * t = ggml_new_tensor(ctx, like->type, GGML_MAX_DIMS, like->ne);
    ggml_set_name(t, name.c_str());
    return t;
}

void WeightStore::allocate() {
    for (auto & kv : ctxs_) {
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(kv.second, kv.first);
        if (!buf) {
            throw EngineError(format("cannot allocate %s memory for the model weights",
                                     ggml_backend_buft_name(kv.first)));
        }
        ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        buffers_.push_back(buf);
    }
}

size_t WeightStore::total_bytes() const {
    size_t n = 0;
    for (auto b : buffers_) n += ggml_backend_buffer_get_size(b);
    return n;
}

std::string model_fingerprint(const GgufFile & f, const Hparams & hp) {
    const std::vector<std::string> tokens = f.get_str_array("tokenizer.ggml.tokens");
    if ((int) tokens.size() != hp.n_vocab) {
        throw EngineError(format("'%s': %zu tokenizer tokens but the embedding has %d rows",
                                 f.path().c_str(), tokens.size(), hp.n_vocab));
    }
    uint64_t h = 0xcbf29ce484222325ull;
    auto feed = [&h](const std::string & s) {
        for (unsigned char c : s) {
            h ^= c;
            h *= 0x100000001b3ull;
        }
    };
    feed(format("%s|%d|%d|%d|%d|%d|", hp.arch_name.c_str(), hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv,
                hp.n_vocab));
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (i) feed("\n");
        feed(tokens[i]);
    }
    return format("%016llx", (unsigned long long) h);
}

std::string model_fingerprint(const std::string & path) {
    GgufFile f(path);
    return model_fingerprint(f, read_hparams(f));
}

// The tokenizers of the supported architectures: SentencePiece ("llama": Llama 1-2, Mistral,
// Gemma) and byte-level BPE ("gpt2": Llama 3, SmolLM2, Qwen). Nothing else reaches llama.cpp's
// vocabulary loader, whose own checks abort the process on some malformed files.
const char * const TOKENIZER_MODELS[] = {"llama", "gpt2"};

void check_tokenizer_metadata(const GgufFile & f, int n_vocab) {
    auto fail = [&](const std::string & what) {
        throw EngineError(format("'%s': invalid tokenizer metadata: %s", f.path().c_str(), what.c_str()));
    };
    const std::string model = f.get_str("tokenizer.ggml.model");
    if (std::find(std::begin(TOKENIZER_MODELS), std::end(TOKENIZER_MODELS), model) == std::end(TOKENIZER_MODELS)) {
        fail(format("tokenizer.ggml.model '%s' is not one the supported architectures use (llama, gpt2)",
                    model.c_str()));
    }
    if ((int) f.get_str_array("tokenizer.ggml.tokens").size() != n_vocab) {
        fail(format("tokenizer.ggml.tokens must have one entry per embedding row (%d)", n_vocab));
    }
    if (f.has_key("tokenizer.ggml.scores") && (int) f.get_f32_array("tokenizer.ggml.scores").size() != n_vocab) {
        fail(format("tokenizer.ggml.scores must have %d entries", n_vocab));
    }
    if (f.has_key("tokenizer.ggml.token_type")) {
        const std::vector<int32_t> types = f.get_i32_array("tokenizer.ggml.token_type");
        if ((int) types.size() != n_vocab) fail(format("tokenizer.ggml.token_type must have %d entries", n_vocab));
        for (int32_t t : types) {
            if (t < 0 || t > 6) fail(format("tokenizer.ggml.token_type has the unknown type %d", t));  // llama_token_type
        }
    }
    if (f.has_key("tokenizer.ggml.merges")) {
        for (const std::string & m : f.get_str_array("tokenizer.ggml.merges")) {
            if (m.find(' ', 1) == std::string::npos) fail("tokenizer.ggml.merges has an entry that is not a pair");
        }
    }
    const std::string prefix = "tokenizer.ggml.", suffix = "_token_id";
    for (const std::string & key : f.keys()) {
        const bool token_id = key.size() > prefix.size() + suffix.size() && key.compare(0, prefix.size(), prefix) == 0 &&
                              key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
        if (token_id && f.get_u32(key) >= (uint32_t) n_vocab) {
            fail(format("%s %u is outside the vocabulary of %d", key.c_str(), f.get_u32(key), n_vocab));
        }
    }
}

ModelTraits read_model_traits(const std::string & path) {
    GgufFile f(path);
    ModelTraits t{read_hparams(f), "", false, false, false, false};
    t.fingerprint = model_fingerprint(f, t.hp);
    t.tied_head = f.find_tensor("output.weight") == nullptr;
    t.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
    t.qk_norm = f.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
    t.post_norms = f.find_tensor("blk.0.post_attention_norm.weight") != nullptr;
    return t;
}

Model::Model(const std::string & path, Backends & backends) : path_(path) {
    GgufFile f(path);
    hp_ = read_hparams(f);
    check_tokenizer_metadata(f, hp_.n_vocab);
    fingerprint_ = model_fingerprint(f, hp_);
    const uint32_t ftype = f.get_u32("general.file_type", 0);
    file_type_ = ftype == 0 ? std::string(ggml_type_name(f.find_tensor("token_embd.weight")->type))
                            : format("ftype %u", ftype);
    chat_template_ = f.get_str("tokenizer.chat_template", "");
    name_ = f.get_str("general.name", "");
    create_weights(f, backends);
    weights_.allocate();
    for (auto & [name, t] : to_load_) f.load_tensor(name, t);
    to_load_.clear();
}

namespace {

// What differs between the supported architectures, as far as loading goes; the layer builder of
// each is picked in graph_layers.cpp.
struct ArchTraits {
    const char * name;
    Arch arch;
    int rope_mode;
    FfnActivation ffn_act;
    bool qkv_bias;     // q/k/v biases
    bool qk_norm;      // per-head RMSNorm of q and k
    bool post_norms;   // RMSNorm of the attention and FFN outputs before each residual add
};

const ArchTraits ARCHS[] = {
    {"llama", Arch::Llama, GGML_ROPE_TYPE_NORMAL, FfnActivation::SiLU, false, false, false},
    {"qwen2", Arch::Qwen2, GGML_ROPE_TYPE_NEOX, FfnActivation::SiLU, true, false, false},
    {"qwen3", Arch::Qwen3, GGML_ROPE_TYPE_NEOX, FfnActivation::SiLU, false, true, false},
    {"gemma3", Arch::Gemma3, GGML_ROPE_TYPE_NEOX, FfnActivation::GeLU, false, true, true},
};

const ArchTraits & traits(Arch arch) {
    for (const ArchTraits & t : ARCHS) {
        if (t.arch == arch) return t;
    }
    throw EngineError("internal error: architecture without traits");
}

}  // namespace

const std::vector<std::string> & supported_architectures() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> v;
        for (const ArchTraits & t : ARCHS) v.emplace_back(t.name);
        return v;
    }();
    return names;
}

AttentionConfig Hparams::attention_config(int il) const {
    if (n_swa > 0 && swa_layers[il]) return {rope_freq_base_swa, 1.0f, true};
    return global_attention_config();
}

// Gemma 3's local layers: window `attention.sliding_window`; which layers are local comes from
// `attention.sliding_window_pattern` (a period n: every n-th layer is global, or one bool per
// layer) and defaults, as in llama.cpp, to 5 local layers then 1 global; their RoPE base is
// `rope.freq_base_swa` (default 10000) at scale 1.
static void read_sliding_window(const GgufFile & f, Hparams & hp) {
    const std::string p = hp.arch_name + ".";
    const uint32_t n_swa = f.get_u32(p + "attention.sliding_window", 0);
    if (n_swa == 0) return;
    if (n_swa > (1u << 24)) {
        throw EngineError(format("'%s': invalid hyperparameters: attention.sliding_window %u is not a window size",
                                 f.path().c_str(), n_swa));
    }
    hp.n_swa = (int) n_swa;
    const std::string pattern_key = p + "attention.sliding_window_pattern";
    hp.swa_layers.assign(hp.n_layer, 0);
    if (f.has_key(pattern_key) && f.is_array(pattern_key)) {
        const std::vector<bool> local = f.get_bool_array(pattern_key);
        if ((int) local.size() < hp.n_layer) {
            throw EngineError(format("'%s': %s lists %zu layers, the model has %d", f.path().c_str(),
                                     pattern_key.c_str(), local.size(), hp.n_layer));
        }
        for (int il = 0; il < hp.n_layer; ++il) hp.swa_layers[il] = local[il];
    } else {
        const int period = (int) f.get_u32(pattern_key, 6);
        for (int il = 0; il < hp.n_layer; ++il) hp.swa_layers[il] = period == 0 || il % period < period - 1;
    }
    hp.rope_freq_base_swa = f.get_f32(p + "rope.freq_base_swa", 10000.0f);
    if (!(hp.rope_freq_base_swa > 0.0f)) {
        throw EngineError(format("'%s': invalid hyperparameters: rope.freq_base_swa must be positive", f.path().c_str()));
    }
}

Hparams read_hparams(const GgufFile & f) {
    Hparams hp{};
    const std::string arch = f.get_str("general.architecture");
    const ArchTraits * t = nullptr;
    for (const ArchTraits & a : ARCHS) {
        if (arch == a.name) t = &a;
    }
    if (!t) {
        std::string names;
        for (const std::string & n : supported_architectures()) names += (names.empty() ? "" : ", ") + n;
        throw EngineError(format("'%s': unsupported architecture '%s' (kangaroo-edge runs: %s)",
                                 f.path().c_str(), arch.c_str(), names.c_str()));
    }
    hp.arch = t->arch;
    hp.rope_mode = t->rope_mode;
    hp.ffn_act = t->ffn_act;
    hp.arch_name = arch;
    const std::string p = arch + ".";
    hp.n_layer = (int) f.get_u32(p + "block_count");
    hp.n_embd = (int) f.get_u32(p + "embedding_length");
    hp.n_head = (int) f.get_u32(p + "attention.head_count");
    hp.n_head_kv = (int) f.get_u32(p + "attention.head_count_kv", (uint32_t) hp.n_head);
    hp.n_ff = (int) f.get_u32(p + "feed_forward_length");
    hp.n_ctx_train = (int) f.get_u32(p + "context_length", 2048);
    hp.rms_eps = f.get_f32(p + "attention.layer_norm_rms_epsilon", 1e-5f);
    hp.rope_freq_base = f.get_f32(p + "rope.freq_base", 10000.0f);
    const std::string scaling = f.get_str(p + "rope.scaling.type", "none");
    if (scaling != "none" && scaling != "linear") {
        throw EngineError(format("'%s': RoPE scaling '%s' is not supported", f.path().c_str(), scaling.c_str()));
    }
    const float factor = f.get_f32(p + "rope.scaling.factor", 0.0f);
    hp.rope_freq_scale = (scaling == "linear" && factor > 0.0f) ? 1.0f / factor : 1.0f;

    auto check = [&](bool ok, const char * what) {
        if (!ok) throw EngineError(format("'%s': invalid hyperparameters: %s", f.path().c_str(), what));
    };
    check(hp.n_layer > 0 && hp.n_layer <= 1024, "block_count must be in 1..1024");
    check(hp.n_embd > 0 && hp.n_embd <= 65536, "embedding_length must be in 1..65536");
    check(hp.n_head > 0 && hp.n_head <= 1024, "head_count must be in 1..1024");
    check(hp.n_head_kv > 0 && hp.n_head % hp.n_head_kv == 0, "head_count must be a multiple of head_count_kv");
    check(hp.n_ff > 0 && hp.n_ff <= 1 << 20, "feed_forward_length must be in 1..2^20");
    check(hp.rms_eps > 0.0f && hp.rms_eps < 1.0f, "layer_norm_rms_epsilon must be in (0, 1)");
    check(hp.rope_freq_base > 0.0f, "rope.freq_base must be positive");
    hp.head_dim = (int) f.get_u32(p + "attention.key_length", (uint32_t) (hp.n_embd / hp.n_head));
    check(hp.head_dim > 0 && hp.head_dim % 2 == 0, "key_length must be positive and even");
    check((int) f.get_u32(p + "attention.value_length", (uint32_t) hp.head_dim) == hp.head_dim,
          "value_length must equal key_length");
    check((int) f.get_u32(p + "rope.dimension_count", (uint32_t) hp.head_dim) == hp.head_dim,
          "partial RoPE (rope.dimension_count != head size) is not supported");
    hp.kq_scale = 1.0f / sqrtf((float) hp.head_dim);
    if (hp.arch == Arch::Gemma3) {
        // As llama.cpp: embeddings scaled by sqrt(n_embd); q scaled by query_pre_attn_scalar^-1/2
        // before q.k, which is 1/sqrt(head_dim) except for the 27B (62 layers: n_embd/n_head); a
        // GGUF may state its own (`attention.scale`, which llama.cpp ignores for Gemma 3).
        hp.embd_scale = sqrtf((float) hp.n_embd);
        hp.scale_q = true;
        if (hp.n_layer == 62) hp.kq_scale = 1.0f / sqrtf((float) (hp.n_embd / hp.n_head));
        hp.kq_scale = f.get_f32(p + "attention.scale", hp.kq_scale);
        hp.final_logit_softcap = f.get_f32(p + "final_logit_softcapping", 0.0f);
        check(hp.kq_scale > 0.0f && std::isfinite(hp.kq_scale), "attention.scale must be positive");
        check(hp.final_logit_softcap >= 0.0f && std::isfinite(hp.final_logit_softcap),
              "final_logit_softcapping must be non-negative");
        read_sliding_window(f, hp);
    }

    ggml_tensor * embd = f.find_tensor("token_embd.weight");
    if (!embd) throw EngineError(format("'%s': required tensor 'token_embd.weight' is missing", f.path().c_str()));
    hp.n_vocab = (int) embd->ne[1];
    check(hp.n_vocab > 0, "empty vocabulary");
    return hp;
}

void Model::create_weights(const GgufFile & f, Backends & backends) {
    weights_.reserve(gguf_get_n_tensors(f.gguf()) + 1);  // + the tied LM head's copy
    const Hparams & hp = hp_;
    const ArchTraits & arch = traits(hp.arch);
    const int64_t n_q = (int64_t) hp.n_head * hp.head_dim;
    const int64_t n_kv = hp.n_embd_kv();

    // Reserves an engine tensor for file tensor `name` used by `op`, in the best buffer for it.
    auto add = [&](ggml_tensor * file_t, const std::string & name, ggml_op op) -> ggml_tensor * {
        if (!file_t) return nullptr;
        if (ggml_get_type_traits(file_t->type)->blck_size == 0) {
            throw EngineError(format("'%s': tensor '%s' has an unsupported type", f.path().c_str(), name.c_str()));
        }
        check_weight_type(f.path(), name, file_t->type, op);
        ggml_backend_buffer_type_t buft = backends.weight_buffer_type(file_t, op);
        ggml_tensor * t = weights_.create(buft, name, file_t);
        to_load_.emplace_back(name, t);
        return t;
    };
    auto req = [&](const std::string & name, int64_t ne0, int64_t ne1, ggml_op op) {
        return add(f.require_tensor(name, ne0, ne1), name, op);
    };
    auto opt = [&](const std::string & name, int64_t ne0, int64_t ne1, ggml_op op) {
        return add(f.optional_tensor(name, ne0, ne1), name, op);
    };

    tok_embd = req("token_embd.weight", hp.n_embd, hp.n_vocab, GGML_OP_GET_ROWS);
    output_norm = req("output_norm.weight", hp.n_embd, 0, GGML_OP_MUL);
    output = opt("output.weight", hp.n_embd, hp.n_vocab, GGML_OP_MUL_MAT);
    if (!output) {
        // Tied head. When matmul wants another buffer type than get_rows (e.g. repacked
        // weights), the head gets its own copy placed for matmul, as llama.cpp does; otherwise
        // the embedding itself serves as the head.
        ggml_tensor * file_t = f.find_tensor("token_embd.weight");
        check_weight_type(f.path(), "token_embd.weight (tied output)", file_t->type, GGML_OP_MUL_MAT);
        ggml_backend_buffer_type_t head_buft = backends.weight_buffer_type(file_t, GGML_OP_MUL_MAT);
        if (head_buft == backends.weight_buffer_type(file_t, GGML_OP_GET_ROWS)) {
            output = tok_embd;
        } else {
            output = weights_.create(head_buft, "output.weight(tied)", file_t);
            to_load_.emplace_back("token_embd.weight", output);
        }
    }
    // Llama 3's RoPE scaling factors (llama.cpp reads them for llama only)
    if (hp.arch == Arch::Llama) rope_freqs = opt("rope_freqs.weight", hp.head_dim / 2, 0, GGML_OP_ROPE);

    layers.resize(hp.n_layer);
    for (int il = 0; il < hp.n_layer; ++il) {
        const std::string b = "blk." + std::to_string(il) + ".";
        LayerWeights & L = layers[il];
        L.attn.norm = req(b + "attn_norm.weight", hp.n_embd, 0, GGML_OP_MUL);
        L.attn.wq = req(b + "attn_q.weight", hp.n_embd, n_q, GGML_OP_MUL_MAT);
        L.attn.wk = req(b + "attn_k.weight", hp.n_embd, n_kv, GGML_OP_MUL_MAT);
        L.attn.wv = req(b + "attn_v.weight", hp.n_embd, n_kv, GGML_OP_MUL_MAT);
        L.attn.wo = req(b + "attn_output.weight", n_q, hp.n_embd, GGML_OP_MUL_MAT);
        if (arch.qkv_bias) {
            L.attn.bq = req(b + "attn_q.bias", n_q, 0, GGML_OP_ADD);
            L.attn.bk = req(b + "attn_k.bias", n_kv, 0, GGML_OP_ADD);
            L.attn.bv = req(b + "attn_v.bias", n_kv, 0, GGML_OP_ADD);
        }
        if (arch.qk_norm) {
            L.attn.q_norm = req(b + "attn_q_norm.weight", hp.head_dim, 0, GGML_OP_MUL);
            L.attn.k_norm = req(b + "attn_k_norm.weight", hp.head_dim, 0, GGML_OP_MUL);
        }
        if (arch.post_norms) {
            L.attn_post_norm = req(b + "post_attention_norm.weight", hp.n_embd, 0, GGML_OP_MUL);
            L.ffn_post_norm = req(b + "post_ffw_norm.weight", hp.n_embd, 0, GGML_OP_MUL);
        }
        L.ffn_norm = req(b + "ffn_norm.weight", hp.n_embd, 0, GGML_OP_MUL);
        L.ffn_gate = req(b + "ffn_gate.weight", hp.n_embd, hp.n_ff, GGML_OP_MUL_MAT);
        L.ffn_up = req(b + "ffn_up.weight", hp.n_embd, hp.n_ff, GGML_OP_MUL_MAT);
        L.ffn_down = req(b + "ffn_down.weight", hp.n_ff, hp.n_embd, GGML_OP_MUL_MAT);
    }
}

}  // namespace ke
