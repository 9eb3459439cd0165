// Portable path: plain C++ performing, lane for lane, the arithmetic of the SIMD paths (and of
// ggml's AVX2 vec_dot): per block, 8 integer lane sums (lane j = elements 4j..4j+3 of each 32-element
// chunk), each lane accumulated in f32 with a fused multiply-add, then ggml's horizontal sum. This
// file is compiled with -ffp-contract=off: every fused operation is an explicit std::fma.
#include <cmath>
#include <cstring>

#include "isa_entry.h"

namespace ke::kernels {

namespace {

constexpr int LANES = 8;

float f16(half h) { return ggml_fp16_to_fp32(h); }

// ggml's hsum_float_8: (a0+a4 + a2+a6) + (a1+a5 + a3+a7)
float hsum8(const float a[LANES]) {
    const float r0 = a[0] + a[4], r1 = a[1] + a[5], r2 = a[2] + a[6], r3 = a[3] + a[7];
    return (r0 + r2) + (r1 + r3);
}

// Lane sums of one 32-element chunk: lane j += scale_of(e) * w[e] * y[e] for e in 4j..4j+3
void chunk_lanes(const int8_t * w, const int8_t * y, int32_t lanes[LANES]) {
    for (int j = 0; j < LANES; ++j) {
        int32_t s = 0;
        for (int e = 4 * j; e < 4 * j + 4; ++e) s += (int32_t) w[e] * y[e];
        lanes[j] += s;
    }
}

// One decoded weight block: quants in element order (signed, or unsigned with a separate min)
struct Decoded32 {
    int8_t q[QK];
    float d = 0, m = 0;
};

void decode(const BlockQ4_0 & b, Decoded32 & o) {
    for (int j = 0; j < 16; ++j) {
        o.q[j] = (int8_t) ((b.qs[j] & 0x0F) - 8);
        o.q[j + 16] = (int8_t) ((b.qs[j] >> 4) - 8);
    }
    o.d = f16(b.d);
}
void decode(const BlockQ4_1 & b, Decoded32 & o) {
    for (int j = 0; j < 16; ++j) {
        o.q[j] = (int8_t) (b.qs[j] & 0x0F);
        o.q[j + 16] = (int8_t) (b.qs[j] >> 4);
    }
    o.d = f16(b.d);
    o.m = f16(b.m);
}
template <class B>
void decode5(const B & b, Decoded32 & o, int offset) {
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < 16; ++j) {
        o.q[j] = (int8_t) (((b.qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) - offset);
        o.q[j + 16] = (int8_t) (((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset);
    }
    o.d = f16(b.d);
}
void decode(const BlockQ5_0 & b, Decoded32 & o) { decode5(b, o, 16); }
void decode(const BlockQ5_1 & b, Decoded32 & o) {
    decode5(b, o, 0);
    o.m = f16(b.m);
}
void decode(const BlockQ8_0 & b, Decoded32 & o) {
    std::memcpy(o.q, b.qs, QK);
    o.d = f16(b.d);
}

// The 32-element types: acc += (dx*dy) * lanes per block; with a min: summ += mx * sy in block order
template <class B, bool HAS_MIN>
void rows_32(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, float * out,
             int64_t ldo) {
    const int k = a.k;
    for (int64_t i = i0; i < i1; ++i) {
        const B * x = (const B *) (w + i * row_bytes);
        float acc[MAX_ROWS][LANES] = {};
        float summ[MAX_ROWS] = {};
        Decoded32 dec;
        for (int64_t b = 0; b < a.n_blocks; ++b) {
            decode(x[b], dec);
            for (int r = 0; r < k; ++r) {
                int32_t lanes[LANES] = {};
                chunk_lanes(dec.q, a.chunk(b, r), lanes);
                const float d = dec.d * a.d[b * k + r];
                for (int j = 0; j < LANES; ++j) acc[r][j] = std::fma(d, (float) lanes[j], acc[r][j]);
                if (HAS_MIN) summ[r] = std::fma(dec.m, a.s[b * k + r], summ[r]);
            }
        }
        for (int r = 0; r < k; ++r) out[r * ldo + i] = HAS_MIN ? hsum8(acc[r]) + summ[r] : hsum8(acc[r]);
    }
}

// A K-quant super-block decoded: 256 quants (unsigned), per-32 (Q4_K/Q5_K) or per-16 (Q6_K) scales
struct DecodedK {
    int8_t q[QK_K];
    int32_t scale[QK_K / 16];  // scale of elements 16s..16s+15
    int32_t mins[8];
    float d = 0, dmin = 0;
};

void decode(const BlockQ4_K & b, DecodedK & o) {
    uint8_t sc[8], mn[8];
    unpack_k_scales(b.scales, sc, mn);
    for (int j = 0; j < 4; ++j) {
        for (int l = 0; l < 32; ++l) {
            o.q[64 * j + l] = (int8_t) (b.qs[32 * j + l] & 0x0F);
            o.q[64 * j + 32 + l] = (int8_t) (b.qs[32 * j + l] >> 4);
        }
    }
    for (int s = 0; s < 16; ++s) o.scale[s] = sc[s / 2];
    for (int s = 0; s < 8; ++s) o.mins[s] = mn[s];
    o.d = f16(b.d);
    o.dmin = f16(b.dmin);
}
void decode(const BlockQ5_K & b, DecodedK & o) {
    uint8_t sc[8], mn[8];
    unpack_k_scales(b.scales, sc, mn);
    for (int j = 0; j < 4; ++j) {
        for (int l = 0; l < 32; ++l) {
            o.q[64 * j + l] = (int8_t) ((b.qs[32 * j + l] & 0x0F) | (((b.qh[l] >> (2 * j)) & 1) << 4));
            o.q[64 * j + 32 + l] = (int8_t) ((b.qs[32 * j + l] >> 4) | (((b.qh[l] >> (2 * j + 1)) & 1) << 4));
        }
    }
    for (int s = 0; s < 16; ++s) o.scale[s] = sc[s / 2];
    for (int s = 0; s < 8; ++s) o.mins[s] = mn[s];
    o.d = f16(b.d);
    o.dmin = f16(b.dmin);
}
void decode(const BlockQ6_K & b, DecodedK & o) {
    // quants unsigned (0..63); the -32 offset is applied through the activations' block sums
    for (int h = 0; h < 2; ++h) {
        const uint8_t * ql = b.ql + 64 * h;
        const uint8_t * qh = b.qh + 32 * h;
        int8_t * q = o.q + 128 * h;
        for (int l = 0; l < 32; ++l) {
            q[l] = (int8_t) ((ql[l] & 0x0F) | ((qh[l] & 3) << 4));
            q[l + 32] = (int8_t) ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4));
            q[l + 64] = (int8_t) ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            q[l + 96] = (int8_t) ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
    }
    for (int s = 0; s < 16; ++s) o.scale[s] = b.scales[s];
    o.d = f16(b.d);
}

// K-quants: integer lanes over the whole super-block, one f32 FMA per lane per super-block.
//  Q4_K: + a 4-lane f32 accumulator of dmin * (mins . sub-block sums of the activations)
//  Q5_K: + a scalar one of the same product's total
//  Q6_K: lanes minus 32 * (scales . 16-element sums), lane j taking sub-blocks 2j and 2j+1
enum class KMin { Lanes4, Scalar, Offset32 };

template <class B, KMin MIN>
void rows_k(const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1, const QuantizedRows & a, float * out,
            int64_t ldo) {
    const int k = a.k;
    for (int64_t i = i0; i < i1; ++i) {
        const B * x = (const B *) (w + i * row_bytes);
        float acc[MAX_ROWS][LANES] = {};
        float acc_m[MAX_ROWS][4] = {};
        float summ[MAX_ROWS] = {};
        DecodedK dec;
        for (int64_t b = 0; b < a.n_blocks; ++b) {
            decode(x[b], dec);
            for (int r = 0; r < k; ++r) {
                int32_t lanes[LANES] = {};
                for (int c = 0; c < 8; ++c) {
                    const int8_t * yc = a.chunk(b * 8 + c, r);
                    for (int j = 0; j < LANES; ++j) {
                        const int e0 = 32 * c + 4 * j;  // elements e0..e0+3 share one scale
                        int32_t s = 0;
                        for (int e = 0; e < 4; ++e) s += (int32_t) dec.q[e0 + e] * yc[4 * j + e];
                        lanes[j] += dec.scale[e0 / 16] * s;
                    }
                }
                const float yd = a.d[b * k + r];
                const int16_t * bs = a.bsums.data() + (b * k + r) * 16;
                if (MIN == KMin::Offset32) {
                    for (int j = 0; j < LANES; ++j) {
                        lanes[j] -= 32 * (bs[2 * j] * dec.scale[2 * j] + bs[2 * j + 1] * dec.scale[2 * j + 1]);
                    }
                }
                const float d = yd * dec.d;
                for (int j = 0; j < LANES; ++j) acc[r][j] = std::fma(d, (float) lanes[j], acc[r][j]);
                if (MIN != KMin::Offset32) {
                    const float dmin = -yd * dec.dmin;
                    int32_t prod[4];
                    for (int l = 0; l < 4; ++l) {
                        prod[l] = dec.mins[2 * l] * (bs[4 * l] + bs[4 * l + 1]) +
                                  dec.mins[2 * l + 1] * (bs[4 * l + 2] + bs[4 * l + 3]);
                    }
                    if (MIN == KMin::Lanes4) {
                        for (int l = 0; l < 4; ++l) acc_m[r][l] = std::fma(dmin, (float) prod[l], acc_m[r][l]);
                    } else {
                        summ[r] = std::fma(dmin, (float) ((prod[0] + prod[1]) + (prod[2] + prod[3])), summ[r]);
                    }
                }
            }
        }
        for (int r = 0; r < k; ++r) {
            float v = hsum8(acc[r]);
            if (MIN == KMin::Lanes4) v += (acc_m[r][0] + acc_m[r][2]) + (acc_m[r][1] + acc_m[r][3]);
            if (MIN == KMin::Scalar) v += summ[r];
            out[r * ldo + i] = v;
        }
    }
}

}  // namespace

void matmul_portable(ggml_type type, const uint8_t * w, size_t row_bytes, int64_t i0, int64_t i1,
                     const QuantizedRows & a, float * out, int64_t ldo) {
    switch (type) {
        case GGML_TYPE_Q4_0: return rows_32<BlockQ4_0, false>(w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q4_1: return rows_32<BlockQ4_1, true>(w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q5_0: return rows_32<BlockQ5_0, false>(w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q5_1: return rows_32<BlockQ5_1, true>(w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q8_0: return rows_32<BlockQ8_0, false>(w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q4_K: return rows_k<BlockQ4_K, KMin::Lanes4>(w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q5_K: return rows_k<BlockQ5_K, KMin::Scalar>(w, row_bytes, i0, i1, a, out, ldo);
        case GGML_TYPE_Q6_K: return rows_k<BlockQ6_K, KMin::Offset32>(w, row_bytes, i0, i1, a, out, ldo);
        default: return;
    }
}

}  // namespace ke::kernels
