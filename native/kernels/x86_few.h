// Few-row tiles for the 32-element types, 1-8 activation rows in 256-bit registers in ggml's
// layout (one register = one row's 8 int32 lanes): each weight block is decoded in registers and
// used at once by every row, with no decoding pass into a buffer (x86_groups.h's pass costs more
// than it saves over so few rows).
//
// What binds, measured on the Zen 5: vpmaddubsw, vpmaddwd, vpsignb, the f32 multiply and the FMA
// share two ports (each alone, and any two together, 2 per cycle); cvtdq2ps, vpermilps, shifts
// and logic run beside them. Per block and row ggml's arithmetic needs 3 of them (4 with the sign
// trick), ~1.5 cycles. So the scale dx*dy is one multiply per block and weight row for four rows
// (dx times the rows' dy, the four products in both 128-bit halves), each row taking its own with
// an in-lane shuffle, and the min term one FMA per block and weight row for all rows (lane r: row r).
//
// Included after x86_tiles.h (Ymm, the block decoders), inside an anonymous namespace.

// dx * dy[r] in all 8 lanes, from s = (dx*dy[0..3], dx*dy[0..3])
template <int R>
inline __m256 lane_of(__m256 s) {
    return _mm256_permute_ps(s, R * 0x55);
}

// One weight block's lanes against activation row y: ggml's integer lane sums (a signed type: its
// sign trick, |w| . (y with w's signs); xor/sub instead of vpsignb, off the multiply ports, was 10%
// slower at 2 rows on the Zen 5)
template <class T>
inline __m256i few_dot(__m256i wu, __m256i wsign, const int8_t * y) {
    __m256i yv = _mm256_loadu_si256((const __m256i *) y);
    if constexpr (T::SIGNED) yv = _mm256_sign_epi8(yv, wsign);
    return Ymm::dot4_u(wu, yv);
}

// acc[R] += (dx*dy[R]) * lanes(block, row r0 + R) for every R, with R a constant (the shuffle's immediate)
template <class T, int... R>
inline void few_rows(__m256 * acc, const __m256 * s, __m256i wu, __m256i wsign, const QuantizedRows & a, int64_t b,
                     int r0, std::integer_sequence<int, R...>) {
    ((acc[R] = _mm256_fmadd_ps(lane_of<R % 4>(s[R / 4]), _mm256_cvtepi32_ps(few_dot<T>(wu, wsign, a.chunk(b, r0 + R))),
                               acc[R])),
     ...);
}

// NW weight rows (w + wi * w_step) x activation rows [r0, r0 + NR); outputs at
// out[r * ldo + wi * o_step]. Several weight rows keep more independent FMA chains in flight.
template <class T, int NW, int NR>
void tile_few(const uint8_t * w, size_t w_step, const QuantizedRows & a, int r0, float * out, int64_t o_step,
              int64_t ldo) {
    using B = typename T::Block;
    static_assert(NR <= 8, "the scales and the mins' sums take one 8-lane register");
    constexpr int NQ = (NR + 3) / 4;  // 4-row quarters of the scales
    const int k = a.k;
    __m256 acc[NW][NR];
    __m256 summ[NW];  // lane r: the min term of row r0 + r
    for (int wi = 0; wi < NW; ++wi) {
        for (int r = 0; r < NR; ++r) acc[wi][r] = _mm256_setzero_ps();
        summ[wi] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        const float * dyb = &a.d[b * k + r0];  // past the rows: padding, never stored
        __m256 dy[NQ];
        for (int h = 0; h < NQ; ++h) dy[h] = _mm256_broadcast_ps((const __m128 *) (dyb + 4 * h));
#pragma GCC unroll 4
        for (int wi = 0; wi < NW; ++wi) {
            const B & blk = ((const B *) (w + wi * w_step))[b];
            prefetch_ahead(&blk, sizeof(B));
            // a lookup table for the fp16 widening was 1.1x slower on the default model (its
            // scales spread over the 256 KB table), a 256-bit widening no faster
            const __m128 dm = block_dm(&blk);
            const __m256 dx = _mm256_broadcastss_ps(dm);
            const __m256i q = T::quants(blk);
            __m256i wu = q, wsign = _mm256_setzero_si256();
            if constexpr (T::SIGNED) {
                wsign = q;
                wu = _mm256_sign_epi8(q, q);  // |q| (-128 stays 0x80: 128 unsigned)
            }
            __m256 s[NQ];
            for (int h = 0; h < NQ; ++h) s[h] = _mm256_mul_ps(dx, dy[h]);
            few_rows<T>(acc[wi], s, wu, wsign, a, b, r0, std::make_integer_sequence<int, NR>{});
            if constexpr (T::HAS_MIN) summ[wi] = add_min_term(dm, a, b, r0, summ[wi]);
        }
    }
    for (int wi = 0; wi < NW; ++wi) {
        alignas(32) float mins[8];
        _mm256_store_ps(mins, summ[wi]);
        for (int r = 0; r < NR; ++r) {
            const float v = hsum8(acc[wi][r]);
            out[(r0 + r) * ldo + wi * o_step] = T::HAS_MIN ? v + mins[r] : v;
        }
    }
}

