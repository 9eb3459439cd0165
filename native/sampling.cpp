#include "sampling.h"

#include <algorithm>
#include <cmath>
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

float Distribution::prob_of(int32_t token) const {
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] == token) return probs[i];
    }
    return 0.0f;
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
    // candidates sorted by logit, descending (only the top k when top-k is on)
    std::vector<int32_t> ids(n_vocab);
    std::iota(ids.begin(), ids.end(), 0);
    auto by_logit = [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    const size_t k = (p.top_k > 0 && p.top_k < n_vocab) ? p.top_k : n_vocab;
    // Sorting a whole vocabulary costs milliseconds a token. With no top-k only top-p's prefix
    // needs order: it is sorted in growing prefixes until the cut falls inside one.
    const bool prefix_only = k == (size_t) n_vocab && p.top_p < 1.0f;
    size_t sorted = prefix_only ? std::min<size_t>(k, 64) : k;
    std::partial_sort(ids.begin(), ids.begin() + sorted, ids.end(), by_logit);

    // untempered softmax over the candidates for the top-p / min-p cuts
    const float max = logits[ids[0]];
    auto weight = [&](size_t i) { return std::exp((double) (logits[ids[i]] - max)); };
    double sum = 0.0;
    if (prefix_only) {
        for (int i = 0; i < n_vocab; ++i) sum += std::exp((double) (logits[i] - max));
    } else {
        for (size_t i = 0; i < k; ++i) sum += weight(i);
    }
    size_t keep = k;
    if (p.top_p < 1.0f) {
        double cum = 0.0;
        for (size_t i = 0; i < k && keep == k; ++i) {
            if (i == sorted) {  // the rest are all below the sorted prefix: order the next part
                const size_t more = std::min(k, sorted * 8);
                std::partial_sort(ids.begin() + sorted, ids.begin() + more, ids.end(), by_logit);
                sorted = more;
            }
            cum += weight(i) / sum;
            if (cum >= p.top_p) keep = i + 1;
        }
    }
    std::vector<double> w(keep);
    for (size_t i = 0; i < keep; ++i) w[i] = weight(i);
    if (p.min_p > 0.0f) {
        size_t n = 1;  // the top token always survives
        while (n < keep && w[n] >= p.min_p) ++n;  // w[0] == 1, so w[i] is p_i / p_max
        keep = n;
    }
    ids.resize(keep);

    // temperature on the survivors
    d.ids = ids;
    d.probs.resize(keep);
    double z = 0.0;
    std::vector<double> t(keep);
    for (size_t i = 0; i < keep; ++i) z += (t[i] = std::exp((double) (logits[ids[i]] - max) / p.temperature));
    for (size_t i = 0; i < keep; ++i) d.probs[i] = (float) (t[i] / z);
    return d;
}

float Sampler::uniform() { return std::uniform_real_distribution<float>(0.0f, 1.0f)(rng_); }

int32_t Sampler::sample(const Distribution & dist) {
    const float u = uniform();
    float cum = 0.0f;
    for (size_t i = 0; i < dist.ids.size(); ++i) {
        cum += dist.probs[i];
        if (u < cum) return dist.ids[i];
    }
    return dist.ids.back();  // rounding: u landed past the last cumulative sum
}

int32_t Sampler::sample(const float * logits, int n_vocab, const SamplingParams & params) {
    if (params.greedy()) return argmax(logits, n_vocab);
    return sample(make_distribution(logits, n_vocab, params));
}

Distribution residual(const Distribution & p, const Distribution & q) {
    // q as a dense table: p and q may each cover the whole vocabulary
    int32_t max_id = 0;
    for (int32_t id : q.ids) max_id = std::max(max_id, id);
    std::vector<float> q_dense((size_t) max_id + 1, 0.0f);
    for (size_t i = 0; i < q.ids.size(); ++i) q_dense[q.ids[i]] = q.probs[i];
    Distribution r;
    double z = 0.0;
    for (size_t i = 0; i < p.ids.size(); ++i) {
        const int32_t id = p.ids[i];
        const float w = std::max(0.0f, p.probs[i] - (id <= max_id ? q_dense[id] : 0.0f));
        if (w > 0.0f) {
            r.ids.push_back(id);
            r.probs.push_back(w);
            z += w;
        }
    }
    if (z <= 0.0) return p;  // p == q up to rounding: the residual is p itself
    for (float & w : r.probs) w = (float) (w / z);
    return r;
}

int32_t Sampler::judge_draft(int32_t x, const Distribution & p, const Distribution & q, bool * accepted) {
    // u < p(x) / q(x), written without dividing by a q(x) that may be 0
    *accepted = uniform() * q.prob_of(x) < p.prob_of(x);
    return *accepted ? x : sample(residual(p, q));
}

}  // namespace ke
