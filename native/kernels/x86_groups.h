// Lane-group tiles for the 32-element types: a register of W int32 lanes (W = 8 in 256 bits, 16
// in 512) holds L of the 8 lanes of each of W / L activation rows (L = 1: lane t of W rows; L = 8
// in 256 bits: ggml's own layout, one row). Whatever L, each output sees ggml's one-row
// arithmetic: per block and lane one integer dot of four bytes, one convert, one FMA with the scale
// dx*dy (a product rounded once), and at the end ggml's hsum8 order and the min term. So a row
// costs those three operations per lane and little else, while the per-block work (the scale
// dx*dy of W / L rows is one multiply, the min term one FMA, the block's decoding) is shared; L
// only decides how much of a register the padding rows waste.
//
// Two phases per tile of NW weight rows: the rows' blocks are decoded into a small buffer (the
// operand bytes, dx and the min), then the products read them from L1 with broadcast loads (a
// load port, no shuffle). Decoding in the same loop as the products let the compiler rebuild each
// broadcast from the register with shuffles, or spill the accumulators (the lane tiles before
// these stored every accumulator once per block: ~2x slower).
//
// On the Zen 5 measured (AMD EPYC, 2 vCPUs), vpdpbusd and the FMA share two ports, so a lane's
// dot + convert + FMA takes ~1 cycle per 8 lanes in either width; 512-bit registers still win
// there (half the instructions and broadcast loads per row).
//
// Included after x86_tiles.h (Ymm, the block decoders), inside an anonymous namespace.

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

// ---- registers ---------------------------------------------------------------------------------

// W int32/f32 lanes per register; bcast<L>: 4L bytes at p, repeated over the register
struct Y8 {
    static constexpr int W = 8;
    using I = __m256i;
    using F = __m256;
    static I load(const int32_t * p) { return _mm256_load_si256((const __m256i *) p); }
    static F loadf(const float * p) { return _mm256_load_ps(p); }
    static F set1f(float v) { return _mm256_set1_ps(v); }
    static F fzero() { return _mm256_setzero_ps(); }
    static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F add(F a, F b) { return _mm256_add_ps(a, b); }
    static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
    static F cvt(I a) { return _mm256_cvtepi32_ps(a); }
    static void store(float * p, F v) { _mm256_store_ps(p, v); }
    static I dot_u(I w, I y) { return Ymm::dot4_u(w, y); }  // per lane: four u8 x s8 products
    static I sign(I y, I s) { return _mm256_sign_epi8(y, s); }
    static F movehdup(F a) { return _mm256_movehdup_ps(a); }
    static F hi_pairs(F a) { return _mm256_permute_ps(a, _MM_SHUFFLE(3, 2, 3, 2)); }
    static F swap128(F a) { return _mm256_permute2f128_ps(a, a, 1); }
#ifdef KE_TILES_VNNI
    static I dot_c(I c, I w, I y) { return dpbusd256(c, w, y); }
#endif
    template <int L>
    static I bcast(const uint8_t * p) {
        if constexpr (L == 1) {
            int32_t v;
            std::memcpy(&v, p, 4);
            return _mm256_set1_epi32(v);
        } else if constexpr (L == 2) {
            long long v;
            std::memcpy(&v, p, 8);
            return _mm256_set1_epi64x(v);
        } else if constexpr (L == 4) {
            return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) p));
        } else {
            return _mm256_load_si256((const __m256i *) p);
        }
    }
};

#if defined(KE_TILES_VNNI) && defined(KE_TILES_AVX512)
struct Z16 {
    static constexpr int W = 16;
    using I = __m512i;
    using F = __m512;
    static I load(const int32_t * p) { return _mm512_load_si512(p); }
    static F loadf(const float * p) { return _mm512_load_ps(p); }
    static F set1f(float v) { return _mm512_set1_ps(v); }
    static F fzero() { return _mm512_setzero_ps(); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F add(F a, F b) { return _mm512_add_ps(a, b); }
    static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static F cvt(I a) { return _mm512_cvtepi32_ps(a); }
    static void store(float * p, F v) { _mm512_store_ps(p, v); }
    static I dot_u(I w, I y) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, y); }
    static I dot_c(I c, I w, I y) { return _mm512_dpbusd_epi32(c, w, y); }
    static I sign(I y, I) { return y; }  // never used: with VNNI no type takes the sign trick
    template <int L>
    static I bcast(const uint8_t * p) {
        if constexpr (L == 1) {
            int32_t v;
            std::memcpy(&v, p, 4);
            return _mm512_set1_epi32(v);
        } else if constexpr (L == 2) {
            long long v;
            std::memcpy(&v, p, 8);
            return _mm512_set1_epi64(v);
        } else if constexpr (L == 4) {
            return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *) p));
        } else {
            return _mm512_broadcast_i64x4(_mm256_load_si256((const __m256i *) p));
        }
    }
    static F movehdup(F a) { return _mm512_movehdup_ps(a); }
    static F hi_pairs(F a) { return _mm512_permute_ps(a, _MM_SHUFFLE(3, 2, 3, 2)); }  // per 128 bits: a2, a3, a2, a3
    static F swap128(F a) { return _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(2, 3, 0, 1)); }  // the 128-bit halves of each 256
};
#endif

