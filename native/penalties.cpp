#include "penalties.h"

namespace ke {

void PenaltyWindow::reset(const SamplingParams & params) {
    params_ = params;
    window_.clear();
    counts_.clear();
}

void PenaltyWindow::accept(int32_t token) {
    const int last_n = params_.repeat_last_n;
    if (last_n == 0) return;
    counts_[token] += 1;
    window_.push_back(token);
    if (last_n > 0 && (int) window_.size() > last_n) {  // -1: the window is the whole output
        const int32_t old = window_.front();
        window_.pop_front();
        if (--counts_[old] == 0) counts_.erase(old);
    }
}

void PenaltyWindow::apply(float * logits, int n_vocab) const {
    if (!params_.penalized()) return;
    // Each token is changed on its own, so going by the window's tokens instead of over the
    // vocabulary gives llama.cpp's bits; the float expressions are its own.
    for (const auto & [token, count] : counts_) {
        if (token < 0 || token >= n_vocab) continue;
        float & l = logits[token];
        l = l <= 0.0f ? l * params_.repeat_penalty : l / params_.repeat_penalty;
        l -= float(count) * params_.frequency_penalty + float(count > 0) * params_.presence_penalty;
    }
}

}  // namespace ke
