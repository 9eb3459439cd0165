// The x86 tiles, written once over a "row pack" V: Ymm holds one activation row's 8 f32 lanes in
// a 256-bit register, Zmm two rows' (rows r and r+1 in the low and high halves of a 512-bit
// register; the weight chunk broadcast to both halves). Every lane performs the same operations
// in either, so both give the same bits as each other and as ggml's AVX2 vec_dot.
//
// With KE_TILES_VNNI (AVX-512 VNNI, or AVX-VNNI without KE_TILES_AVX512), a 32-bit lane's four
// u8 x s8 products are summed by one vpdpbusd instead of vpmaddubsw + vpmaddwd: the same integers
// (no 16-bit pair sum saturates for these operands), as ggml's own vec_dot does on a VNNI build.
//
// Included by matmul_avx2.cpp, matmul_avx_vnni.cpp, matmul_avx512.cpp and matmul_avx512_vnni.cpp
// after their target pragmas, inside an anonymous namespace: each gets its own copy compiled for
// its instruction set.

// ggml's hsum_float_8: (a0+a4 + a2+a6) + (a1+a5 + a3+a7)
inline float hsum8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

#ifdef KE_TILES_VNNI
// c + (per 32-bit lane) the sum of its four u8 x s8 products, in 256 bits: AVX-512 VL's encoding
// where the path has AVX-512, AVX-VNNI's (VEX) where it has not; one instruction, the same integers.
inline __m256i dpbusd256(__m256i c, __m256i w, __m256i y) {
#ifdef KE_TILES_AVX512
    return _mm256_dpbusd_epi32(c, w, y);
#else
    return _mm256_dpbusd_avx_epi32(c, w, y);
#endif
}
#endif

// ---- row packs ----------------------------------------------------------------------------------

struct Ymm {
    static constexpr int P = 1;  // activation rows per register
    using I = __m256i;
    using F = __m256;
    struct Signed {  // a signed weight chunk: |q| and q (for the sign), as ggml's sign trick needs
        __m256i abs, sign;
    };
    static I bcast(__m256i q) { return q; }
    static Signed make_signed(__m256i q) { return {_mm256_sign_epi8(q, q), q}; }
    static I load(const void * p) { return _mm256_loadu_si256((const __m256i *) p); }
    static I zero() { return _mm256_setzero_si256(); }
    static I set16(int16_t v) { return _mm256_set1_epi16(v); }
    static I bcast16(__m256i v) { return v; }
    static I dot_u(I w, I y) { return _mm256_maddubs_epi16(w, y); }  // unsigned w, signed y
    static I signed_y(const Signed & w, I y) { return _mm256_sign_epi8(y, w.sign); }  // y with w's signs
    static I madd(I a, I b) { return _mm256_madd_epi16(a, b); }
    // per 32-bit lane: the sum of its four byte products
#ifdef KE_TILES_VNNI
    static I dot4_u(I w, I y) { return dpbusd256(zero(), w, y); }
#else
    static I dot4_u(I w, I y) { return madd(set16(1), dot_u(w, y)); }
#endif
    static I add(I a, I b) { return _mm256_add_epi32(a, b); }
    static I sub(I a, I b) { return _mm256_sub_epi32(a, b); }
    static I shl5(I a) { return _mm256_slli_epi32(a, 5); }
    static F fzero() { return _mm256_setzero_ps(); }
    static F cvt(I a) { return _mm256_cvtepi32_ps(a); }
    static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
    // per row p of the pack: dx * dy[p] in every lane of its half (a product rounded once, as ggml's)
    static F scale(float dx, const float * dy) { return _mm256_set1_ps(dx * dy[0]); }
    static F bcast_f(const float * dy) { return _mm256_broadcast_ss(dy); }  // dy[p] in row p's lanes
    static F mul(__m256 dx, F dy) { return _mm256_mul_ps(dx, dy); }
    static void hsum(F acc, float * out) { out[0] = hsum8(acc); }
};

#ifdef KE_TILES_AVX512
struct Zmm {
    static constexpr int P = 2;
    using I = __m512i;
    using F = __m512;
    struct Signed {
        __m512i abs;
        __mmask64 neg;  // bytes where q < 0: the activation byte is negated there
    };
    static I bcast(__m256i q) { return _mm512_broadcast_i64x4(q); }
    static Signed make_signed(__m256i q) { return signed_of(bcast(q)); }
    static Signed signed_of(I q) { return {_mm512_abs_epi8(q), _mm512_movepi8_mask(q)}; }
    static I load(const void * p) { return _mm512_loadu_si512(p); }
    static I zero() { return _mm512_setzero_si512(); }
    static I set16(int16_t v) { return _mm512_set1_epi16(v); }
    static I bcast16(__m256i v) { return bcast(v); }
    static I dot_u(I w, I y) { return _mm512_maddubs_epi16(w, y); }
    // where q == 0 the product is 0 whatever the sign of y, as with _mm256_sign_epi8
    static I signed_y(const Signed & w, I y) { return _mm512_mask_sub_epi8(y, w.neg, _mm512_setzero_si512(), y); }
    static I madd(I a, I b) { return _mm512_madd_epi16(a, b); }
#ifdef KE_TILES_VNNI
    static I dot4_u(I w, I y) { return _mm512_dpbusd_epi32(zero(), w, y); }
#else
    static I dot4_u(I w, I y) { return madd(set16(1), dot_u(w, y)); }
#endif
    static I add(I a, I b) { return _mm512_add_epi32(a, b); }
    static I sub(I a, I b) { return _mm512_sub_epi32(a, b); }
    static I shl5(I a) { return _mm512_slli_epi32(a, 5); }
    static F fzero() { return _mm512_setzero_ps(); }
    static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
    static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static F pair(float lo, float hi) {
        const __m512d v = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(lo)));
        return _mm512_castpd_ps(_mm512_insertf64x4(v, _mm256_castps_pd(_mm256_set1_ps(hi)), 1));
    }
    static F scale(float dx, const float * dy) { return pair(dx * dy[0], dx * dy[1]); }
    static F bcast_f(const float * dy) {
        return _mm512_mask_broadcastss_ps(_mm512_set1_ps(dy[0]), 0xFF00, _mm_load_ss(dy + 1));
    }
    static F mul(__m256 dx, F dy) { return _mm512_mul_ps(_mm512_broadcast_f32x4(_mm256_castps256_ps128(dx)), dy); }
    static void hsum(F acc, float * out) {
        out[0] = hsum8(_mm512_castps512_ps256(acc));
        out[1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    }
};

