// Per-layer F16 key/value caches for one sequence. Cell i holds position i, so truncating the
// sequence is O(1): cells past the committed length are simply masked out and later overwritten.
#pragma once

#include <cstdint>
#include <vector>

#include "ggml-backend.h"

namespace ke {

// Cells are allocated in multiples of this, as llama.cpp does.
constexpr int KV_PAD = 256;
// Attention reads the cells up to the newest position rounded up to a multiple of this, not of
// KV_PAD: the masked cells past a row's position add exact zeros (softmax weight 0, K.q and V
// products of whole SIMD steps), and a multiple of ggml's F16 dot-product step (32 or 64
// elements) keeps every sum in its vector loop, so a row has the bits it has when llama.cpp
// reads 256 cells (tests), while short contexts read up to 4x fewer. A graph serves the steps of
// 64 positions.
constexpr int ATTENTION_STEP = 64;

struct KvLayer {
    ggml_tensor * k = nullptr;  // [n_embd_kv, n_cells]  row per cell
    ggml_tensor * v = nullptr;  // [n_embd_kv, n_cells]  stored transposed: element (cell c, dim d) at d*n_cells + c
};

class KvCache {
public:
    KvCache(ggml_backend_buffer_type_t buft, int n_layers, int n_head_kv, int head_dim, int n_ctx);
    ~KvCache();
    KvCache(const KvCache &) = delete;
    KvCache & operator=(const KvCache &) = delete;

    int n_cells() const { return n_cells_; }
    int n_head_kv() const { return n_head_kv_; }
    int head_dim() const { return head_dim_; }
    int n_embd_kv() const { return n_head_kv_ * head_dim_; }
    KvLayer & layer(int il) { return layers_[il]; }
    size_t bytes() const;

    // Cells attention looks at when the sequence will hold `n_used` positions.
    int n_kv_for(int n_used) const;
    // Reads or writes the K/V of cells [cell, cell + n) of every layer (F16, layer by layer:
    // K rows, then V by dimension): how a sequence moves between caches.
    std::vector<uint8_t> read_cells(int cell, int n) const;
    size_t cells_bytes(int n) const;  // the size of n cells' bytes there
    void write_cells(int cell, int n, const std::vector<uint8_t> & bytes);

private:
    void check_cells(int cell, int n) const;  // throws unless [cell, cell + n) are cells of this cache

    int n_cells_;
    int n_head_kv_;
    int head_dim_;
    std::vector<KvLayer> layers_;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buffer_ = nullptr;
};

// Copies cells [src_cell, src_cell + n) of src to cells [dst_cell, dst_cell + n) of dst (same model).
void copy_cells(const KvCache & src, int src_cell, KvCache & dst, int dst_cell, int n);

}  // namespace ke
