#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "error.h"

namespace ke {

void SamplingParams::validate() const {
    if (!std::isfinite(temperature) || temperature < 0.0f) {
        throw InvalidArgument(format("temperature must be a finite number >= 0, got %g", temperature));
    }
    if (top_k < 0) throw InvalidArgument(format("top_k must be >= 0, got %d", top_k));
    if (!(top_p > 0.0f && top_p <= 1.0f)) throw InvalidArgument(format("top_p must be in (0, 1], got %g", top_p));
    if (!(min_p >= 0.0f && min_p <= 1.0f)) throw InvalidArgument(format("min_p must be in [0, 1], got %g", min_p));
    if (!std::isfinite(repeat_penalty) || repeat_penalty <= 0.0f) {
        throw InvalidArgument(format("repeat_penalty must be a finite number > 0, got %g", repeat_penalty));
    }
    if (!std::isfinite(frequency_penalty)) {
        throw InvalidArgument(format("frequency_penalty must be a finite number, got %g", frequency_penalty));
    }
    if (!std::isfinite(presence_penalty)) {
        throw InvalidArgument(format("presence_penalty must be a finite number, got %g", presence_penalty));
    }
    if (repeat_last_n < -1) throw InvalidArgument(format("repeat_last_n must be >= -1, got %d", repeat_last_n));
}

int32_t argmax(const float * logits, int n_vocab) {
    return (int32_t) (std::max_element(logits, logits + n_vocab) - logits);  // first maximum, as llama.cpp
}

float top1_probability(const float * logits, int n_vocab, int32_t * token) {
    const int32_t best = argmax(logits, n_vocab);
    const float max = logits[best];
    double sum = 0.0;
    for (int i = 0; i < n_vocab; ++i) sum += std::exp((double) (logits[i] - max));
    if (token) *token = best;
    return (float) (1.0 / sum);
}

Distribution make_distribution(const float * logits, int n_vocab, const SamplingParams & p) {
    Distribution d;
    if (p.greedy()) {
        d.ids = {argmax(logits, n_vocab)};
        d.probs = {1.0f};
        return d;
    }
    // Only top-k and top-p need the candidates in order, and sorting a whole vocabulary costs
    // milliseconds a token: top-k sorts its k; top-p alone sorts growing prefixes until its cut
    // falls inside one. Min-p and temperature need only the maximum, and the sampler does not
    // care about order (sampling.h).
    std::vector<int32_t> ids(n_vocab);
    std::iota(ids.begin(), ids.end(), 0);
    auto by_logit = [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    const size_t k = (p.top_k > 0 && p.top_k < n_vocab) ? p.top_k : n_vocab;
    const bool top_p = p.top_p < 1.0f;
    size_t sorted = k < (size_t) n_vocab ? k : top_p ? std::min<size_t>(k, 64) : 0;
    if (sorted) std::partial_sort(ids.begin(), ids.begin() + sorted, ids.end(), by_logit);
    const float max = sorted ? logits[ids[0]] : logits[argmax(logits, n_vocab)];
    ids.resize(k);  // top-k

    // top-p on the untempered softmax of the candidates
    if (top_p) {
        auto weight = [&](size_t i) { return std::exp((double) (logits[ids[i]] - max)); };
        double sum = 0.0;
        for (int32_t id : ids) sum += std::exp((double) (logits[id] - max));
        double cum = 0.0;
        size_t keep = k;
        for (size_t i = 0; i < k && keep == k; ++i) {
            if (i == sorted) {  // the rest are all below the sorted prefix: order the next part
                const size_t more = std::min(k, sorted * 8);
                std::partial_sort(ids.begin() + sorted, ids.begin() + more, ids.end(), by_logit);
                sorted = more;
            }
            cum += weight(i) / sum;
            if (cum >= p.top_p) keep = i + 1;
        }
        ids.resize(keep);
    }
    // min-p: tokens at least min_p times as likely as the top one (which always survives)
    if (p.min_p > 0.0f) {
        const double floor = std::log((double) p.min_p);
        ids.erase(std::remove_if(ids.begin(), ids.end(),
                                 [&](int32_t id) { return (double) logits[id] - max < floor; }),
                  ids.end());
    }

    // temperature on the survivors
    d.ids = std::move(ids);
    d.probs.resize(d.ids.size());
    std::vector<double> t(d.ids.size());
    double z = 0.0;
    for (size_t i = 0; i < t.size(); ++i) z += (t[i] = std::exp((double) (logits[d.ids[i]] - max) / p.temperature));
    for (size_t i = 0; i < t.size(); ++i) d.probs[i] = (float) (t[i] / z);
    return d;
}

namespace {

uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

}  // namespace

int32_t Sampler::sample(const Distribution & dist, int pos) const {
    // the exponential race: each token i draws E_i = -log(u_i) from its own key and the smallest
    // E_i / p_i wins, which is token i with probability p_i
    const uint64_t at = splitmix64(seed_ ^ splitmix64((uint64_t) (uint32_t) pos));
    int32_t best = dist.ids.empty() ? -1 : dist.ids[0];
    double best_time = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < dist.ids.size(); ++i) {
        if (dist.probs[i] <= 0.0f) continue;
        const uint64_t bits = splitmix64(at ^ (uint64_t) (uint32_t) dist.ids[i]);
        const double u = ((double) (bits >> 11) + 0.5) * 0x1.0p-53;  // in (0, 1)
        // -log(u) >= 1 - u, so a token with 1 - u >= best_time * p cannot win: most of a long
        // tail is passed over without its logarithm
        if (1.0 - u >= best_time * dist.probs[i]) continue;
        const double t = -std::log(u) / dist.probs[i];
        if (t < best_time) {
            best_time = t;
            best = dist.ids[i];
        }
    }
    return best;
}

int32_t Sampler::sample(const float * logits, int n_vocab, const SamplingParams & params, int pos) const {
    if (params.greedy()) return argmax(logits, n_vocab);
    return sample(make_distribution(logits, n_vocab, params), pos);
}

}  // namespace ke
