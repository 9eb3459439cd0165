// Tokenization with llama.cpp's own vocabulary code (libllama, vocabulary-only load), so token
// ids are exactly llama.cpp's for the same GGUF.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct llama_model;
struct llama_vocab;

namespace ke {

class Tokenizer {
public:
    explicit Tokenizer(const std::string & path);
    ~Tokenizer();
    Tokenizer(const Tokenizer &) = delete;
    Tokenizer & operator=(const Tokenizer &) = delete;

    // parse_special: "<|im_start|>" in the text becomes the special token, as llama.cpp's CLI does.
    std::vector<int32_t> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    // Bytes of one token (may be part of a UTF-8 character). special: render control tokens.
    std::string token_to_piece(int32_t token, bool special) const;
    std::string detokenize(const std::vector<int32_t> & tokens, bool special) const;

    int n_vocab() const;
    bool is_eog(int32_t token) const;
    int32_t bos() const;
    int32_t eos() const;
    bool add_bos() const;

private:
    llama_model * model_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
};

}  // namespace ke
