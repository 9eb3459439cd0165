// Which path runs: chosen once from the CPU's features at run time (never from the build
// machine's), optionally lowered by KE_KERNEL_ISA for tests and measurements.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ggml-cpu.h"
#include "isa_entry.h"
#include "matmul.h"

namespace ke::kernels {

namespace {

bool cpu_has(Isa isa) {
#ifdef KE_KERNELS_X86
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                             __builtin_cpu_supports("f16c");
    static const bool avx_vnni = avx2 && __builtin_cpu_supports("avxvnni");
    static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                               __builtin_cpu_supports("avx512vl");
    static const bool avx512_vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    if (isa == Isa::Avx2) return avx2;
    if (isa == Isa::AvxVnni) return avx_vnni;
    if (isa == Isa::Avx512) return avx512;
    if (isa == Isa::Avx512Vnni) return avx512_vnni;
#endif
    return isa == Isa::Portable;
}

MatmulFn entry(Isa isa);

// A path must give the portable path's bits. The tests check every path a test machine has; this
// check guards the machines the tests never ran on (e.g. AVX-512 ones): on synthetic blocks of every
// type and several batch sizes, a path that disagrees is not used.
bool agrees_with_portable(Isa isa) {
    uint32_t seed = 12345;
    auto next = [&seed] { return seed = seed * 1664525u + 1013904223u; };
    const int64_t n = 2 * QK_K, m = 5;
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const ggml_type type = (ggml_type) t;
        if (!type_supported(type)) continue;
        const ggml_type at = activation_type(type);
        const size_t row_bytes = ggml_row_size(type, n);
        std::vector<uint8_t> w(row_bytes * m);
        for (auto & b : w) b = (uint8_t) (next() >> 24);
        // finite fp16 scales: every 16-bit field gets a small positive value where the type keeps one
        const int64_t bsize = ggml_type_size(type), nb = (int64_t) (row_bytes / bsize);
        const int scale_off = type == GGML_TYPE_Q6_K ? (int) bsize - 2 : 0;
        const bool two = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1 || type == GGML_TYPE_Q4_K ||
                         type == GGML_TYPE_Q5_K;
        for (int64_t i = 0; i < m * nb; ++i) {
            for (int f = 0; f < (two ? 2 : 1); ++f) {
                const uint16_t h = (uint16_t) (0x1000 + (next() >> 22));
                std::memcpy(&w[i * bsize + scale_off + 2 * f], &h, 2);
            }
        }
        for (int k : {1, 2, 3, 8, 11, 16}) {
            QuantizedRows a;
            a.resize(at, k, n, at == GGML_TYPE_Q8_K, at == GGML_TYPE_Q8_1);
            // as ggml quantizes activations: -127..127 (the sign trick wraps -128, as in ggml)
            for (auto & q : a.qs) q = (int8_t) ((int) ((next() >> 24) % 255) - 127);
            for (auto & d : a.d) d = (float) (next() >> 16) * 1e-7f;
            for (auto & s : a.s) s = (float) (int16_t) (next() >> 16) * 1e-5f;
            for (auto & b : a.bsums) b = (int16_t) ((int) (next() >> 21) - 1024);
            std::vector<float> want((size_t) (k * m)), got((size_t) (k * m));
            entry(Isa::Portable)(type, w.data(), row_bytes, 0, m, a, want.data(), m);
            entry(isa)(type, w.data(), row_bytes, 0, m, a, got.data(), m);
            if (std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) != 0) return false;
        }
    }
    return true;
}

Isa choose() {
    Isa best = Isa::Portable;
    for (Isa isa : ALL_ISAS) {  // slowest first: the last that runs here and agrees wins
        if (isa != Isa::Portable && cpu_has(isa) && agrees_with_portable(isa)) best = isa;
    }
    const char * env = std::getenv("KE_KERNEL_ISA");
    if (env) {
        if (std::strcmp(env, "none") == 0) return Isa::Portable;  // as a CPU without a SIMD path of ours
        for (Isa isa : ALL_ISAS) {
            if (std::strcmp(env, isa_name(isa)) == 0 && (int) isa < (int) best) best = isa;
        }
    }
    return best;
}

MatmulFn entry(Isa isa) {
#ifdef KE_KERNELS_X86
    if (isa == Isa::Avx512Vnni) return matmul_avx512_vnni;
    if (isa == Isa::Avx512) return matmul_avx512;
    if (isa == Isa::AvxVnni) return matmul_avx_vnni;
    if (isa == Isa::Avx2) return matmul_avx2;
#endif
    (void) isa;
    return matmul_portable;
}

}  // namespace

const char * isa_name(Isa isa) {
    switch (isa) {
        case Isa::Avx512Vnni: return "avx512vnni";
        case Isa::Avx512: return "avx512";
        case Isa::AvxVnni: return "avxvnni";
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
