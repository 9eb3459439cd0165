// Row-lane tiles for the 32-element types: one register holds the same lane of R activation
// rows (R = 8 in a 256-bit register, 16 in a 512-bit one), instead of one row's 8 lanes.
//
// ggml's one-row arithmetic per 32-element block: 8 int32 lanes (lane j: the dot of elements
// 4j..4j+3), each converted to float and FMA'd with the scale dx*dy into lane j of the row's
// accumulator; at the end hsum8 over the lanes: ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)).
// Here accumulator register j holds lane j of R rows, so each row sees exactly those operations
// (the same bits), while the scale dx*dy of R rows is one vector multiply (one rounding each, as
// ggml's scalar product) instead of a broadcast and a multiply per row: the per-row cost falls
// to the dot, the convert and the FMA. The activations are transposed per call (a few KB).
//
// Included after x86_tiles.h (its Ymm, Zmm, block decoders), inside an anonymous namespace.

// ---- row registers --------------------------------------------------------------------------------

// Ymm's and Zmm's integer and float helpers (zero, fzero, cvt, fma), plus the lane tiles' own.
struct RowsY : Ymm {  // 8 rows per 256-bit register
    static constexpr int R = 8;
    static I load_rows(const int32_t * p) { return _mm256_loadu_si256((const __m256i *) p); }
    // a broadcast load (load ports), not rebuilt from the register by shuffles as compilers do
    static I bcast32(const uint8_t * p) {
        I r;
        asm("vpbroadcastd %1, %0" : "=x"(r) : "m"(*(const int32_t *) p));
        return r;
    }
    // c + per 32-bit lane the sum of its four u8 x s8 products (no 16-bit pair sum saturates for
    // the operands used here: |w| <= 128 or w <= 31, |y| <= 127)
    static I dot4(I c, I wu, I y) { return add(c, dot4_u(wu, y)); }
    static I sign(I y, I w) { return _mm256_sign_epi8(y, w); }
    static F loadf(const float * p) { return _mm256_loadu_ps(p); }
    static F set1f(float v) { return _mm256_set1_ps(v); }
    static F fmul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F fadd(F a, F b) { return _mm256_add_ps(a, b); }
    static void store(float * p, F v) { _mm256_storeu_ps(p, v); }
};

#ifdef KE_TILES_VNNI
struct RowsZ : Zmm {  // 16 rows per 512-bit register (AVX-512 VNNI)
    static constexpr int R = 16;
    static I load_rows(const int32_t * p) { return _mm512_loadu_si512(p); }
    static I bcast32(const uint8_t * p) {
        I r;
        asm("vpbroadcastd %1, %0" : "=v"(r) : "m"(*(const int32_t *) p));
        return r;
    }
    static I dot4(I c, I wu, I y) { return _mm512_dpbusd_epi32(c, wu, y); }
    static F loadf(const float * p) { return _mm512_loadu_ps(p); }
    static F set1f(float v) { return _mm512_set1_ps(v); }
    static F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F fadd(F a, F b) { return _mm512_add_ps(a, b); }
    static void store(float * p, F v) { _mm512_storeu_ps(p, v); }
};
#endif

// ---- the transposed activations -------------------------------------------------------------------

// How a signed type's int32 lane sums are formed. With VNNI, vpdpbusd(c, w + B, y) with
// c = -B * (sum of y's four bytes): the exact integer in one instruction (vpdpbusd does not
// saturate). Without it, ggml's sign trick, |w| . (y with w's signs), as tile_32 does.
template <class T>
constexpr int lane_bias() {
#ifdef KE_TILES_VNNI
    if constexpr (std::is_same_v<T, Q8_0>) return 128;
    if constexpr (std::is_same_v<T, Q4_0> || std::is_same_v<T, Q5_0>) return T::BIAS;
#endif
    return 0;
}