// Two weight rows x two activation rows: the four scales dx*dy in one multiply and the two rows'
// min terms in one FMA (lane 2 wi + r: weight row wi, activation row r), from one widening of
// both blocks' (d, m): per block the two rows share what tile_few does per weight row.
template <class T>
void tile_few_2x2(const uint8_t * w, size_t w_step, const QuantizedRows & a, float * out, int64_t o_step,
                  int64_t ldo) {
    using B = typename T::Block;
    const B * x[2] = {(const B *) w, (const B *) (w + w_step)};
    const int k = a.k;
    __m256 acc[2][2];
    __m128 summ = _mm_setzero_ps();
    for (int wi = 0; wi < 2; ++wi) acc[wi][0] = acc[wi][1] = _mm256_setzero_ps();
    // two blocks per iteration: Q4_1 on the Intel Xeon (AVX2, L2-resident) 0.91x the time; the
    // other tiles gained nothing from it
#pragma GCC unroll 2
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        prefetch_ahead(&x[0][b], sizeof(B));
        prefetch_ahead(&x[1][b], sizeof(B));
        int dm0, dm1;
        std::memcpy(&dm0, &x[0][b], 4);
        std::memcpy(&dm1, &x[1][b], 4);
        const __m128 dm = _mm_cvtph_ps(_mm_unpacklo_epi32(_mm_cvtsi32_si128(dm0), _mm_cvtsi32_si128(dm1)));  // d0 m0 d1 m1
        const __m128 dy = _mm_castpd_ps(_mm_loaddup_pd((const double *) &a.d[b * k]));  // dy0 dy1 dy0 dy1
        const __m128 s4 = _mm_mul_ps(_mm_permute_ps(dm, 0xA0), dy);  // d0dy0 d0dy1 d1dy0 d1dy1
        const __m256 s = _mm256_set_m128(s4, s4);
        if constexpr (T::HAS_MIN) {
            const __m128 sy = _mm_castpd_ps(_mm_loaddup_pd((const double *) &a.s[b * k]));
            summ = _mm_fmadd_ps(_mm_permute_ps(dm, 0xF5), sy, summ);
        }
        __m256i wu[2], wsign[2];
        for (int wi = 0; wi < 2; ++wi) {
            const __m256i q = T::quants(x[wi][b]);
            wu[wi] = T::SIGNED ? _mm256_sign_epi8(q, q) : q;
            wsign[wi] = q;
        }
        acc[0][0] = _mm256_fmadd_ps(lane_of<0>(s), _mm256_cvtepi32_ps(few_dot<T>(wu[0], wsign[0], a.chunk(b, 0))), acc[0][0]);
        acc[0][1] = _mm256_fmadd_ps(lane_of<1>(s), _mm256_cvtepi32_ps(few_dot<T>(wu[0], wsign[0], a.chunk(b, 1))), acc[0][1]);
        acc[1][0] = _mm256_fmadd_ps(lane_of<2>(s), _mm256_cvtepi32_ps(few_dot<T>(wu[1], wsign[1], a.chunk(b, 0))), acc[1][0]);
        acc[1][1] = _mm256_fmadd_ps(lane_of<3>(s), _mm256_cvtepi32_ps(few_dot<T>(wu[1], wsign[1], a.chunk(b, 1))), acc[1][1]);
    }
    alignas(16) float mins[4];
    _mm_store_ps(mins, summ);
    for (int wi = 0; wi < 2; ++wi) {
        for (int r = 0; r < 2; ++r) {
            const float v = hsum8(acc[wi][r]);
            out[r * ldo + wi * o_step] = T::HAS_MIN ? v + mins[2 * wi + r] : v;
        }
    }
}

