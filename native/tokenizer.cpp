#include "tokenizer.h"

#include "error.h"
#include "llama.h"

namespace ke {

Tokenizer::Tokenizer(const std::string & path) {
    llama_model_params params = llama_model_default_params();
    params.vocab_only = true;
    model_ = llama_model_load_from_file(path.c_str(), params);
    if (!model_) throw EngineError(format("'%s': llama.cpp could not load the tokenizer", path.c_str()));
    vocab_ = llama_model_get_vocab(model_);
}

Tokenizer::~Tokenizer() {
    if (model_) llama_model_free(model_);
}

std::vector<int32_t> Tokenizer::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    // Upper bound: one token per byte, plus BOS/EOS.
    std::vector<llama_token> out(text.size() + 4);
    int32_t n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                               add_special, parse_special);
    if (n < 0) {
        out.resize(-n);
        n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                           add_special, parse_special);
    }
    if (n < 0) throw EngineError("tokenization failed");
    out.resize(n);
    return std::vector<int32_t>(out.begin(), out.end());
}

std::string Tokenizer::token_to_piece(int32_t token, bool special) const {
    if (token < 0 || token >= n_vocab()) throw InvalidArgument(format("token id %d is outside the vocabulary", token));
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, n);
    std::string big(-n, '\0');
    n = llama_token_to_piece(vocab_, token, big.data(), (int32_t) big.size(), 0, special);
    return big.substr(0, n < 0 ? 0 : n);
}

std::string Tokenizer::detokenize(const std::vector<int32_t> & tokens, bool special) const {
    std::string out;
    for (int32_t t : tokens) out += token_to_piece(t, special);
    return out;
}

int Tokenizer::n_vocab() const { return llama_vocab_n_tokens(vocab_); }
bool Tokenizer::is_eog(int32_t token) const { return llama_vocab_is_eog(vocab_, token); }
int32_t Tokenizer::bos() const { return llama_vocab_bos(vocab_); }
int32_t Tokenizer::eos() const { return llama_vocab_eos(vocab_); }
bool Tokenizer::add_bos() const { return llama_vocab_get_add_bos(vocab_); }

}  // namespace ke