// k rows padded to rp (a multiple of the register's R; the padding rows are zero: computed, never
// stored), in lane order:
//   y: int32 [n_chunks][8][rp]   lane j of chunk c of row r: the four bytes 4j..4j+3
//   c: int32 [n_chunks][8][rp]   -bias * (the sum of those four bytes), with a bias only
//   d, s: f32 [n_blocks][rp]     the rows' scales (and q8_1 sums)
struct LaneRows {
    int rp = 0;
    int64_t n_blocks = 0;
    int32_t * y = nullptr;  // 64-byte aligned views into the buffers: no load splits a cache line
    int32_t * c = nullptr;
    float * d = nullptr;
    float * s = nullptr;

    void build(const QuantizedRows & a, int R, int bias) {
        const int k = a.k;
        rp = (k + R - 1) / R * R;
        n_blocks = a.n_blocks;
        const size_t ny = (size_t) (n_blocks * 8 * rp), nd = (size_t) (n_blocks * rp);
        y = aligned(y_buf, ny);
        c = bias ? aligned(c_buf, ny) : nullptr;
        d = aligned(d_buf, nd);
        s = a.s.empty() ? nullptr : aligned(s_buf, nd);
        for (int64_t b = 0; b < n_blocks; ++b) {
            for (int r = 0; r < rp; ++r) {
                const bool real = r < k;
                const int8_t * q = real ? a.chunk(b, r) : nullptr;
                d[b * rp + r] = real ? a.d[(size_t) (b * k + r)] : 0.0f;
                if (s) s[b * rp + r] = real ? a.s[(size_t) (b * k + r)] : 0.0f;
                for (int j = 0; j < 8; ++j) {
                    int32_t & yv = y[(b * 8 + j) * rp + r];
                    yv = 0;
                    if (real) std::memcpy(&yv, q + 4 * j, 4);
                    if (c) c[(b * 8 + j) * rp + r] = real ? -bias * (q[4 * j] + q[4 * j + 1] + q[4 * j + 2] + q[4 * j + 3]) : 0;
                }
            }
        }
    }

  private:
    std::vector<int32_t> y_buf, c_buf;
    std::vector<float> d_buf, s_buf;

    template <class E>
    static E * aligned(std::vector<E> & buf, size_t n) {
        buf.resize(n + 64 / sizeof(E));
        const uintptr_t p = (uintptr_t) buf.data();
        return (E *) ((p + 63) & ~(uintptr_t) 63);
    }
};

// ---- the tile: NW weight rows (w_step bytes apart) x the R rows at g of the padded batch -----------

