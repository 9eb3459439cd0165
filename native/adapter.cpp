#include "adapter.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "drafter.h"
#include "error.h"
#include "graph.h"
#include "gguf_file.h"

namespace ke {

namespace {

// Reads and checks the adapter's metadata against the model before any tensor is touched.
AdapterParams read_params(const GgufFile & f, const Model & model) {
    const Hparams & hp = model.hparams();
    const std::string & path = f.path();
    const std::string arch = f.get_str("general.architecture");
    if (arch != ADAPTER_ARCH) {
        throw EngineError(format("'%s' is not a Kangaroo adapter (general.architecture is '%s', expected '%s')",
                                 path.c_str(), arch.c_str(), ADAPTER_ARCH));
    }
    auto mismatch = [&](const char * what, const std::string & theirs, const std::string & ours) {
        throw EngineError(format("adapter '%s' was made for another model: its %s is %s, the loaded model's (%s) is %s",
                                 path.c_str(), what, theirs.c_str(), model.path().c_str(), ours.c_str()));
    };
    const std::string base_arch = f.get_str("kangaroo.base.architecture");
    if (base_arch != hp.arch_name) mismatch("base architecture", base_arch, hp.arch_name);
    const std::string fp = f.get_str("kangaroo.base.fingerprint");
    if (fp != model.fingerprint()) mismatch("model fingerprint", fp, model.fingerprint());
    auto same = [&](const char * key, int ours) {
        const int theirs = (int) f.get_u32(key);
        if (theirs != ours) mismatch(key, std::to_string(theirs), std::to_string(ours));
    };
    same("kangaroo.embedding_length", hp.n_embd);
    same("kangaroo.attention.head_count", hp.n_head);
    same("kangaroo.attention.head_count_kv", hp.n_head_kv);
    same("kangaroo.attention.key_length", hp.head_dim);

    AdapterParams p;
    p.exit_layer = (int) f.get_u32("kangaroo.exit_layer");
    if (p.exit_layer < 1 || p.exit_layer >= hp.n_layer) {
        throw EngineError(format("adapter '%s': exit layer %d must be in [1, %d) for this %d-layer model",
                                 path.c_str(), p.exit_layer, hp.n_layer, hp.n_layer));
    }
    p.default_tau = f.get_f32("kangaroo.draft.tau", DEFAULT_TAU);
    p.default_gamma = (int) f.get_u32("kangaroo.draft.gamma", DEFAULT_GAMMA);
    if (!(p.default_tau >= 0.0f && p.default_tau <= 1.0f) || p.default_gamma < 1 || p.default_gamma > MAX_GAMMA) {
        throw EngineError(format("adapter '%s': default tau %g / gamma %d out of range", path.c_str(),
                                 p.default_tau, p.default_gamma));
    }
    return p;
}

}  // namespace

Adapter::Adapter(const std::string & path, const Model & model, Backends & backends, int n_ctx)
    : path_(path),
      model_(model),
      kv_(backends.main_buffer_type(), 1, model.hparams().n_head_kv, model.hparams().head_dim, n_ctx) {
    GgufFile f(path);
    params_ = read_params(f, model);
    const Hparams & hp = model.hparams();
    config_ = hp.global_attention_config();
    const bool base_has_qk_norm = model.layers[0].attn.q_norm != nullptr;
    const int64_t n_q = (int64_t) hp.n_head * hp.head_dim;
    const int64_t n_kv = hp.n_embd_kv();

    std::vector<std::pair<std::string, ggml_tensor *>> to_load;
    auto add = [&](const std::string & name, int64_t ne0, int64_t ne1, bool required, ggml_op op) -> ggml_tensor * {
        ggml_tensor * file_t = required ? f.require_tensor(name, ne0, ne1) : f.optional_tensor(name, ne0, ne1);
        if (!file_t) return nullptr;
        if (file_t->type != GGML_TYPE_F32 && file_t->type != GGML_TYPE_F16) {
            throw EngineError(format("adapter '%s': tensor '%s' must be F32 or F16", path.c_str(), name.c_str()));
        }
        check_weight_type(path, name, file_t->type, op);  // norms and biases: F32 only
        ggml_tensor * t = weights_.create(backends.weight_buffer_type(file_t, op), name, file_t);
        to_load.emplace_back(name, t);
        return t;
    };
    attn_.norm = add("adapter.attn_norm.weight", hp.n_embd, 0, true, GGML_OP_MUL);
    attn_.wq = add("adapter.attn_q.weight", hp.n_embd, n_q, true, GGML_OP_MUL_MAT);
    attn_.wk = add("adapter.attn_k.weight", hp.n_embd, n_kv, true, GGML_OP_MUL_MAT);
    attn_.wv = add("adapter.attn_v.weight", hp.n_embd, n_kv, true, GGML_OP_MUL_MAT);
    attn_.bq = add("adapter.attn_q.bias", n_q, 0, false, GGML_OP_ADD);
    attn_.bk = add("adapter.attn_k.bias", n_kv, 0, false, GGML_OP_ADD);
    attn_.bv = add("adapter.attn_v.bias", n_kv, 0, false, GGML_OP_ADD);
    // q/k norms exactly when the base model has them: the adapter's attention is built like its
    attn_.q_norm = add("adapter.attn_q_norm.weight", hp.head_dim, 0, base_has_qk_norm, GGML_OP_MUL);
    attn_.k_norm = add("adapter.attn_k_norm.weight", hp.head_dim, 0, base_has_qk_norm, GGML_OP_MUL);
    if (!base_has_qk_norm && (f.find_tensor("adapter.attn_q_norm.weight") || f.find_tensor("adapter.attn_k_norm.weight"))) {
        throw EngineError(format("adapter '%s' has q/k norms, but the %s model has none", path.c_str(),
                                 hp.arch_name.c_str()));
    }
    attn_.wo = add("adapter.attn_output.weight", n_q, hp.n_embd, true, GGML_OP_MUL_MAT);
    output_norm_ = add("adapter.output_norm.weight", hp.n_embd, 0, true, GGML_OP_MUL);
    if (f.has_key("kangaroo.draft.vocab")) load_draft_vocab(f, backends);
    weights_.allocate();
    for (auto & [name, t] : to_load) f.load_tensor(name, t);
    if (draft_head_) {
        // the rows come from the base model's file, in its own (quantized) type
        GgufFile base(model.path());
        base.load_tensor_rows(base.find_tensor("output.weight") ? "output.weight" : "token_embd.weight", draft_vocab_,
                              draft_head_);
    }
}

void Adapter::load_draft_vocab(const GgufFile & f, Backends & backends) {
    const int n_vocab = model_.hparams().n_vocab;
    draft_vocab_ = f.get_i32_array("kangaroo.draft.vocab");
    std::vector<int32_t> sorted = draft_vocab_;
    std::sort(sorted.begin(), sorted.end());
    if (sorted.empty() || sorted.front() < 0 || sorted.back() >= n_vocab ||
        std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
        throw EngineError(format("adapter '%s': kangaroo.draft.vocab must list distinct token ids in [0, %d)",
                                 path_.c_str(), n_vocab));
    }
    // a tensor description shaped like the head's selected rows, for the buffer-type choice
    ggml_init_params params = {ggml_tensor_overhead(), nullptr, true};
    std::unique_ptr<ggml_context, void (*)(ggml_context *)> meta(ggml_init(params), ggml_free);
    ggml_tensor * like = ggml_new_tensor_2d(meta.get(), model_.output->type, model_.hparams().n_embd,
                                            (int64_t) draft_vocab_.size());
    draft_head_ = weights_.create(backends.weight_buffer_type(like, GGML_OP_MUL_MAT), "adapter.draft_head", like);
}

ggml_tensor * Adapter::build(GraphBuilder & b, ggml_tensor * h, const StepInputs & in) {
    ggml_tensor * cur = b.rms_norm(h, attn_.norm, "attn_norm", ADAPTER_LAYER);
    cur = b.attention(attn_, config_, kv_.layer(0), cur, in, model_.rope_freqs, ADAPTER_LAYER);
    cur = b.named(ggml_add(b.ctx(), cur, h), "sa_out", ADAPTER_LAYER);  // residual
    return b.rms_norm(cur, output_norm_, "result_norm", ADAPTER_LAYER);
}

void Adapter::build_kv(GraphBuilder & b, ggml_tensor * h, const StepInputs & in) {
    ggml_tensor * x = b.rms_norm(h, attn_.norm, "attn_norm", ADAPTER_LAYER);
    b.store_kv(attn_, config_, kv_.layer(0), x, in, model_.rope_freqs, ADAPTER_LAYER);
}

}  // namespace ke