// Two 256-bit values in the halves of one register.
inline __m512i halves_of(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
#endif

// How far ahead of the block being multiplied the tiles prefetch their weight streams. The hardware
// prefetchers alone left the tiles waiting on memory on an Intel Xeon with AMX (a VM, 2 cores; the
// default model's matmuls, one thread, AVX2 path): 2 rows cost 2.2x one row's time and 4 rows 4.2x,
// where the same tiles on L2-resident weights take 1.7x and 3.2x. 2 KB ahead, the time of 1 / 2 /
// 4 / 8 rows fell to 0.76 / 0.45 / 0.45 / 0.67x (512 B and 1 KB ahead gained less, 4 KB no more).
constexpr size_t WEIGHT_PREFETCH_BYTES = 2048;

// Prefetches every cache line of an object of `bytes` bytes at p + WEIGHT_PREFETCH_BYTES (past the
// end of the weights too: a prefetch never faults)
inline void prefetch_ahead(const void * p, size_t bytes) {
    for (size_t l = 0; l < bytes; l += 64) _mm_prefetch((const char *) p + WEIGHT_PREFETCH_BYTES + l, _MM_HINT_T0);
}

// ---- weight decoding: one 32-element chunk into 32 bytes in element order -----------------------

// 32 nibbles of 16 bytes: low nibbles are elements 0..15, high nibbles 16..31
// (the 16 bytes loaded into both halves, the high half shifted: no cross-lane shuffle)
inline __m256i nibbles(const uint8_t * qs) {
    const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) qs));
    return _mm256_and_si256(_mm256_srlv_epi32(t, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(0x0F));
}

// 0xFF in byte e where bit e of the 32-bit word at p is set
inline __m256i bit_bytes(const uint8_t * p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int) v),
        _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long) 0x8040201008040201ull);
    return _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
}

// BIAS > 0: quants = biased - BIAS, biased in 0..31, BIAS a power of two (tile_32_weight_pair)
struct Q4_0 {
    using Block = BlockQ4_0;
    static constexpr bool SIGNED = true, HAS_MIN = false;
    static constexpr int BIAS = 8;
    static __m256i biased(const Block & b) { return nibbles(b.qs); }
    static __m256i quants(const Block & b) { return _mm256_sub_epi8(biased(b), _mm256_set1_epi8(BIAS)); }
};
struct Q4_1 {
    using Block = BlockQ4_1;
    static constexpr bool SIGNED = false, HAS_MIN = true;
    static constexpr int BIAS = 0;
    static __m256i quants(const Block & b) { return nibbles(b.qs); }
};
struct Q5_0 {
    using Block = BlockQ5_0;
    static constexpr bool SIGNED = true, HAS_MIN = false;
    static constexpr int BIAS = 16;
    static __m256i biased(const Block & b) {
        return _mm256_or_si256(nibbles(b.qs), _mm256_and_si256(bit_bytes(b.qh), _mm256_set1_epi8(0x10)));
    }
#ifdef KE_TILES_AVX512
    // two blocks in the halves of one register: the 64 fifth bits are a byte mask as they stand
    static __m512i biased_pair(const Block & b0, const Block & b1) {
        uint32_t h0, h1;
        std::memcpy(&h0, b0.qh, 4);
        std::memcpy(&h1, b1.qh, 4);
        const __m512i n = halves_of(nibbles(b0.qs), nibbles(b1.qs));
        return _mm512_mask_add_epi8(n, (__mmask64) h0 | ((__mmask64) h1 << 32), n, _mm512_set1_epi8(0x10));
    }
#endif
    // (nibble | bit << 4) - 16, as int8: nibble | 0xF0 where the bit is clear
    static __m256i quants(const Block & b) {
        return _mm256_or_si256(nibbles(b.qs), _mm256_andnot_si256(bit_bytes(b.qh), _mm256_set1_epi8((char) 0xF0)));
    }
};
struct Q5_1 {
    using Block = BlockQ5_1;
    static constexpr bool SIGNED = false, HAS_MIN = true;
    static constexpr int BIAS = 0;
    static __m256i quants(const Block & b) {
        return _mm256_or_si256(nibbles(b.qs), _mm256_and_si256(bit_bytes(b.qh), _mm256_set1_epi8(0x10)));
    }
};
struct Q8_0 {
    using Block = BlockQ8_0;
    static constexpr bool SIGNED = true, HAS_MIN = false;
    static constexpr int BIAS = 0;  // 0..255 would saturate vpmaddubsw's pair sums
    static __m256i quants(const Block & b) { return _mm256_loadu_si256((const __m256i *) b.qs); }
};

inline float f16(half h) { return _cvtsh_ss(h); }

// d (and m): a block's first fp16 fields, widened together (lanes 0 and 1)
inline __m128 block_dm(const void * blk) {
    int dm_bits;
    std::memcpy(&dm_bits, blk, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits));
}

// ggml's min term m * s of block b for 8 rows from r0 (lane p: row r0 + p), one FMA per block in
// block order (a per-lane FMA is ggml's scalar one); dm: the block's (d, m). Lanes past the rows
// read the next slots (padding): never stored.
inline __m256 add_min_term(__m128 dm, const QuantizedRows & a, int64_t b, int r0, __m256 summ) {
    const __m256 mx = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    return _mm256_fmadd_ps(mx, _mm256_loadu_ps(&a.s[b * a.k + r0]), summ);
}