template <class T, class V, int NW>
void tile_lanes(const uint8_t * w, size_t w_step, const LaneRows & L, int g, int k, float * out, int64_t o_step,
                int64_t ldo) {
    using B = typename T::Block;
    constexpr int BIAS = lane_bias<T>();
    constexpr bool SIGN_TRICK = T::SIGNED && BIAS == 0;
    const int rp = L.rp;
    typename V::F acc[NW][8], summ[NW];
    for (int wi = 0; wi < NW; ++wi) {
        for (int j = 0; j < 8; ++j) acc[wi][j] = V::fzero();
        summ[wi] = V::fzero();
    }
    for (int64_t b = 0; b < L.n_blocks; ++b) {
        alignas(32) uint8_t wu[NW][32];  // the chunk as vpdpbusd's unsigned operand
        alignas(32) uint8_t ws[NW][32];  // the signed chunk (sign trick only)
        typename V::F scale[NW];
        const typename V::F dy = V::loadf(L.d + b * rp + g);
        for (int wi = 0; wi < NW; ++wi) {
            const B & blk = ((const B *) (w + wi * w_step))[b];
            int dm_bits;
            std::memcpy(&dm_bits, &blk, 4);
            const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits));
            scale[wi] = V::fmul(V::set1f(_mm_cvtss_f32(dm)), dy);  // dx * dy per row, rounded once
            if constexpr (T::HAS_MIN) {
                const float mx = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                summ[wi] = V::fma(V::set1f(mx), V::loadf(L.s + b * rp + g), summ[wi]);
            }
            __m256i q;
            if constexpr (BIAS == 128) {
                q = _mm256_xor_si256(T::quants(blk), _mm256_set1_epi8((char) 0x80));
            } else if constexpr (BIAS > 0) {
                q = T::biased(blk);
            } else {
                q = T::quants(blk);
            }
            if constexpr (SIGN_TRICK) {
                _mm256_store_si256((__m256i *) ws[wi], q);
                q = _mm256_sign_epi8(q, q);
            }
            _mm256_store_si256((__m256i *) wu[wi], q);
        }
        const int32_t * yb = L.y + b * 8 * rp + g;
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
            const typename V::I y = V::load_rows(yb + j * rp);
            typename V::I c = V::zero();
            if constexpr (BIAS > 0) c = V::load_rows(L.c + b * 8 * rp + j * rp + g);
            for (int wi = 0; wi < NW; ++wi) {
                typename V::I p;
                if constexpr (SIGN_TRICK) {
                    p = V::dot4(c, V::bcast32(wu[wi] + 4 * j), V::sign(y, V::bcast32(ws[wi] + 4 * j)));
                } else {
                    p = V::dot4(c, V::bcast32(wu[wi] + 4 * j), y);
                }
                acc[wi][j] = V::fma(scale[wi], V::cvt(p), acc[wi][j]);
            }
        }
    }
    for (int wi = 0; wi < NW; ++wi) {
        // hsum8 per row, in its order
        const auto & a = acc[wi];
        typename V::F v = V::fadd(V::fadd(V::fadd(a[0], a[4]), V::fadd(a[2], a[6])), V::fadd(V::fadd(a[1], a[5]), V::fadd(a[3], a[7])));
        if constexpr (T::HAS_MIN) v = V::fadd(v, summ[wi]);
        alignas(64) float res[V::R];
        V::store(res, v);
        for (int r = 0; r < V::R && g + r < k; ++r) out[(g + r) * ldo + wi * o_step] = res[r];
    }
}

// Weight rows [i0, i1) against all a.k rows: NW weight rows per tile, q rows apart (NW long
// sequential streams, as run_rows); with several row groups, slices of 16 weight rows in turn,
// so that the second group reads the weights from L1.
template <class T, class V, int NW>
void run_lanes(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, float * out,
               int64_t ldo) {
    thread_local LaneRows L;
    L.build(a, V::R, lane_bias<T>());
    const int k = a.k;
    auto span = [&](int64_t s0, int64_t s1, int g) {
        const int64_t q = (s1 - s0) / NW;
        for (int64_t i = s0; i < s0 + q; ++i) {
            tile_lanes<T, V, NW>(w + i * row_bytes, q * row_bytes, L, g, k, out + i, q, ldo);
        }
        for (int64_t i = s0 + NW * q; i < s1; ++i) tile_lanes<T, V, 1>(w + i * row_bytes, 0, L, g, k, out + i, 0, ldo);
    };
    if (L.rp == V::R) return span(i0, i1, 0);
    constexpr int64_t SLICE = 16;
    for (int64_t s0 = i0; s0 < i1; s0 += SLICE) {
        for (int g = 0; g < k; g += V::R) span(s0, std::min(s0 + SLICE, i1), g);
    }
}

// The 32-element types through run_lanes; false for the others (the caller takes its own path).
template <class V, int NW>
bool run_lanes_any(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                   const QuantizedRows & a, float * out, int64_t ldo) {
    switch (type) {
        case GGML_TYPE_Q4_0: run_lanes<Q4_0, V, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case GGML_TYPE_Q4_1: run_lanes<Q4_1, V, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case GGML_TYPE_Q5_0: run_lanes<Q5_0, V, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case GGML_TYPE_Q5_1: run_lanes<Q5_1, V, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case GGML_TYPE_Q8_0: run_lanes<Q8_0, V, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        default: return false;
    }
}
