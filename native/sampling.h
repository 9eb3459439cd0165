// Token selection: greedy, or sampling with llama.cpp's filter order (top-k, top-p, min-p on the
// untempered distribution, then temperature), after the repetition penalties (penalties.h). The
// filtered distribution is exposed on its own because a drafter samples its draft from its own q.
#pragma once

#include <cstdint>
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
};

int32_t argmax(const float * logits, int n_vocab);
// Probability of the top-1 token under plain softmax, and that token.
float top1_probability(const float * logits, int n_vocab, int32_t * token);
Distribution make_distribution(const float * logits, int n_vocab, const SamplingParams & params);

// Sampling keyed by position. The token at sequence position `pos` is the Gumbel-max sample of
// its distribution: argmax_i (log p_i + G_i), with G_i Gumbel noise drawn from (seed, pos, token
// i) by a counter-based hash (as an exponential race: argmin_i E_i / p_i, E_i ~ Exp(1)). So a seed
// gives the same token at a position whichever path reached it: a plain step, a verified draft,
// a bonus row or a batch. Speculative sampling is then exact and reproducible at once: a drafter
// draws its draft with the same noise from its own q, verification keeps a draft iff it is the
// model's own sample at that position, and the output is plain decoding's for the same seed,
// token for token (Gumbel coupling: a draft from q equals the sample from p with probability
// close to the optimal sum_i min(p_i, q_i) when the two agree, 1 when q == p).
class Sampler {
public:
    explicit Sampler(uint64_t seed) : seed_(seed) {}
    void reseed(uint64_t seed) { seed_ = seed; }
    // The token at position pos: argmax for greedy parameters, else the keyed sample.
    int32_t sample(const float * logits, int n_vocab, const SamplingParams & params, int pos) const;
    int32_t sample(const Distribution & dist, int pos) const;

private:
    uint64_t seed_;
};
}  // namespace ke
