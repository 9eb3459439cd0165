#include "kv_cache.h"

#include <algorithm>

#include "error.h"

namespace ke {

KvCache::KvCache(ggml_backend_buffer_type_t buft, int n_layers, int n_head_kv, int head_dim, int n_ctx)
    : n_cells_(GGML_PAD(n_ctx, KV_PAD)), n_head_kv_(n_head_kv), head_dim_(head_dim) {
    ggml_init_params params = {ggml_tensor_overhead() * (size_t) (2 * n_layers + 2), nullptr, true};
    ctx_ = ggml_init(params);
    layers_.resize(n_layers);
    for (int il = 0; il < n_layers; ++il) {
        layers_[il].k = ggml_new_tensor_2d(ctx_, GGML_TYPE_F16, n_embd_kv(), n_cells_);
        layers_[il].v = ggml_new_tensor_2d(ctx_, GGML_TYPE_F16, n_embd_kv(), n_cells_);
        ggml_format_name(layers_[il].k, "cache_k_l%d", il);
        ggml_format_name(layers_[il].v, "cache_v_l%d", il);
    }
    buffer_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_, buft);
    if (!buffer_) {
        ggml_free(ctx_);
        throw EngineError(format("cannot allocate the KV cache for n_ctx=%d", n_ctx));
    }
    // Zeroed so that masked cells hold finite values (0 * garbage could be NaN).
    ggml_backend_buffer_clear(buffer_, 0);
}

KvCache::~KvCache() {
    if (buffer_) ggml_backend_buffer_free(buffer_);
    if (ctx_) ggml_free(ctx_);
}

size_t KvCache::bytes() const { return ggml_backend_buffer_get_size(buffer_); }

int KvCache::n_kv_for(int n_used) const {
    return std::min(n_cells_, std::max(KV_PAD, (int) GGML_PAD(n_used, KV_PAD)));
}

}  // namespace ke