// ---- 32-element types: NW weight rows x NS packs of V::P activation rows --------------------------
// Per block and row: acc = fma(dx*dy, lanes, acc); with a min, summ = fma(mx, sy, summ) in block
// order. Several weight rows at once keep independent FMA chains in flight when k is small.
// Weight row wi is at w + wi * w_step, its outputs at out[r * ldo + wi * o_step].
template <class T, class V, int NW, int NS>
void tile_32(const uint8_t * w, size_t w_step, const QuantizedRows & a, int r0, float * out, int64_t o_step,
             int64_t ldo) {
    using B = typename T::Block;
    constexpr int P = V::P;
    static_assert(NS * P <= 8, "the mins' sums take one 8-lane register per weight row");
    const int k = a.k;
    typename V::F acc[NW][NS];
    __m256 summ[NW];  // lane p: the min term of row r0 + p (a per-lane FMA is ggml's scalar one)
    for (int wi = 0; wi < NW; ++wi) {
        for (int s = 0; s < NS; ++s) acc[wi][s] = V::fzero();
        summ[wi] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        typename V::F dy[NS];  // the rows' scales, shared by the NW weight rows
        for (int s = 0; s < NS; ++s) dy[s] = V::bcast_f(&a.d[b * k + r0 + s * P]);
        for (int wi = 0; wi < NW; ++wi) {
            const B & blk = ((const B *) (w + wi * w_step))[b];
            prefetch_ahead(&blk, sizeof(B));
            const __m128 dm = block_dm(&blk);
            const __m256 dx = _mm256_broadcastss_ps(dm);
            const __m256i q = T::quants(blk);
            typename V::Signed ws;  // the decoded chunk, in the form the row products need
            typename V::I wu;
            if constexpr (T::SIGNED) {
                ws = V::make_signed(q);
            } else {
                wu = V::bcast(q);
            }
            for (int s = 0; s < NS; ++s) {
                const int r = r0 + s * P;
                const typename V::I y = V::load(a.chunk(b, r));
                typename V::I p;
                if constexpr (T::SIGNED) {
                    p = V::dot4_u(ws.abs, V::signed_y(ws, y));  // ggml's sign trick: |w| . (y with w's sign)
                } else {
                    p = V::dot4_u(wu, y);
                }
                acc[wi][s] = V::fma(V::mul(dx, dy[s]), V::cvt(p), acc[wi][s]);
            }
            if constexpr (T::HAS_MIN) summ[wi] = add_min_term(dm, a, b, r0, summ[wi]);
        }
    }
    for (int wi = 0; wi < NW; ++wi) {
        alignas(32) float mins[8];
        _mm256_store_ps(mins, summ[wi]);
        for (int s = 0; s < NS; ++s) {
            float v[P];
            V::hsum(acc[wi][s], v);
            for (int p2 = 0; p2 < P; ++p2) {
                const int r = r0 + s * P + p2;
                if (r < k) out[r * ldo + wi * o_step] = T::HAS_MIN ? v[p2] + mins[s * P + p2] : v[p2];  // not the phantom
            }
        }
    }
}

#ifdef KE_TILES_AVX512
// ---- 32-element types, few activation rows: two weight rows per 512-bit register ---------------
// With one activation row the 256-bit pack leaves half of every 512-bit operation unused; here
// two weight rows take the low and high halves (each activation chunk broadcast to both), and
// each half performs tile_32's arithmetic for its own row: the same bits. A block is decoded once
// for the NR activation rows, as in tile_32, but for two weight rows in one register.
// A signed type with a BIAS takes biased . y - BIAS * sum(y) per 32-bit lane instead of ggml's
// sign trick: the same exact integer (no pair sum saturates: biased < 32, |y| <= 127), in fewer
// operations, and sum(y) is shared by the two weight rows.
template <class T, int NR>
void tile_32_weight_pair(const uint8_t * w0, const uint8_t * w1, const QuantizedRows & a, int r0, float * out0,
                         float * out1, int64_t ldo) {
    using B = typename T::Block;
    const B * x0 = (const B *) w0;
    const B * x1 = (const B *) w1;
    const int k = a.k;
    // lanes 0..7 take element 0 of a 128-bit vector, lanes 8..15 element 2
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    __m512 acc[NR];
    __m128 summ[NR];  // lanes 0 and 2: the min terms of the two weight rows
    for (int r = 0; r < NR; ++r) {
        acc[r] = _mm512_setzero_ps();
        summ[r] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        prefetch_ahead(x0 + b, sizeof(B));
        prefetch_ahead(x1 + b, sizeof(B));
        __m128 dm;  // (d0, m0, d1, m1), or (d0, d0, d1, d1) without a min
        if constexpr (T::HAS_MIN) {
            int dm0, dm1;
            std::memcpy(&dm0, &x0[b], 4);
            std::memcpy(&dm1, &x1[b], 4);
            dm = _mm_cvtph_ps(_mm_unpacklo_epi32(_mm_cvtsi32_si128(dm0), _mm_cvtsi32_si128(dm1)));
        } else {
            half d0, d1;
            std::memcpy(&d0, &x0[b], 2);
            std::memcpy(&d1, &x1[b], 2);
            const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int) d0 | ((int) d1 << 16)));
            dm = _mm_unpacklo_ps(d, d);
        }
        const __m512 dx = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(dm));
        Zmm::I wq;  // the two blocks' quants: biased, |q| (signed) or q
        Zmm::Signed ws;
        if constexpr (std::is_same_v<T, Q5_0>) {
            wq = T::biased_pair(x0[b], x1[b]);
        } else if constexpr (T::BIAS > 0) {
            wq = halves_of(T::biased(x0[b]), T::biased(x1[b]));
        } else {
            wq = halves_of(T::quants(x0[b]), T::quants(x1[b]));
            if constexpr (T::SIGNED) ws = Zmm::signed_of(wq);
        }
        for (int r = 0; r < NR; ++r) {
            const int64_t slot = b * k + r0 + r;
            const Zmm::I y = Zmm::bcast(_mm256_loadu_si256((const __m256i *) a.chunk(b, r0 + r)));
            Zmm::I p;
            if constexpr (T::BIAS > 0) {
                static_assert((T::BIAS & (T::BIAS - 1)) == 0, "BIAS * sum(y) is a shift");
                const Zmm::I y_sums = Zmm::dot4_u(_mm512_set1_epi8(1), y);
                p = Zmm::sub(Zmm::dot4_u(wq, y), _mm512_slli_epi32(y_sums, __builtin_ctz(T::BIAS)));
            } else if constexpr (T::SIGNED) {
                p = Zmm::dot4_u(ws.abs, Zmm::signed_y(ws, y));
            } else {
                p = Zmm::dot4_u(wq, y);
            }
            acc[r] = Zmm::fma(_mm512_mul_ps(dx, _mm512_set1_ps(a.d[slot])), Zmm::cvt(p), acc[r]);
            if constexpr (T::HAS_MIN) summ[r] = _mm_fmadd_ps(_mm_movehdup_ps(dm), _mm_set1_ps(a.s[slot]), summ[r]);
        }
    }
    for (int r = 0; r < NR; ++r) {
        float v[2];
        Zmm::hsum(acc[r], v);
        alignas(16) float mins[4];
        _mm_store_ps(mins, summ[r]);
        out0[(r0 + r) * ldo] = T::HAS_MIN ? v[0] + mins[0] : v[0];
        out1[(r0 + r) * ldo] = T::HAS_MIN ? v[1] + mins[2] : v[1];
    }
}