// One activation row, four weight rows (q apart), whose fp16 scales are widened together and
// multiplied by the row's dy in one instruction: without a min, the four d in one 128-bit
// register copied to both halves; with one, (d m) of two rows per register, both halves alike,
// with one FMA for both rows' min terms (lane 1: the pair's first row, lane 3: its second). The
// one-row tile_32 spends a widening, two broadcasts, a multiply and an FMA per row: on an
// AVX2-only Zen 3 those were ~40% of a one-row Q4_1 pass (one thread). Each row then takes its
// dx*dy from its lane with an in-half shuffle.
template <class T>
void tile_one_row_4w(const uint8_t * w, size_t w_step, const QuantizedRows & a, float * out, int64_t o_step) {
    using B = typename T::Block;
    const B * x[4];
    for (int wi = 0; wi < 4; ++wi) x[wi] = (const B *) (w + wi * w_step);
    __m256 acc[4], summ[2];
    for (int wi = 0; wi < 4; ++wi) acc[wi] = _mm256_setzero_ps();
    summ[0] = summ[1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        __m256 s[4];  // row wi's dx*dy in every lane
        if constexpr (T::HAS_MIN) {
            const __m256 dy = _mm256_broadcast_ss(&a.d[b]), sy = _mm256_broadcast_ss(&a.s[b]);  // one row: slot b
            for (int p = 0; p < 2; ++p) {
                uint32_t dm0, dm1;
                std::memcpy(&dm0, &x[2 * p][b], 4);
                std::memcpy(&dm1, &x[2 * p + 1][b], 4);
                // (d0 m0 d1 m1) in both halves
                const __m256 dm = _mm256_cvtph_ps(_mm_set1_epi64x((long long) ((uint64_t) dm0 | ((uint64_t) dm1 << 32))));
                const __m256 sc = _mm256_mul_ps(dm, dy);
                s[2 * p] = _mm256_permute_ps(sc, 0x00);
                s[2 * p + 1] = _mm256_permute_ps(sc, 0xAA);
                summ[p] = _mm256_fmadd_ps(dm, sy, summ[p]);
            }
        } else {
            uint64_t d4 = 0;  // the four rows' fp16 d
            for (int wi = 0; wi < 4; ++wi) {
                uint16_t d;
                std::memcpy(&d, &x[wi][b], 2);
                d4 |= (uint64_t) d << (16 * wi);
            }
            const __m128 sc4 = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi64_si128((long long) d4)), _mm_broadcast_ss(&a.d[b]));
            const __m256 sc = _mm256_set_m128(sc4, sc4);
            s[0] = _mm256_permute_ps(sc, 0x00);
            s[1] = _mm256_permute_ps(sc, 0x55);
            s[2] = _mm256_permute_ps(sc, 0xAA);
            s[3] = _mm256_permute_ps(sc, 0xFF);
        }
        const int8_t * y = a.chunk(b, 0);
        for (int wi = 0; wi < 4; ++wi) {
            prefetch_ahead(&x[wi][b], sizeof(B));
            const __m256i q = T::quants(x[wi][b]);
            const __m256i wu = T::SIGNED ? _mm256_sign_epi8(q, q) : q;
            acc[wi] = _mm256_fmadd_ps(s[wi], _mm256_cvtepi32_ps(few_dot<T>(wu, q, y)), acc[wi]);
        }
    }
    alignas(32) float mins[2][8];
    _mm256_store_ps(mins[0], summ[0]);
    _mm256_store_ps(mins[1], summ[1]);
    for (int wi = 0; wi < 4; ++wi) {
        const float v = hsum8(acc[wi]);
        out[wi * o_step] = T::HAS_MIN ? v + mins[wi / 2][wi % 2 ? 3 : 1] : v;
    }
}

