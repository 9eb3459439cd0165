// Repetition penalties, as llama.cpp's penalties sampler applies them: the logit of every token
// among the last repeat_last_n tokens of this generation's output is divided by repeat_penalty
// (multiplied when it is <= 0), then lowered by count * frequency_penalty and, once, by
// presence_penalty. The window holds output only, not the prompt: llama-cpp-python's sampler
// chain sees the tokens it samples and OpenAI counts "the text so far" the same way.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>

#include "sampling.h"

namespace ke {

class PenaltyWindow {
public:
    // A new generation: no tokens seen, and these parameters.
    void reset(const SamplingParams & params);
    // `token` became output: it enters the window, and the oldest leaves a full one.
    void accept(int32_t token);
    // logits: [n_vocab], penalized in place (unchanged with penalties off).
    void apply(float * logits, int n_vocab) const;

private:
    SamplingParams params_;
    std::deque<int32_t> window_;                 // [<= repeat_last_n] oldest first
    std::unordered_map<int32_t, int> counts_;    // token -> occurrences in window_
};

}  // namespace ke