#endif

// ---- K-quants: one weight row x NS packs -------------------------------------------------------
// Integer lanes over the super-block (chunk c of 32 elements, lane j = elements 4j..4j+3, times
// the sub-block scale), then one f32 FMA per lane per super-block.

// ggml's Q4_K/Q5_K min term for one row: 4 int32 lanes of (mins . pairs of 32-element sums), from
// the 8 mins as 16-bit values
inline __m128i k_min_products(__m128i mins16, const int16_t * bsums) {
    const __m256i bs = _mm256_loadu_si256((const __m256i *) bsums);
    const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return _mm_madd_epi16(mins16, q8s);
}

// A Q4_K/Q5_K super-block's 8 scales and 8 mins as 16-bit values (scales in the low 128 bits),
// unpacked in registers (bytes unpacked to memory and read back 8 at a time stall the
// store-to-load forwarding)
inline __m256i k_scales_mins16(const uint8_t * q) {
    uint32_t u[3];
    std::memcpy(u, q, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    const uint32_t sc_lo = u[0] & m6, mn_lo = u[1] & m6;                           // 0..3
    const uint32_t sc_hi = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);                // 4..7
    const uint32_t mn_hi = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);
    return _mm256_cvtepu8_epi16(_mm_setr_epi32((int) sc_lo, (int) sc_hi, (int) mn_lo, (int) mn_hi));
}

enum class KType { Q4, Q5 };

template <KType KT, class V, int NS>
void tile_q45k(const uint8_t * w, const QuantizedRows & a, int r0, float * out, int64_t ldo) {
    using B = std::conditional_t<KT == KType::Q4, BlockQ4_K, BlockQ5_K>;
    constexpr int P = V::P;
    const int k = a.k;
    const B * x = (const B *) w;
    typename V::F acc[NS];
    __m128 acc_m[NS * P];   // Q4_K: 4 lanes per row
    float summ[NS * P];     // Q5_K: a scalar per row
    for (int s = 0; s < NS; ++s) acc[s] = V::fzero();
    for (int s = 0; s < NS * P; ++s) {
        acc_m[s] = _mm_setzero_ps();
        summ[s] = 0.0f;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        prefetch_ahead(x + b, sizeof(x[b]));
        const __m256i sm16 = k_scales_mins16(x[b].scales);
        alignas(32) int16_t sc[16];  // one wide store, read back in parts: forwarded
        _mm256_store_si256((__m256i *) sc, sm16);
        const __m128i mins16 = _mm256_extracti128_si256(sm16, 1);
        typename V::I sumi[NS];
        for (int s = 0; s < NS; ++s) sumi[s] = V::zero();
        __m256i hbits = _mm256_setzero_si256();
        if constexpr (KT == KType::Q5) hbits = _mm256_loadu_si256((const __m256i *) x[b].qh);
        for (int j = 0; j < 4; ++j) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *) (x[b].qs + 32 * j));
            __m256i lo = _mm256_and_si256(bits, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if constexpr (KT == KType::Q5) {
                // the 5th bit of element l of sub-block 2j (2j+1) is bit 2j (2j+1) of qh[l]
                const __m256i b0 = _mm256_set1_epi8((char) (1 << (2 * j)));
                const __m256i b1 = _mm256_set1_epi8((char) (1 << (2 * j + 1)));
                const __m256i x10 = _mm256_set1_epi8(0x10);
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, b0), b0), x10));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, b1), b1), x10));
            }
            const typename V::I wl = V::bcast(lo), wh = V::bcast(hi);
            const typename V::I sl = V::set16(sc[2 * j]), sh = V::set16(sc[2 * j + 1]);
            for (int s = 0; s < NS; ++s) {
                const int r = r0 + s * P;
                const typename V::I pl = V::madd(sl, V::dot_u(wl, V::load(a.chunk(b * 8 + 2 * j, r))));
                const typename V::I ph = V::madd(sh, V::dot_u(wh, V::load(a.chunk(b * 8 + 2 * j + 1, r))));
                sumi[s] = V::add(sumi[s], V::add(pl, ph));
            }
        }
        const float dx = f16(x[b].d), dmx = f16(x[b].dmin);
        for (int s = 0; s < NS; ++s) {
            const int r = r0 + s * P;
            acc[s] = V::fma(V::scale(dx, &a.d[b * k + r]), V::cvt(sumi[s]), acc[s]);
            for (int p = 0; p < P; ++p) {
                const float dmin = -a.d[b * k + r + p] * dmx;
                const __m128i prod = k_min_products(mins16, a.bsums.data() + (b * k + r + p) * 16);
                if constexpr (KT == KType::Q4) {
                    acc_m[s * P + p] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[s * P + p]);
                } else {
                    const __m128i h = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
                    const int tot = _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 1)));
                    summ[s * P + p] = std::fma(dmin, (float) tot, summ[s * P + p]);
                }
            }
        }
    }
    for (int s = 0; s < NS; ++s) {
        float v[P];
        V::hsum(acc[s], v);
        for (int p = 0; p < P; ++p) {
            const int r = r0 + s * P + p;
            if (r >= k) break;  // the phantom row
            float extra;
            if constexpr (KT == KType::Q4) {
                __m128 m = acc_m[s * P + p];
                m = _mm_add_ps(m, _mm_movehl_ps(m, m));
                extra = _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
            } else {
                extra = summ[s * P + p];
            }
            out[r * ldo] = v[p] + extra;
        }
    }
}

