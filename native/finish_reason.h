// Why a generation ended: decided by the decoder (Decoder, BatchDecoder) and nowhere else, but
// for stop strings, which are text the decoders never see (the Python layer finds them).
#pragma once

namespace ke {

enum class FinishReason {
    None,    // the generation goes on
    Stop,    // an end-of-generation token (never output), or a stop string
    Length,  // the token limit, or a full context
};

// OpenAI's name: "stop", "length"; nullptr for None.
inline const char * finish_reason_name(FinishReason r) {
    switch (r) {
        case FinishReason::Stop: return "stop";
        case FinishReason::Length: return "length";
        case FinishReason::None: break;
    }
    return nullptr;
}

}  // namespace ke
