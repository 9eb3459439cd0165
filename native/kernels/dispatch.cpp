// Which path runs: chosen once from the CPU's features at run time (never from the build
// machine's), optionally lowered by KE_KERNEL_ISA for tests and measurements.
#include <cstdlib>
#include <cstring>

#include "ggml-cpu.h"
#include "isa_entry.h"
#include "matmul.h"

namespace ke::kernels {

namespace {

bool cpu_has(Isa isa) {
#ifdef KE_KERNELS_X86
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                             __builtin_cpu_supports("f16c");
    static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                               __builtin_cpu_supports("avx512vl");
    if (isa == Isa::Avx2) return avx2;
    if (isa == Isa::Avx512) return avx512;
#endif
    return isa == Isa::Portable;
}

Isa choose() {
    Isa best = cpu_has(Isa::Avx512) ? Isa::Avx512 : cpu_has(Isa::Avx2) ? Isa::Avx2 : Isa::Portable;
    const char * env = std::getenv("KE_KERNEL_ISA");
    if (env) {
        for (Isa isa : {Isa::Portable, Isa::Avx2, Isa::Avx512}) {
            if (std::strcmp(env, isa_name(isa)) == 0 && (int) isa < (int) best) best = isa;
        }
    }
    return best;
}

MatmulFn entry(Isa isa) {
#ifdef KE_KERNELS_X86
    if (isa == Isa::Avx512) return matmul_avx512;
    if (isa == Isa::Avx2) return matmul_avx2;
#endif
    (void) isa;
    return matmul_portable;
}

}  // namespace

const char * isa_name(Isa isa) {
    switch (isa) {
        case Isa::Avx512: return "avx512";
        case Isa::Avx2: return "avx2";
        default: return "portable";
    }
}

bool isa_available(Isa isa) { return cpu_has(isa); }

Isa best_isa() {
    static const Isa isa = choose();
    return isa;
}

bool type_supported(ggml_type type) {
    switch (type) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
        case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
            return true;
        default:
            return false;
    }
}

void matmul(Isa isa, ggml_type type, const void * w, size_t row_bytes, int64_t i0, int64_t i1,
            const QuantizedRows & a, float * out, int64_t ldo) {
    if (!cpu_has(isa)) isa = Isa::Portable;
    entry(isa)(type, (const uint8_t *) w, row_bytes, i0, i1, a, out, ldo);
}

}  // namespace ke::kernels