// Byte operations on 256- or 512-bit registers, for decoders written once for both widths.
inline __m256i vand(__m256i a, __m256i b) { return _mm256_and_si256(a, b); }
inline __m256i vor(__m256i a, __m256i b) { return _mm256_or_si256(a, b); }
inline __m256i vset8(__m256i, char v) { return _mm256_set1_epi8(v); }
template <int N> __m256i vshl16(__m256i a) { return _mm256_slli_epi16(a, N); }
template <int N> __m256i vshr16(__m256i a) { return _mm256_srli_epi16(a, N); }
#ifdef KE_TILES_AVX512
inline __m512i vand(__m512i a, __m512i b) { return _mm512_and_si512(a, b); }
inline __m512i vor(__m512i a, __m512i b) { return _mm512_or_si512(a, b); }
inline __m512i vset8(__m512i, char v) { return _mm512_set1_epi8(v); }
template <int N> __m512i vshl16(__m512i a) { return _mm512_slli_epi16(a, N); }
template <int N> __m512i vshr16(__m512i a) { return _mm512_srli_epi16(a, N); }
#endif

// Q6_K's four 32-element chunks of half a super-block (elements 128h + 32t + l, t = 0..3): the low
// 4 bits from ql (l1 = its first 32 bytes, l2 the next 32), bits 2t, 2t+1 of qh[l] on top (0..63).
// Per 256-bit half when VI is 512 bits wide (two rows).
template <class VI>
void q6k_chunks(VI l1, VI l2, VI qh, VI q[4]) {
    const VI m15 = vset8(l1, 0x0F), m3 = vset8(l1, 3);
    q[0] = vor(vand(l1, m15), vshl16<4>(vand(qh, m3)));
    q[1] = vor(vand(l2, m15), vshl16<4>(vand(vshr16<2>(qh), m3)));
    q[2] = vor(vand(vshr16<4>(l1), m15), vshl16<4>(vand(vshr16<4>(qh), m3)));
    q[3] = vor(vand(vshr16<4>(l2), m15), vshl16<4>(vand(vshr16<6>(qh), m3)));
}

template <class V, int NS>
void tile_q6k(const uint8_t * w, const QuantizedRows & a, int r0, float * out, int64_t ldo) {
    constexpr int P = V::P;
    const int k = a.k;
    const BlockQ6_K * x = (const BlockQ6_K *) w;
    typename V::F acc[NS];
    for (int s = 0; s < NS; ++s) acc[s] = V::fzero();
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        prefetch_ahead(x + b, sizeof(x[b]));
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) x[b].scales));
        typename V::I sumi[NS];
        for (int s = 0; s < NS; ++s) sumi[s] = V::zero();
        for (int h = 0; h < 2; ++h) {
            const __m256i l1 = _mm256_loadu_si256((const __m256i *) (x[b].ql + 64 * h));
            const __m256i l2 = _mm256_loadu_si256((const __m256i *) (x[b].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *) (x[b].qh + 32 * h));
            __m256i q[4];
            q6k_chunks(l1, l2, qh, q);
            for (int t = 0; t < 4; ++t) {
                const int c = 4 * h + t;  // chunk: sub-blocks 2c (elements 0..15) and 2c+1
                const typename V::I wq = V::bcast(q[t]);
                const typename V::I sv = V::bcast16(_mm256_set_m128i(_mm_set1_epi16(x[b].scales[2 * c + 1]),
                                                                     _mm_set1_epi16(x[b].scales[2 * c])));
                for (int s = 0; s < NS; ++s) {
                    const int r = r0 + s * P;
                    sumi[s] = V::add(sumi[s], V::madd(sv, V::dot_u(wq, V::load(a.chunk(b * 8 + c, r)))));
                }
            }
        }
        const float dx = f16(x[b].d);
        const typename V::I scv = V::bcast16(sc16);
        for (int s = 0; s < NS; ++s) {
            const int r = r0 + s * P;
            // the -32 offset: 32 * (bsums . scales), lane j over sub-blocks 2j and 2j+1
            const typename V::I off = V::shl5(V::madd(V::load(a.bsums.data() + (b * k + r) * 16), scv));
            acc[s] = V::fma(V::scale(dx, &a.d[b * k + r]), V::cvt(V::sub(sumi[s], off)), acc[s]);
        }
    }
    for (int s = 0; s < NS; ++s) {
        float v[P];
        V::hsum(acc[s], v);
        for (int p = 0; p < P && r0 + s * P + p < k; ++p) out[(r0 + s * P + p) * ldo] = v[p];
    }
}

#ifdef KE_TILES_AVX512
// ---- K-quants, few activation rows: two weight rows per 512-bit register -----------------------
// tile_q45k's and tile_q6k's arithmetic, with weight rows in the low and high halves (as in
// tile_32_weight_pair) instead of activation rows.

