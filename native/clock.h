// The one clock the engine's timings read.
#pragma once

#include <chrono>

namespace ke {

// Seconds on a monotonic clock (differences only).
inline double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace ke
