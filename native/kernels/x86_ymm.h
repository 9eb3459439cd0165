// The 256-bit paths' choice among the tiles (AVX2, and AVX-VNNI with its vpdpbusd): the same
// choice for both, measured on a Zen 5 with KE_KERNEL_ISA=avx2; on an Intel Xeon (Golden Cove
// cores, as in Alder Lake's P-cores) the AVX-VNNI path's best choice per k agreed within the noise.
//
// Included after x86_tiles.h, x86_groups.h and x86_few.h, inside an anonymous namespace.

// Where the 8-row lane groups (x86_groups.h) beat the one-row packs: where the rows fill all or
// nearly all of their lanes (k = 6 and 12 fill 3/4: they lose). SmolLM2's layer shapes (16 MB of
// weights streamed, one thread) on a Zen 5 with KE_KERNEL_ISA=avx2, groups / packs ns per block
// and row: Q4_1 k = 4 0.68 / 0.76, 8 0.58 / 0.62, 16 0.60 / 0.73; Q8_0 k = 8 0.79 / 0.88,
// 16 0.84 / 1.07; Q8_0 k = 4 1.03 / 0.91 (the sign trick's operations weigh more at two lanes).
inline bool ymm_groups_pay(ggml_type type, int k) {
    const bool unsigned_type = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    return k == 7 || k == 8 || k >= 14 || (unsigned_type && k == 4);
}

inline void run_ymm(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                    const QuantizedRows & a, float * out, int64_t ldo) {
    // 2-6 rows: the few-row tiles (x86_few.h); SmolLM2's layer shapes on the Zen 5, few / before ns
    // per block and row at k = 2..6: Q4_0 0.85-0.75 / 0.94-0.91, Q5_0 1.10-0.84 / 1.17-0.98,
    // Q5_1 0.97-0.73 / 1.16-0.86 (the same at 3-4 rows)
    if (run_few_any(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    if (ymm_groups_pay(type, a.k) && run_groups_y8<8>(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, YmmPass{});
}