// From v's 32 16-bit values (the low row's at 0..15, the high row's at 16..31): each half's value
// `a` in its first 128 bits and `b` in its second.
inline __m512i pick16(__m512i v, int a, int b) {
    const __m256i lo = _mm256_setr_m128i(_mm_set1_epi16((short) a), _mm_set1_epi16((short) b));
    const __m256i hi = _mm256_setr_m128i(_mm_set1_epi16((short) (16 + a)), _mm_set1_epi16((short) (16 + b)));
    return _mm512_permutexvar_epi16(halves_of(lo, hi), v);
}

template <KType KT, int NR>
void tile_q45k_weight_pair(const uint8_t * w0, const uint8_t * w1, const QuantizedRows & a, int r0, float * out0,
                           float * out1, int64_t ldo) {
    using B = std::conditional_t<KT == KType::Q4, BlockQ4_K, BlockQ5_K>;
    const B * x[2] = {(const B *) w0, (const B *) w1};
    const int k = a.k;
    __m512 acc[NR];
    __m128 acc_m[NR][2];  // Q4_K: 4 lanes per (activation row, weight row)
    float summ[NR][2];    // Q5_K: a scalar per (activation row, weight row)
    for (int r = 0; r < NR; ++r) {
        acc[r] = _mm512_setzero_ps();
        for (int h = 0; h < 2; ++h) {
            acc_m[r][h] = _mm_setzero_ps();
            summ[r][h] = 0.0f;
        }
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        prefetch_ahead(x[0] + b, sizeof(B));
        prefetch_ahead(x[1] + b, sizeof(B));
        // 16-bit values: row 0's scales at 0..7 and mins at 8..15, row 1's at 16..23 and 24..31
        const __m512i sc16 = halves_of(k_scales_mins16(x[0][b].scales), k_scales_mins16(x[1][b].scales));
        const __m128i mins16[2] = {_mm512_extracti32x4_epi32(sc16, 1), _mm512_extracti32x4_epi32(sc16, 3)};
        Zmm::I sumi[NR];
        for (int r = 0; r < NR; ++r) sumi[r] = Zmm::zero();
        __m512i hbits = _mm512_setzero_si512();
        if constexpr (KT == KType::Q5) {
            hbits = halves_of(_mm256_loadu_si256((const __m256i *) x[0][b].qh), _mm256_loadu_si256((const __m256i *) x[1][b].qh));
        }
        for (int j = 0; j < 4; ++j) {
            const __m512i bits = halves_of(_mm256_loadu_si256((const __m256i *) (x[0][b].qs + 32 * j)),
                                           _mm256_loadu_si256((const __m256i *) (x[1][b].qs + 32 * j)));
            __m512i lo = _mm512_and_si512(bits, m4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m4);
            if constexpr (KT == KType::Q5) {
                const __m512i x10 = _mm512_set1_epi8(0x10);
                lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(hbits, _mm512_set1_epi8((char) (1 << (2 * j)))), lo, x10);
                hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(hbits, _mm512_set1_epi8((char) (1 << (2 * j + 1)))), hi, x10);
            }
            const __m512i sl = pick16(sc16, 2 * j, 2 * j), sh = pick16(sc16, 2 * j + 1, 2 * j + 1);
            for (int r = 0; r < NR; ++r) {
                const __m512i yl = Zmm::bcast(_mm256_loadu_si256((const __m256i *) a.chunk(b * 8 + 2 * j, r0 + r)));
                const __m512i yh = Zmm::bcast(_mm256_loadu_si256((const __m256i *) a.chunk(b * 8 + 2 * j + 1, r0 + r)));
                sumi[r] = Zmm::add(sumi[r], Zmm::add(Zmm::madd(sl, Zmm::dot_u(lo, yl)), Zmm::madd(sh, Zmm::dot_u(hi, yh))));
            }
        }
        const float dx[2] = {f16(x[0][b].d), f16(x[1][b].d)}, dmx[2] = {f16(x[0][b].dmin), f16(x[1][b].dmin)};
        for (int r = 0; r < NR; ++r) {
            const int64_t slot = b * k + r0 + r;
            const float dy = a.d[slot];
            acc[r] = Zmm::fma(Zmm::pair(dx[0] * dy, dx[1] * dy), Zmm::cvt(sumi[r]), acc[r]);
            for (int h = 0; h < 2; ++h) {
                const float dmin = -dy * dmx[h];
                const __m128i prod = k_min_products(mins16[h], a.bsums.data() + slot * 16);
                if constexpr (KT == KType::Q4) {
                    acc_m[r][h] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[r][h]);
                } else {
                    const __m128i t = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
                    const int tot = _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 1)));
                    summ[r][h] = std::fma(dmin, (float) tot, summ[r][h]);
                }
            }
        }
    }
    for (int r = 0; r < NR; ++r) {
        float v[2];
        Zmm::hsum(acc[r], v);
        for (int h = 0; h < 2; ++h) {
            float extra;
            if constexpr (KT == KType::Q4) {
                __m128 m = acc_m[r][h];
                m = _mm_add_ps(m, _mm_movehl_ps(m, m));
                extra = _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
            } else {
                extra = summ[r][h];
            }
            (h == 0 ? out0 : out1)[(r0 + r) * ldo] = v[h] + extra;
        }
    }
}

