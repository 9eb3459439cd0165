// The 256-bit paths' choice among the tiles (AVX2, and AVX-VNNI with its vpdpbusd): the same
// choice for both, measured on a Zen 5 with KE_KERNEL_ISA=avx2; on an Intel Xeon (Golden Cove
// cores, as in Alder Lake's P-cores) the AVX-VNNI path's best choice per k agreed within the noise.
//
// Included after x86_tiles.h, x86_groups.h and x86_few.h, inside an anonymous namespace.

// Where the 8-row lane groups (x86_groups.h) beat the one-row packs, past the few-row tiles (2-8
// rows): 14-16 rows, where the rows fill all or nearly all of their lanes (12 fills 3/4: it
// loses). SmolLM2's layer shapes (16 MB of weights streamed, one thread) on a Zen 5 with
// KE_KERNEL_ISA=avx2, groups / packs ns per block and row at 16 rows: Q4_1 0.60 / 0.73, Q8_0
// 0.84 / 1.07 (at 7-8 rows they beat the packs too, 0.58 / 0.62 and 0.79 / 0.88, but the few-row
// tiles beat both: see run_ymm).
inline bool ymm_groups_pay(int k) { return k >= 14; }

inline void run_ymm(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                    const QuantizedRows & a, float * out, int64_t ldo) {
    // 1 row: four weight rows sharing their scales' widening (x86_few.h: tile_one_row_4w; on an
    // AVX2-only Zen 3, one thread, against tile_32's one-row pass on L2-resident weights: Q4_1
    // 0.87x, Q4_0 and Q5_1 0.93x, Q5_0 0.98x the time). 2-8 rows: the few-row tiles (x86_few.h);
    // SmolLM2's layer shapes on the Zen 5, few / before ns
    // per block and row at k = 2..6: Q4_0 0.85-0.75 / 0.94-0.91, Q5_0 1.10-0.84 / 1.17-0.98,
    // Q5_1 0.97-0.73 / 1.16-0.86 (the same at 3-4 rows). At 7-8 rows on an AVX2-only Zen 3, against
    // the lane groups, the default model's products 0.78x / 0.73x (two threads; Q8_0 0.67x at 7)
    if (run_few_any(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    if (ymm_groups_pay(a.k) && run_groups_y8<8>(type, w, row_bytes, i0, i1, a, out, ldo)) return;
    run_any(type, w, row_bytes, i0, i1, a, out, ldo, YmmPass{});
}
