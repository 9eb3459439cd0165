#include "kv_cache.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

#include "error.h"

namespace ke {

namespace {

uint64_t read_u64_file(const char * path) {  // 0 when absent or not a number ("max")
    std::ifstream f(path);
    unsigned long long v = 0;
    return (f >> v) ? v : 0;
}

// Memory this process can still get: MemAvailable, capped by a cgroup limit (v2 or v1) when
// there is one; physical memory where /proc is absent; 0 when unknown.
uint64_t available_memory() {
    uint64_t avail = 0;
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    unsigned long long kb;
    std::string unit;
    while (meminfo >> key >> kb >> unit) {
        if (key == "MemAvailable:") {
            avail = (uint64_t) kb * 1024;
            break;
        }
    }
    if (avail == 0) {
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) avail = (uint64_t) pages * (uint64_t) page;
    }
    const std::pair<const char *, const char *> cgroups[] = {
        {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"},
    };
    for (const auto & [limit_path, usage_path] : cgroups) {
        const uint64_t limit = read_u64_file(limit_path), usage = read_u64_file(usage_path);
        if (limit > 0 && limit < (1ull << 60)) {  // v1 reports "no limit" as a huge number
            const uint64_t left = limit > usage ? limit - usage : 0;
            avail = avail ? std::min(avail, left) : left;
        }
    }
    return avail;
}

}  // namespace

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
    // An absurd n_ctx must be an error, not an allocation that the kernel's OOM killer answers
    // once the cache is zeroed below (GPU allocations fail cleanly by themselves).
    if (ggml_backend_buft_is_host(buft)) {
        const uint64_t need = n_layers > 0 ? 2ull * n_layers * ggml_nbytes(layers_[0].k) : 0;
        const uint64_t avail = available_memory();
        if (avail > 0 && need > avail) {
            ggml_free(ctx_);
            throw EngineError(format("n_ctx=%d needs a %.1f GiB KV cache but only %.1f GiB of memory is available; "
                                     "use a smaller n_ctx", n_ctx, need / 1073741824.0, avail / 1073741824.0));
        }
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
    return std::min(n_cells_, std::max(ATTENTION_STEP, (int) GGML_PAD(n_used, ATTENTION_STEP)));
}

std::vector<uint8_t> KvCache::read_cells(int cell, int n) const {
    check_cells(cell, n);
    const size_t elt = ggml_type_size(GGML_TYPE_F16), row = elt * n_embd_kv();
    std::vector<uint8_t> out((size_t) 2 * layers_.size() * n * row);
    uint8_t * p = out.data();
    for (const KvLayer & l : layers_) {
        ggml_backend_tensor_get(l.k, p, cell * row, n * row);
        p += n * row;
        for (int d = 0; d < n_embd_kv(); ++d, p += n * elt) {
            ggml_backend_tensor_get(l.v, p, ((size_t) d * n_cells_ + cell) * elt, n * elt);
        }
    }
    return out;
}

void KvCache::write_cells(int cell, int n, const std::vector<uint8_t> & bytes) {
    check_cells(cell, n);
    const size_t elt = ggml_type_size(GGML_TYPE_F16), row = elt * n_embd_kv();
    if (bytes.size() != cells_bytes(n)) {
        throw EngineError(format("write_cells: %zu bytes for %d cells of another shape", bytes.size(), n));
    }
    const uint8_t * p = bytes.data();
    for (KvLayer & l : layers_) {
        ggml_backend_tensor_set(l.k, p, cell * row, n * row);
        p += n * row;
        for (int d = 0; d < n_embd_kv(); ++d, p += n * elt) {
            ggml_backend_tensor_set(l.v, p, ((size_t) d * n_cells_ + cell) * elt, n * elt);
        }
    }
}

size_t KvCache::cells_bytes(int n) const {
    return (size_t) 2 * layers_.size() * n * n_embd_kv() * ggml_type_size(GGML_TYPE_F16);
}

void KvCache::check_cells(int cell, int n) const {
    if (cell < 0 || n < 0 || cell + n > n_cells_) {
        throw EngineError(format("cells %d..%d are outside the cache of %d", cell, cell + n - 1, n_cells_));
    }
}

void copy_cells(const KvCache & src, int src_cell, KvCache & dst, int dst_cell, int n) {
    if (n == 0) return;
    if (src.n_embd_kv() != dst.n_embd_kv()) throw EngineError("copy_cells: caches of different models");
    dst.write_cells(dst_cell, n, src.read_cells(src_cell, n));
}

}  // namespace ke