template <int NR>
void tile_q6k_weight_pair(const uint8_t * w0, const uint8_t * w1, const QuantizedRows & a, int r0, float * out0,
                          float * out1, int64_t ldo) {
    const BlockQ6_K * x[2] = {(const BlockQ6_K *) w0, (const BlockQ6_K *) w1};
    const int k = a.k;
    __m512 acc[NR];
    for (int r = 0; r < NR; ++r) acc[r] = _mm512_setzero_ps();
    auto both = [&](int64_t b, size_t off) {  // 32 bytes at `off` of each row's block
        return halves_of(_mm256_loadu_si256((const __m256i *) ((const uint8_t *) &x[0][b] + off)),
                         _mm256_loadu_si256((const __m256i *) ((const uint8_t *) &x[1][b] + off)));
    };
    for (int64_t b = 0; b < a.n_blocks; ++b) {
        prefetch_ahead(x[0] + b, sizeof(BlockQ6_K));
        prefetch_ahead(x[1] + b, sizeof(BlockQ6_K));
        // the 16 sub-block scales as 16-bit values: row 0's at 0..15, row 1's at 16..31
        const __m512i sc16 = halves_of(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) x[0][b].scales)),
                                       _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *) x[1][b].scales)));
        Zmm::I sumi[NR];
        for (int r = 0; r < NR; ++r) sumi[r] = Zmm::zero();
        for (int h = 0; h < 2; ++h) {
            const __m512i l1 = both(b, offsetof(BlockQ6_K, ql) + 64 * h);
            const __m512i l2 = both(b, offsetof(BlockQ6_K, ql) + 64 * h + 32);
            const __m512i qh = both(b, offsetof(BlockQ6_K, qh) + 32 * h);
            __m512i q[4];
            q6k_chunks(l1, l2, qh, q);
            for (int t = 0; t < 4; ++t) {
                const int c = 4 * h + t;  // chunk: sub-blocks 2c (elements 0..15) and 2c+1
                const __m512i sv = pick16(sc16, 2 * c, 2 * c + 1);
                for (int r = 0; r < NR; ++r) {
                    const __m512i y = Zmm::bcast(_mm256_loadu_si256((const __m256i *) a.chunk(b * 8 + c, r0 + r)));
                    sumi[r] = Zmm::add(sumi[r], Zmm::madd(sv, Zmm::dot_u(q[t], y)));
                }
            }
        }
        const float dx[2] = {f16(x[0][b].d), f16(x[1][b].d)};
        for (int r = 0; r < NR; ++r) {
            const int64_t slot = b * k + r0 + r;
            // the -32 offset: 32 * (bsums . scales), lane j over sub-blocks 2j and 2j+1
            const __m512i bs = Zmm::bcast(_mm256_loadu_si256((const __m256i *) (a.bsums.data() + slot * 16)));
            const __m512i off = Zmm::shl5(Zmm::madd(bs, sc16));
            acc[r] = Zmm::fma(Zmm::pair(dx[0] * a.d[slot], dx[1] * a.d[slot]), Zmm::cvt(Zmm::sub(sumi[r], off)), acc[r]);
        }
    }
    for (int r = 0; r < NR; ++r) {
        float v[2];
        Zmm::hsum(acc[r], v);
        out0[(r0 + r) * ldo] = v[0];
        out1[(r0 + r) * ldo] = v[1];
    }
}
#endif

// ---- drivers ------------------------------------------------------------------------------------

struct Q4_K { static constexpr KType K = KType::Q4; };
struct Q5_K { static constexpr KType K = KType::Q5; };
struct Q6_K {};

#ifdef KE_TILES_AVX512
template <class T, int NR>
void weight_pair(const uint8_t * w0, const uint8_t * w1, const QuantizedRows & a, int r0, float * out0, float * out1,
                 int64_t ldo) {
    if constexpr (std::is_same_v<T, Q6_K>) {
        tile_q6k_weight_pair<NR>(w0, w1, a, r0, out0, out1, ldo);
    } else if constexpr (std::is_same_v<T, Q4_K> || std::is_same_v<T, Q5_K>) {
        tile_q45k_weight_pair<T::K, NR>(w0, w1, a, r0, out0, out1, ldo);
    } else {
        tile_32_weight_pair<T, NR>(w0, w1, a, r0, out0, out1, ldo);
    }
}

// Weight rows [i0, i1) against activation rows [r0, r0 + NR), in pairs (i, i + half): two long
// sequential streams of weights. Pairs of neighbouring rows read the weights as two interleaved
// streams that the hardware prefetchers lose: 3.3x slower for Q8_0's 612-byte rows on a Zen 5.
template <class T, int NR>
void run_weight_pairs(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, int r0,
                      float * out, int64_t ldo) {
    const int64_t half = (i1 - i0) / 2;
    for (int64_t i = i0; i < i0 + half; ++i) {
        weight_pair<T, NR>(w + i * row_bytes, w + (i + half) * row_bytes, a, r0, out + i, out + i + half, ldo);
    }
    if ((i1 - i0) % 2 == 0) return;
    const uint8_t * last = w + (i1 - 1) * row_bytes;
    for (int r = r0; r < r0 + NR; ++r) {
        if constexpr (std::is_same_v<T, Q6_K>) {
            tile_q6k<Ymm, 1>(last, a, r, out + i1 - 1, ldo);
        } else if constexpr (std::is_same_v<T, Q4_K> || std::is_same_v<T, Q5_K>) {
            tile_q45k<T::K, Ymm, 1>(last, a, r, out + i1 - 1, ldo);
        } else {
            tile_32<T, Ymm, 1, 1>(last, 0, a, r, out + i1 - 1, 0, ldo);
        }
    }
}
#endif

