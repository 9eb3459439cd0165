// Engine errors: every failure the user can cause becomes an EngineError with a message that
// names the problem and the file or parameter. The bindings turn it into a Python exception.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace ke {

struct EngineError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Bad values given by the caller (parameters, prompts): raised as ValueError in Python.
struct InvalidArgument : EngineError {
    using EngineError::EngineError;
};

inline std::string format(const char * fmt, ...) {
    va_list args;
    va_start(args, fmt);
    char buf[1024];
    vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);
    return buf;
}

}  // namespace ke