// ---- activation rows in lane groups ------------------------------------------------------------

// The k rows in G groups of RW = W / L rows (the padding rows: computed, never stored), each
// group in NT = 8 / L registers of W lanes. For block b, group g and register t, lane p holds the
// row's lane t * L + p % L of row g * RW + p / L:
//   y, c: int32 [n_blocks][G][NT][W]  c: -bias * (the sum of the lane's four bytes), with a bias only
//   d, s: f32   [n_blocks][G][W]      the row's scale (and q8_1 sum) at each of its L positions
struct GroupRows {
    int G = 0;
    int64_t n_blocks = 0;
    int32_t * y = nullptr;
    int32_t * c = nullptr;
    float * d = nullptr;
    float * s = nullptr;

    // Per block and group, the RW x NT transpose of 4L-byte elements: row rho's element t (lanes
    // tL..tL+L-1) to register t, position rho * L.
    template <int W, int L>
    void build(const QuantizedRows & a, int bias) {
        constexpr int RW = W / L, NT = 8 / L;
        const int k = a.k;
        G = (k + RW - 1) / RW;
        n_blocks = a.n_blocks;
        const size_t ny = (size_t) (n_blocks * G * NT * W), nd = (size_t) (n_blocks * G * W);
        y = aligned(y_buf, ny);
        c = bias ? aligned(c_buf, ny) : nullptr;
        d = aligned(d_buf, nd);
        s = a.s.empty() ? nullptr : aligned(s_buf, nd);
        for (int64_t b = 0; b < n_blocks; ++b) {
            for (int g = 0; g < G; ++g) {
                int32_t * yg = y + (b * G + g) * NT * W;
                float * dg = d + (b * G + g) * W;
                float * sg = s ? s + (b * G + g) * W : nullptr;
                for (int rho = 0; rho < RW; ++rho) {
                    const int r = g * RW + rho;
                    const int8_t * q = a.chunk(b, r < k ? r : k);  // past the rows: any bytes, d = 0
                    for (int t = 0; t < NT; ++t) std::memcpy(yg + t * W + rho * L, q + 4 * L * t, 4 * L);
                    for (int l = 0; l < L; ++l) {
                        dg[rho * L + l] = r < k ? a.d[(size_t) (b * k + r)] : 0.0f;
                        if (sg) sg[rho * L + l] = r < k ? a.s[(size_t) (b * k + r)] : 0.0f;
                    }
                }
                if (c) {
                    // -bias * (the sum of each lane's four bytes), from the transposed lanes
                    const __m256i ones = _mm256_set1_epi8(1);
                    const __m128i sh = _mm_cvtsi32_si128(__builtin_ctz((unsigned) bias));
                    for (int i = 0; i < NT * W; i += 8) {
                        const __m256i v = _mm256_load_si256((const __m256i *) (yg + i));
                        const __m256i sum = _mm256_madd_epi16(_mm256_maddubs_epi16(ones, v), _mm256_set1_epi16(1));
                        _mm256_store_si256((__m256i *) (c + (b * G + g) * NT * W + i),
                                           _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_sll_epi32(sum, sh)));
                    }
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

// ---- decoded weight rows -----------------------------------------------------------------------

// NW weight rows' blocks as the products read them:
//   u:  uint8 [NW][n_blocks][32]  the unsigned operand: q, q + BIAS, or |q| (sign trick)
//   sg: int8  [NW][n_blocks][32]  q itself (sign trick only: the activation takes its signs)
//   dm: f32 [NW][n_blocks][2]     the block's scale and min (one 8-byte store per block)
struct DecodedRows {
    int64_t n_blocks = 0;
    uint8_t * u = nullptr;
    uint8_t * sg = nullptr;
    float * dm = nullptr;

    void size(int nw, int64_t n_blocks_) {
        n_blocks = n_blocks_;
        u = (uint8_t *) aligned(u_buf, (size_t) (nw * n_blocks * 32));
        sg = (uint8_t *) aligned(sg_buf, (size_t) (nw * n_blocks * 32));
        dm = (float *) aligned(dm_buf, (size_t) (nw * n_blocks * 8));
    }

  private:
    std::vector<uint8_t> u_buf, sg_buf, dm_buf;

    static uint8_t * aligned(std::vector<uint8_t> & buf, size_t n) {
        buf.resize(n + 64);
        return (uint8_t *) (((uintptr_t) buf.data() + 63) & ~(uintptr_t) 63);
    }
};

// nw weight rows from w (row_bytes apart) into D's first slots
template <class T>
void decode_rows(const uint8_t * w, size_t row_bytes, int nw, DecodedRows & D) {
    using B = typename T::Block;
    constexpr int BIAS = lane_bias<T>();
    const int64_t nb = D.n_blocks;
    for (int wi = 0; wi < nw; ++wi) {
        const B * x = (const B *) (w + wi * row_bytes);
        // local restrict pointers: the stores may not alias the weights, so nothing is reloaded
        uint8_t * __restrict u = D.u + wi * nb * 32;
        uint8_t * __restrict sg = D.sg + wi * nb * 32;
        float * __restrict dm = D.dm + wi * nb * 2;
        for (int64_t b = 0; b < nb; ++b) {
            int dm_bits;
            std::memcpy(&dm_bits, &x[b], 4);
            _mm_storel_pi((__m64 *) (dm + 2 * b), _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits)));  // d, and m or junk
            __m256i q;
            if constexpr (BIAS == 128) {
                q = _mm256_xor_si256(T::quants(x[b]), _mm256_set1_epi8((char) 0x80));
            } else if constexpr (BIAS > 0) {
                q = T::biased(x[b]);
            } else {
                q = T::quants(x[b]);
            }
            if constexpr (T::SIGNED && BIAS == 0) {  // the sign trick
                _mm256_store_si256((__m256i *) (sg + 32 * b), q);
                q = _mm256_sign_epi8(q, q);
            }
            _mm256_store_si256((__m256i *) (u + 32 * b), q);
        }
    }
}

// ggml's hsum8 of each row, ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)), at the row's first position:
// lane j of a row sits in register j / L (at the row's position + j % L)
template <class V, int L>
inline typename V::F hsum_lanes(const typename V::F * a) {
    typename V::F u;  // (a0+a4) + (a2+a6) at the row's first position, (a1+a5) + (a3+a7) at its second
    if constexpr (L == 1) {
        return V::add(V::add(V::add(a[0], a[4]), V::add(a[2], a[6])), V::add(V::add(a[1], a[5]), V::add(a[3], a[7])));
    } else if constexpr (L == 2) {
        u = V::add(V::add(a[0], a[2]), V::add(a[1], a[3]));
    } else {
        const typename V::F s = L == 4 ? V::add(a[0], a[1]) : V::add(a[0], V::swap128(a[0]));  // a0+a4, a1+a5, a2+a6, a3+a7
        u = V::add(s, V::hi_pairs(s));
    }
    return V::add(u, V::movehdup(u));
}

// ---- the tile: NW decoded weight rows x group g --------------------------------------------------

// out[(g * RW + rho) * ldo + wi] for the group's real rows rho. The next tile's weight bytes
// [next, next + next_bytes) are prefetched meanwhile: the decoding then finds them in L1.
template <class T, class V, int L, int NW>
void tile_group(const DecodedRows & D, const GroupRows & A, int g, int k, float * out, int64_t ldo,
                const uint8_t * next, size_t next_bytes) {
    constexpr int W = V::W, RW = W / L, NT = 8 / L;
    constexpr int BIAS = lane_bias<T>();
    constexpr bool SIGN_TRICK = T::SIGNED && BIAS == 0;
    const int64_t nb = D.n_blocks;
    const int G = A.G;
    typename V::F acc[NW][NT], summ[NW];
    for (int wi = 0; wi < NW; ++wi) {
        for (int t = 0; t < NT; ++t) acc[wi][t] = V::fzero();
        summ[wi] = V::fzero();
    }
    for (int64_t b = 0; b < nb; ++b) {
        for (size_t l = (size_t) b * 64; l < next_bytes; l += (size_t) nb * 64) _mm_prefetch((const char *) next + l, _MM_HINT_T0);
        const int64_t bg = b * G + g;
        const typename V::F dy = V::loadf(A.d + bg * W);
        typename V::F scale[NW];
        for (int wi = 0; wi < NW; ++wi) {
            scale[wi] = V::mul(V::set1f(D.dm[(wi * nb + b) * 2]), dy);  // dx * dy, rounded once
            if constexpr (T::HAS_MIN) summ[wi] = V::fma(V::set1f(D.dm[(wi * nb + b) * 2 + 1]), V::loadf(A.s + bg * W), summ[wi]);
        }
        const int32_t * yb = A.y + bg * NT * W;
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
            typename V::I y = V::load(yb + t * W);
            if constexpr (NW > 1) asm("" : "+v"(y));  // one load for the NW rows (not one per row)
            for (int wi = 0; wi < NW; ++wi) {
                const size_t off = (size_t) ((wi * nb + b) * 32 + 4 * t * L);
                const typename V::I wu = V::template bcast<L>(D.u + off);
                typename V::I p;
                if constexpr (BIAS > 0) {
#ifdef KE_TILES_VNNI
                    p = V::dot_c(V::load(A.c + bg * NT * W + t * W), wu, y);
#endif
                } else if constexpr (SIGN_TRICK) {
                    p = V::dot_u(wu, V::sign(y, V::template bcast<L>(D.sg + off)));
                } else {
                    p = V::dot_u(wu, y);
                }
                acc[wi][t] = V::fma(scale[wi], V::cvt(p), acc[wi][t]);
            }
        }
    }
    for (int wi = 0; wi < NW; ++wi) {
        alignas(64) float v[W], m[W];
        V::store(v, hsum_lanes<V, L>(acc[wi]));
        V::store(m, summ[wi]);
        for (int rho = 0; rho < RW && g * RW + rho < k; ++rho) {
            out[(g * RW + rho) * ldo + wi] = T::HAS_MIN ? v[rho * L] + m[rho * L] : v[rho * L];
        }
    }
}

// Weight rows [i0, i1) against all a.k rows, NW neighbouring rows per tile: a tile reads its rows
// whole, one after another (one sequential stream), then serves every group from L1.
template <class T, class V, int L, int NW>
void run_groups(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, float * out,
                int64_t ldo) {
    thread_local GroupRows A;
    thread_local DecodedRows D;
    A.template build<V::W, L>(a, lane_bias<T>());
    D.size(NW, a.n_blocks);
    int64_t i = i0;
    for (; i + NW <= i1; i += NW) {
        decode_rows<T>(w + i * row_bytes, row_bytes, NW, D);
        const size_t next_bytes = (size_t) std::min<int64_t>(NW, i1 - i - NW) * row_bytes;
        for (int g = 0; g < A.G; ++g) {
            tile_group<T, V, L, NW>(D, A, g, a.k, out + i, ldo, w + (i + NW) * row_bytes, g == 0 ? next_bytes : 0);
        }
    }
    for (; i < i1; ++i) {
        decode_rows<T>(w + i * row_bytes, row_bytes, 1, D);
        for (int g = 0; g < A.G; ++g) tile_group<T, V, L, 1>(D, A, g, a.k, out + i, ldo, nullptr, 0);
    }
}

// The 32-element types through run_groups; false for the others (the caller takes its own path).
template <class V, int L, int NW>
bool run_groups_any(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                    const QuantizedRows & a, float * out, int64_t ldo) {
    switch (type) {
        case GGML_TYPE_Q4_0: run_groups<Q4_0, V, L, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case GGML_TYPE_Q4_1: run_groups<Q4_1, V, L, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case GGML_TYPE_Q5_0: run_groups<Q5_0, V, L, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case GGML_TYPE_Q5_1: run_groups<Q5_1, V, L, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        case GGML_TYPE_Q8_0: run_groups<Q8_0, V, L, NW>(w, row_bytes, i0, i1, a, out, ldo); return true;
        default: return false;
    }
}

// k rows in the groups that waste least, in 256-bit registers: 2 rows as 4 lanes each, 3-4 rows
// as 2, else 1 lane (8 rows per register). REGS: the accumulators a tile may hold (8 with 16
// vector registers).
template <int REGS>
bool run_groups_y8(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                   const QuantizedRows & a, float * out, int64_t ldo) {
    if (a.k <= 2) return run_groups_any<Y8, 4, REGS / 2>(type, w, row_bytes, i0, i1, a, out, ldo);
    if (a.k <= 4) return run_groups_any<Y8, 2, REGS / 4>(type, w, row_bytes, i0, i1, a, out, ldo);
    return run_groups_any<Y8, 1, REGS / 8>(type, w, row_bytes, i0, i1, a, out, ldo);
}

#if defined(KE_TILES_VNNI) && defined(KE_TILES_AVX512)
// The same in 512-bit registers (16 lanes: 2 rows as 8 lanes each, ..., 9-16 rows as 1)
inline bool run_groups_z16(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                           const QuantizedRows & a, float * out, int64_t ldo) {
    if (a.k <= 2) return run_groups_any<Z16, 8, 8>(type, w, row_bytes, i0, i1, a, out, ldo);
    if (a.k <= 4) return run_groups_any<Z16, 4, 8>(type, w, row_bytes, i0, i1, a, out, ldo);
    if (a.k <= 8) return run_groups_any<Z16, 2, 4>(type, w, row_bytes, i0, i1, a, out, ldo);
    return run_groups_any<Z16, 1, 2>(type, w, row_bytes, i0, i1, a, out, ldo);
}
#endif
