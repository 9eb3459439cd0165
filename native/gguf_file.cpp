#include "gguf_file.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sys/stat.h>

#include "error.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

namespace ke {

namespace {

const char GGUF_MAGIC_BYTES[4] = {'G', 'G', 'U', 'F'};

uint64_t file_size_or_throw(const std::string & path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
        throw EngineError(format("model file not found: '%s'", path.c_str()));
    }
    if (!S_ISREG(st.st_mode)) {
        throw EngineError(format("not a regular file: '%s'", path.c_str()));
    }
    return (uint64_t) st.st_size;
}

void check_magic(const std::string & path) {
    std::unique_ptr<FILE, int (*)(FILE *)> f(fopen(path.c_str(), "rb"), fclose);
    if (!f) {
        throw EngineError(format("cannot open '%s': %s", path.c_str(), strerror(errno)));
    }
    char magic[4] = {0};
    if (fread(magic, 1, 4, f.get()) != 4 || memcmp(magic, GGUF_MAGIC_BYTES, 4) != 0) {
        throw EngineError(format("'%s' is not a GGUF file (bad magic)", path.c_str()));
    }
}

}  // namespace

GgufFile::GgufFile(const std::string & path) : path_(path) {
    file_size_ = file_size_or_throw(path);
    check_magic(path);
    gguf_init_params params = {/*no_alloc =*/ true, /*ctx =*/ &meta_};
    gguf_ = gguf_init_from_file(path.c_str(), params);
    if (!gguf_) {
        throw EngineError(format("'%s' is not a valid GGUF file (corrupt or truncated header)", path.c_str()));
    }
    check_tensor_bounds();
}

GgufFile::~GgufFile() {
    if (meta_) ggml_free(meta_);
    if (gguf_) gguf_free(gguf_);
}

void GgufFile::check_tensor_bounds() const {
    const uint64_t data_offset = gguf_get_data_offset(gguf_);
    const int64_t n = gguf_get_n_tensors(gguf_);
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t end = data_offset + gguf_get_tensor_offset(gguf_, i) + gguf_get_tensor_size(gguf_, i);
        if (end > file_size_) {
            throw EngineError(format("'%s' is truncated: tensor '%s' ends at byte %llu but the file has %llu bytes",
                                     path_.c_str(), gguf_get_tensor_name(gguf_, i),
                                     (unsigned long long) end, (unsigned long long) file_size_));
        }
    }
}

int64_t GgufFile::key_id(const std::string & key) const { return gguf_find_key(gguf_, key.c_str()); }

bool GgufFile::has_key(const std::string & key) const { return key_id(key) >= 0; }

void GgufFile::fail_key(const std::string & key, const char * what) const {
    throw EngineError(format("'%s': metadata key '%s' %s", path_.c_str(), key.c_str(), what));
}

std::string GgufFile::get_str(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail_key(key, "is missing");
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_STRING) fail_key(key, "is not a string");
    return gguf_get_val_str(gguf_, id);
}

std::string GgufFile::get_str(const std::string & key, const std::string & fallback) const {
    return has_key(key) ? get_str(key) : fallback;
}

uint32_t GgufFile::get_u32(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail_key(key, "is missing");
    int64_t v;
    switch (gguf_get_kv_type(gguf_, id)) {
        case GGUF_TYPE_UINT8:  v = gguf_get_val_u8(gguf_, id);  break;
        case GGUF_TYPE_INT8:   v = gguf_get_val_i8(gguf_, id);  break;
        case GGUF_TYPE_UINT16: v = gguf_get_val_u16(gguf_, id); break;
        case GGUF_TYPE_INT16:  v = gguf_get_val_i16(gguf_, id); break;
        case GGUF_TYPE_UINT32: v = gguf_get_val_u32(gguf_, id); break;
        case GGUF_TYPE_INT32:  v = gguf_get_val_i32(gguf_, id); break;
        case GGUF_TYPE_UINT64: {
            const uint64_t u = gguf_get_val_u64(gguf_, id);
            v = u > UINT32_MAX ? -1 : (int64_t) u;
        } break;
        case GGUF_TYPE_INT64:  v = gguf_get_val_i64(gguf_, id); break;
        default: fail_key(key, "is not an integer");
    }
    if (v < 0 || v > (int64_t) UINT32_MAX) fail_key(key, "is out of range");
    return (uint32_t) v;
}

