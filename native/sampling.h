// Token selection: greedy, or sampling with llama.cpp's filter order (top-k, top-p, min-p on the
// untempered distribution, then temperature), after the repetition penalties (penalties.h). The filtered distribution is exposed on its own
// because speculative sampling needs the draft's and the model's probabilities, not just a token.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace ke {

// llama.cpp's and llama-cpp-python's default penalty window (penalty_last_n, last_n_tokens_size).
constexpr int DEFAULT_REPEAT_LAST_N = 64;

struct SamplingParams {
    float temperature = 0.0f;  // <= 0: greedy
    int top_k = 0;             // 0: off
    float top_p = 1.0f;        // 1: off
    float min_p = 0.0f;        // 0: off
    uint64_t seed = 0xFFFFFFFFu;
    // repetition penalties on the last repeat_last_n output tokens (penalties.h)
    float repeat_penalty = 1.0f;     // 1: off; > 1 makes repeats less likely
    float frequency_penalty = 0.0f;  // 0: off; subtracted once per occurrence
    float presence_penalty = 0.0f;   // 0: off; subtracted once for any occurrence
    int repeat_last_n = DEFAULT_REPEAT_LAST_N;  // 0: off; -1: the whole output

    bool greedy() const { return temperature <= 0.0f; }
    bool penalized() const {
        return repeat_last_n != 0 && (repeat_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f);
    }
    void validate() const;  // throws InvalidArgument naming the bad parameter
};

// A sparse distribution over the tokens that survived the filters; probs sum to 1.
struct Distribution {
    std::vector<int32_t> ids;
    std::vector<float> probs;
    float prob_of(int32_t token) const;  // 0 if filtered out
};

int32_t argmax(const float * logits, int n_vocab);
// Probability of the top-1 token under plain softmax, and that token.
float top1_probability(const float * logits, int n_vocab, int32_t * token);
Distribution make_distribution(const float * logits, int n_vocab, const SamplingParams & params);

// Speculative sampling (Leviathan et al.; Chen et al.): a draft x ~ q is kept with probability
// min(1, p(x) / q(x)); on rejection the token is drawn from residual(p, q) = norm(max(0, p - q)).
// Either way the token is distributed exactly as p.
Distribution residual(const Distribution & p, const Distribution & q);

class Sampler {
public:
    explicit Sampler(uint64_t seed) : rng_(seed) {}
    void reseed(uint64_t seed) { rng_.seed(seed); }
    int32_t sample(const float * logits, int n_vocab, const SamplingParams & params);
    int32_t sample(const Distribution & dist);
    float uniform();  // in [0, 1)
    // The rule above for draft x ~ q against the model's p: x itself, or a token of residual(p, q).
    // *accepted says which.
    int32_t judge_draft(int32_t x, const Distribution & p, const Distribution & q, bool * accepted);

private:
    std::mt19937_64 rng_;
};

}  // namespace ke