// Weight rows [i0, i1) against one activation row: four rows q apart per tile (four long
// sequential streams), the tail one by one
template <class T>
void run_one_row(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, float * out) {
    const int64_t q = (i1 - i0) / 4;
    for (int64_t i = i0; i < i0 + q; ++i) tile_one_row_4w<T>(w + i * row_bytes, q * row_bytes, a, out + i, q);
    for (int64_t i = i0 + 4 * q; i < i1; ++i) tile_32<T, Ymm, 1, 1>(w + i * row_bytes, 0, a, 0, out + i, 0, 0);
}

// Weight rows [i0, i1) against all a.k rows (2..8), in tiles of NW rows q apart: NW long
// sequential streams of weights (neighbouring rows interleave theirs, which the prefetchers lose)
template <class T, int NW, int NR>
void run_few(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, float * out,
             int64_t ldo) {
    const int64_t q = (i1 - i0) / NW;
    for (int64_t i = i0; i < i0 + q; ++i) {
        if constexpr (NW == 2 && NR == 2) {
            tile_few_2x2<T>(w + i * row_bytes, q * row_bytes, a, out + i, q, ldo);
        } else {
            tile_few<T, NW, NR>(w + i * row_bytes, q * row_bytes, a, 0, out + i, q, ldo);
        }
    }
    for (int64_t i = i0 + NW * q; i < i1; ++i) tile_few<T, 1, NR>(w + i * row_bytes, 0, a, 0, out + i, 0, ldo);
}

// Two weight rows per tile up to 3 rows (more FMA chains in flight; at 2 rows they share the
// scales' multiply and the mins' FMA); from 4 rows one with 16 vector registers (two spill), two up
// to 6 rows with AVX-512's 32 (Intel Xeon with AMX, two threads, two A/B runs: SmolLM2's matmuls at
// 4 / 5 / 6 rows in 0.84-0.90 / 0.92-0.94 / 0.99x the time of one weight row, Q8_0 in its shapes
// 0.75-0.81 / 0.79-0.81 / 0.80-0.88x, Q4_1 0.90-1.03x). At 7-8 rows one weight row still beats the
// lane groups on a Zen 3 (x86_ymm.h).
#ifdef KE_TILES_AVX512
constexpr int FEW_WEIGHT_ROWS_4_TO_6 = 2;
#else
constexpr int FEW_WEIGHT_ROWS_4_TO_6 = 1;
#endif

template <class T>
bool run_few_rows(int k, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a,
                  float * out, int64_t ldo) {
    switch (k) {
        case 1: run_one_row<T>(w, row_bytes, i0, i1, a, out); return true;
        case 2: run_few<T, 2, 2>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case 3: run_few<T, 2, 3>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case 4: run_few<T, FEW_WEIGHT_ROWS_4_TO_6, 4>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case 5: run_few<T, FEW_WEIGHT_ROWS_4_TO_6, 5>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case 6: run_few<T, FEW_WEIGHT_ROWS_4_TO_6, 6>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case 7: run_few<T, 1, 7>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case 8: run_few<T, 1, 8>(w, row_bytes, i0, i1, a, out, ldo); return true;
        default: return false;
    }
}

// The 32-element types at 1-8 rows; false for the rest
inline bool run_few_any(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                        const QuantizedRows & a, float * out, int64_t ldo) {
    switch (type) {
        case GGML_TYPE_Q4_0: return run_few_rows<Q4_0>(a.k, w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q4_1: return run_few_rows<Q4_1>(a.k, w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q5_0: return run_few_rows<Q5_0>(a.k, w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q5_1: return run_few_rows<Q5_1>(a.k, w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q8_0: return run_few_rows<Q8_0>(a.k, w, row_bytes, i0, i1, a, out, ldo);
        default: return false;
    }
}
