// A GGUF file opened for reading: metadata with type-checked getters (ggml's own getters abort
// on a type mismatch, so every access checks first), tensor descriptions validated against the
// file size, and streaming of tensor data into backend buffers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"

namespace ke {

class GgufFile {
public:
    explicit GgufFile(const std::string & path);  // throws EngineError naming the file
    ~GgufFile();
    GgufFile(const GgufFile &) = delete;
    GgufFile & operator=(const GgufFile &) = delete;

    const std::string & path() const { return path_; }
    gguf_context * gguf() const { return gguf_; }
    // Tensor descriptions (no data): one ggml_tensor per GGUF tensor, in a no_alloc context.
    ggml_context * meta() const { return meta_; }

    bool has_key(const std::string & key) const;
    std::string get_str(const std::string & key) const;
    std::string get_str(const std::string & key, const std::string & fallback) const;
    uint32_t get_u32(const std::string & key) const;            // any integer type that fits
    uint32_t get_u32(const std::string & key, uint32_t fallback) const;
    float get_f32(const std::string & key) const;               // f32 or f64, finite
    float get_f32(const std::string & key, float fallback) const;
    bool get_bool(const std::string & key, bool fallback) const;
    std::vector<std::string> get_str_array(const std::string & key) const;
    std::vector<int32_t> get_i32_array(const std::string & key) const;  // int32 or uint32 elements
    std::vector<float> get_f32_array(const std::string & key) const;    // float32 elements, finite
    std::vector<std::string> keys() const;
    std::vector<bool> get_bool_array(const std::string & key) const;
    bool is_array(const std::string & key) const;  // false when absent

    // nullptr if absent
    ggml_tensor * find_tensor(const std::string & name) const;
    // Throws unless the tensor exists with exactly these dims (ne0, ne1; 0 = 1-D).
    ggml_tensor * require_tensor(const std::string & name, int64_t ne0, int64_t ne1 = 0) const;
    // The same check for an optional tensor: nullptr if absent.
    ggml_tensor * optional_tensor(const std::string & name, int64_t ne0, int64_t ne1 = 0) const;

    // Copies the data of file tensor `name` into `dst` (already in a backend buffer), in chunks.
    void load_tensor(const std::string & name, ggml_tensor * dst) const;
    // Copies the listed rows (each in [0, ne1)) of 2-D file tensor `name` into `dst`, a tensor of
    // the same type and row length with one row per entry.
    void load_tensor_rows(const std::string & name, const std::vector<int32_t> & rows, ggml_tensor * dst) const;

private:
    void check_tensor_bounds() const;
    int64_t key_id(const std::string & key) const;  // -1 if absent
    [[noreturn]] void fail_key(const std::string & key, const char * what) const;

    std::string path_;
    gguf_context * gguf_ = nullptr;
    ggml_context * meta_ = nullptr;
    uint64_t file_size_ = 0;
};

}  // namespace ke