uint32_t GgufFile::get_u32(const std::string & key, uint32_t fallback) const {
    return has_key(key) ? get_u32(key) : fallback;
}

float GgufFile::get_f32(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail_key(key, "is missing");
    float v = 0.0f;
    switch (gguf_get_kv_type(gguf_, id)) {
        case GGUF_TYPE_FLOAT32: v = gguf_get_val_f32(gguf_, id); break;
        case GGUF_TYPE_FLOAT64: v = (float) gguf_get_val_f64(gguf_, id); break;
        default: fail_key(key, "is not a float");
    }
    // no hyperparameter is meant to be infinite or NaN, and range checks let those through
    if (!std::isfinite(v)) fail_key(key, "is not a finite number");
    return v;
}

float GgufFile::get_f32(const std::string & key, float fallback) const {
    return has_key(key) ? get_f32(key) : fallback;
}

bool GgufFile::get_bool(const std::string & key, bool fallback) const {
    const int64_t id = key_id(key);
    if (id < 0) return fallback;
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_BOOL) fail_key(key, "is not a bool");
    return gguf_get_val_bool(gguf_, id);
}

std::vector<std::string> GgufFile::get_str_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail_key(key, "is missing");
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(gguf_, id) != GGUF_TYPE_STRING) {
        fail_key(key, "is not an array of strings");
    }
    const size_t n = gguf_get_arr_n(gguf_, id);
    std::vector<std::string> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.emplace_back(gguf_get_arr_str(gguf_, id, i));
    return out;
}

std::vector<bool> GgufFile::get_bool_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail_key(key, "is missing");
    if (!is_array(key) || gguf_get_arr_type(gguf_, id) != GGUF_TYPE_BOOL) fail_key(key, "is not an array of bools");
    const size_t n = gguf_get_arr_n(gguf_, id);
    const int8_t * data = static_cast<const int8_t *>(gguf_get_arr_data(gguf_, id));
    return std::vector<bool>(data, data + n);
}

bool GgufFile::is_array(const std::string & key) const {
    const int64_t id = key_id(key);
    return id >= 0 && gguf_get_kv_type(gguf_, id) == GGUF_TYPE_ARRAY;
}

ggml_tensor * GgufFile::find_tensor(const std::string & name) const {
    return ggml_get_tensor(meta_, name.c_str());
}

ggml_tensor * GgufFile::optional_tensor(const std::string & name, int64_t ne0, int64_t ne1) const {
    ggml_tensor * t = find_tensor(name);
    if (!t) return nullptr;
    const int64_t want1 = ne1 == 0 ? 1 : ne1;
    if (t->ne[0] != ne0 || t->ne[1] != want1 || t->ne[2] != 1 || t->ne[3] != 1) {
        throw EngineError(format("'%s': tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                                 path_.c_str(), name.c_str(), (long long) t->ne[0], (long long) t->ne[1],
                                 (long long) t->ne[2], (long long) t->ne[3], (long long) ne0, (long long) want1));
    }
    return t;
}

ggml_tensor * GgufFile::require_tensor(const std::string & name, int64_t ne0, int64_t ne1) const {
    ggml_tensor * t = optional_tensor(name, ne0, ne1);
    if (!t) throw EngineError(format("'%s': required tensor '%s' is missing", path_.c_str(), name.c_str()));
    return t;
}

void GgufFile::load_tensor(const std::string & name, ggml_tensor * dst) const {
    const int64_t id = gguf_find_tensor(gguf_, name.c_str());
    if (id < 0) throw EngineError(format("'%s': tensor '%s' is missing", path_.c_str(), name.c_str()));
    const size_t nbytes = gguf_get_tensor_size(gguf_, id);
    if (nbytes != ggml_nbytes(dst)) {
        throw EngineError(format("'%s': tensor '%s' has %zu bytes, expected %zu",
                                 path_.c_str(), name.c_str(), nbytes, ggml_nbytes(dst)));
    }
    std::unique_ptr<FILE, int (*)(FILE *)> f(fopen(path_.c_str(), "rb"), fclose);
    if (!f) throw EngineError(format("cannot open '%s': %s", path_.c_str(), strerror(errno)));
    const uint64_t offset = gguf_get_data_offset(gguf_) + gguf_get_tensor_offset(gguf_, id);
    if (fseeko(f.get(), (off_t) offset, SEEK_SET) != 0) {
        throw EngineError(format("'%s': cannot seek to tensor '%s'", path_.c_str(), name.c_str()));
    }
    if (ggml_backend_buffer_get_type(dst->buffer) == ggml_backend_cpu_buffer_type()) {
        // plain CPU memory: read straight into the weight, no second copy
        if (fread(dst->data, 1, nbytes, f.get()) != nbytes) {
            throw EngineError(format("'%s' is truncated while reading tensor '%s'", path_.c_str(), name.c_str()));
        }
        return;
    }
    // Other buffers (GPU memory, CPU repacking buffers that convert a whole tensor at once) get
    // the data through a staging copy freed right away: peak memory grows by one tensor only.
    std::vector<uint8_t> staging(nbytes);
    if (fread(staging.data(), 1, nbytes, f.get()) != nbytes) {
        throw EngineError(format("'%s' is truncated while reading tensor '%s'", path_.c_str(), name.c_str()));
    }
    ggml_backend_tensor_set(dst, staging.data(), 0, nbytes);
}