// Weight rows [i0, i1) against the activation rows [r0, r0 + NS * V::P)
template <class T, class V, int NS>
void run_rows(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, int r0,
              float * out, int64_t ldo) {
    if constexpr (NS * V::P > 8) {
        return;  // passes take at most 8 rows (never instantiated for use)
    } else if constexpr (std::is_same_v<T, Q6_K>) {
        for (int64_t i = i0; i < i1; ++i) tile_q6k<V, NS>(w + i * row_bytes, a, r0, out + i, ldo);
    } else if constexpr (std::is_same_v<T, Q4_K> || std::is_same_v<T, Q5_K>) {
        for (int64_t i = i0; i < i1; ++i) tile_q45k<T::K, V, NS>(w + i * row_bytes, a, r0, out + i, ldo);
    } else {
        constexpr int rows = NS * V::P;
        // one row (here: the 9th of a batch; a batch of one takes x86_few.h's tile_one_row_4w):
        // four weight rows for every type (four FMA chains in flight). Q8_0 kept one from the time
        // a tile's rows were neighbours; q apart, four on an AVX2-only Zen 3: the head's shape
        // 1.9x faster (one thread), a plain step of the default model 0.87x the time
        constexpr int NW = rows == 1 ? 4 : std::is_same_v<T, Q8_0> ? 1 : rows == 2 ? 2 : 1;
        // the NW rows of a tile are q apart: NW long sequential streams of weights (neighbouring
        // rows interleave their streams, which the hardware prefetchers lose)
        const int64_t q = (i1 - i0) / NW;
        for (int64_t i = i0; i < i0 + q; ++i) {
            tile_32<T, V, NW, NS>(w + i * row_bytes, q * row_bytes, a, r0, out + i, q, ldo);
        }
        for (int64_t i = i0 + NW * q; i < i1; ++i) tile_32<T, V, 1, NS>(w + i * row_bytes, 0, a, r0, out + i, 0, ldo);
    }
}

template <class T, class V>
void run_packs(int ns, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, int r0,
               float * out, int64_t ldo) {
    switch (ns) {
        case 1: return run_rows<T, V, 1>(w, row_bytes, i0, i1, a, r0, out, ldo);
        case 2: return run_rows<T, V, 2>(w, row_bytes, i0, i1, a, r0, out, ldo);
        case 3: return run_rows<T, V, 3>(w, row_bytes, i0, i1, a, r0, out, ldo);
        case 4: return run_rows<T, V, 4>(w, row_bytes, i0, i1, a, r0, out, ldo);
        case 5: return run_rows<T, V, 5>(w, row_bytes, i0, i1, a, r0, out, ldo);
        case 6: return run_rows<T, V, 6>(w, row_bytes, i0, i1, a, r0, out, ldo);
        case 7: return run_rows<T, V, 7>(w, row_bytes, i0, i1, a, r0, out, ldo);
        case 8: return run_rows<T, V, 8>(w, row_bytes, i0, i1, a, r0, out, ldo);
        default: return;
    }
}

// Up to 8 activation rows per pass over a weight row; the passes for k > 8 take slices of 16
// weight rows in turn, so that the second pass reads the weights from L1. One pass takes all rows.
constexpr int ROWS_PER_PASS = 8;
constexpr int64_t WEIGHT_ROWS_PER_SLICE = 16;

template <class T, class Pass>
void run_type(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, float * out,
              int64_t ldo, Pass pass) {
    const int64_t slice = a.k > ROWS_PER_PASS ? WEIGHT_ROWS_PER_SLICE : std::max<int64_t>(i1 - i0, 1);
    for (int64_t ib = i0; ib < i1; ib += slice) {
        const int64_t ie = std::min(ib + slice, i1);
        for (int r0 = 0; r0 < a.k; r0 += ROWS_PER_PASS) {
            pass.template run<T>(std::min(ROWS_PER_PASS, a.k - r0), w, row_bytes, ib, ie, a, r0, out, ldo);
        }
    }
}

template <class Pass>
void run_any(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a,
             float * out, int64_t ldo, Pass pass) {
    switch (type) {
        case GGML_TYPE_Q4_0: return run_type<Q4_0>(w, row_bytes, i0, i1, a, out, ldo, pass);
        case GGML_TYPE_Q4_1: return run_type<Q4_1>(w, row_bytes, i0, i1, a, out, ldo, pass);
        case GGML_TYPE_Q5_0: return run_type<Q5_0>(w, row_bytes, i0, i1, a, out, ldo, pass);
        case GGML_TYPE_Q5_1: return run_type<Q5_1>(w, row_bytes, i0, i1, a, out, ldo, pass);
        case GGML_TYPE_Q8_0: return run_type<Q8_0>(w, row_bytes, i0, i1, a, out, ldo, pass);
        case GGML_TYPE_Q4_K: return run_type<Q4_K>(w, row_bytes, i0, i1, a, out, ldo, pass);
        case GGML_TYPE_Q5_K: return run_type<Q5_K>(w, row_bytes, i0, i1, a, out, ldo, pass);
        case GGML_TYPE_Q6_K: return run_type<Q6_K>(w, row_bytes, i0, i1, a, out, ldo, pass);
        default: return;
    }
}

// One activation row per 256-bit register (the AVX2 and AVX-VNNI paths).
struct YmmPass {
    template <class T>
    void run(int nr, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, int r0,
             float * out, int64_t ldo) const {
        run_packs<T, Ymm>(nr, w, row_bytes, i0, i1, a, r0, out, ldo);
    }
};

#ifdef KE_TILES_AVX512
// Two activation rows per 512-bit register, the weight chunk broadcast to both halves. An odd
// last row pairs with the phantom row past the batch (QuantizedRows' padding: computed, never
// stored), so that the weights are read in one pass (a second pass for the odd row made 3 rows
// cost ~1.5x 4). Up to 4 rows pair weight rows instead (tile_32_weight_pair and the K-quants').
struct Avx512Pass {
    template <class T>
    void run(int nr, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, int r0,
             float * out, int64_t ldo) const {
        // up to 4 rows: the default model's matmuls, single-threaded on a Zen 5, 2 / 3 / 4 rows
        // 16 / 22 / 10% faster than with activation-row pairs; 6 rows the same, 8 slower
        switch (nr) {
            case 1: return run_weight_pairs<T, 1>(w, row_bytes, i0, i1, a, r0, out, ldo);
            case 2: return run_weight_pairs<T, 2>(w, row_bytes, i0, i1, a, r0, out, ldo);
            case 3: return run_weight_pairs<T, 3>(w, row_bytes, i0, i1, a, r0, out, ldo);
            case 4: return run_weight_pairs<T, 4>(w, row_bytes, i0, i1, a, r0, out, ldo);
            default: return run_packs<T, Zmm>((nr + 1) / 2, w, row_bytes, i0, i1, a, r0, out, ldo);
        }
    }
};
#endif