std::vector<int32_t> GgufFile::get_i32_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail_key(key, "is missing");
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_ARRAY) fail_key(key, "is not an array");
    const enum gguf_type t = gguf_get_arr_type(gguf_, id);
    if (t != GGUF_TYPE_INT32 && t != GGUF_TYPE_UINT32) fail_key(key, "is not an array of 32-bit integers");
    const size_t n = gguf_get_arr_n(gguf_, id);
    const auto * data = (const int32_t *) gguf_get_arr_data(gguf_, id);
    std::vector<int32_t> out(data, data + n);
    if (t == GGUF_TYPE_UINT32) {
        for (int32_t v : out) if (v < 0) fail_key(key, "has an element out of range");
    }
    return out;
}

std::vector<float> GgufFile::get_f32_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (id < 0) fail_key(key, "is missing");
    if (!is_array(key) || gguf_get_arr_type(gguf_, id) != GGUF_TYPE_FLOAT32) fail_key(key, "is not an array of floats");
    const size_t n = gguf_get_arr_n(gguf_, id);
    const float * data = static_cast<const float *>(gguf_get_arr_data(gguf_, id));
    std::vector<float> out(data, data + n);
    for (float v : out) if (!std::isfinite(v)) fail_key(key, "has an element that is not a finite number");
    return out;
}

std::vector<std::string> GgufFile::keys() const {
    std::vector<std::string> out;
    for (int64_t i = 0; i < gguf_get_n_kv(gguf_); ++i) out.emplace_back(gguf_get_key(gguf_, i));
    return out;
}

void GgufFile::load_tensor_rows(const std::string & name, const std::vector<int32_t> & rows, ggml_tensor * dst) const {
    const ggml_tensor * src = find_tensor(name);
    const int64_t id = gguf_find_tensor(gguf_, name.c_str());
    if (!src || id < 0) throw EngineError(format("'%s': tensor '%s' is missing", path_.c_str(), name.c_str()));
    const size_t row_bytes = ggml_row_size(src->type, src->ne[0]);
    if (dst->type != src->type || dst->ne[0] != src->ne[0] || dst->ne[1] != (int64_t) rows.size() ||
        ggml_nbytes(dst) != row_bytes * rows.size()) {
        throw EngineError(format("'%s': rows of tensor '%s' do not fit the destination", path_.c_str(), name.c_str()));
    }
    std::unique_ptr<FILE, int (*)(FILE *)> f(fopen(path_.c_str(), "rb"), fclose);
    if (!f) throw EngineError(format("cannot open '%s': %s", path_.c_str(), strerror(errno)));
    const uint64_t base = gguf_get_data_offset(gguf_) + gguf_get_tensor_offset(gguf_, id);
    std::vector<uint8_t> staging(row_bytes * rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
        if (rows[i] < 0 || rows[i] >= src->ne[1]) {
            throw EngineError(format("'%s': row %d of tensor '%s' is out of range [0, %lld)", path_.c_str(), rows[i],
                                     name.c_str(), (long long) src->ne[1]));
        }
        if (fseeko(f.get(), (off_t) (base + (uint64_t) rows[i] * row_bytes), SEEK_SET) != 0 ||
            fread(staging.data() + i * row_bytes, 1, row_bytes, f.get()) != row_bytes) {
            throw EngineError(format("'%s' is truncated while reading tensor '%s'", path_.c_str(), name.c_str()));
        }
    }
    ggml_backend_tensor_set(dst, staging.data(), 0, staging.size());
}

}  // namespace ke
