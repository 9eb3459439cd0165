// ggml's quantized block layouts (ggml-common.h is not installed with llama-cpp-python), and the
// layout our kernels read quantized activations in. The sizes are checked against ggml's type
// traits at run time (kernels::check_layouts), so a ggml that changes a layout is refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ke::kernels {

constexpr int QK = 32;     // elements per block of the 32-element types (Q4_0 ... Q8_1)
constexpr int QK_K = 256;  // elements per super-block of the K-quants
constexpr int MAX_ROWS = 16;  // activation rows per product

using half = uint16_t;  // IEEE fp16 bits

struct BlockQ4_0 { half d; uint8_t qs[QK / 2]; };
struct BlockQ4_1 { half d, m; uint8_t qs[QK / 2]; };
struct BlockQ5_0 { half d; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ5_1 { half d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ8_0 { half d; int8_t qs[QK]; };
struct BlockQ8_1 { half d, s; int8_t qs[QK]; };
// scales: 8 sub-block scales and 8 mins, 6 bits each, packed in 12 bytes
struct BlockQ4_K { half d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; };
struct BlockQ5_K { half d, dmin; uint8_t scales[12]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
struct BlockQ6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; half d; };
struct BlockQ8_K { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; };

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36 &&
              sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 &&
              sizeof(BlockQ8_K) == 292, "block layouts must match ggml's");

// Activation rows quantized as ggml quantizes them (q8_0, q8_1 or q8_K, by ggml's own from_float),
// unpacked for reading all k rows of one weight block together:
//   qs:    int8 [n_chunks][k][32]   chunk c (elements 32c..32c+31) of row r at (c*k + r)*32
//   d:     f32  [n_blocks][k]       the block's scale (fp16 widened, or q8_K's f32)
//   s:     f32  [n_blocks][k]       q8_1 only: d * sum(qs), as stored (fp16 widened)
//   bsums: i16  [n_blocks][k][16]   q8_K only: sums of 16 consecutive quants
//   Past the last row: d and s have PAD slots more (8-wide loads), qs and bsums one row more (a
//   512-bit pack's odd last row is paired with this phantom row, computed and never stored).
struct QuantizedRows {
    static constexpr size_t PAD = 8;

    int act_type = 0;        // ggml_type of the quantization (Q8_0, Q8_1, Q8_K)
    int k = 0;               // rows
    int64_t n = 0;           // elements per row
    int64_t n_blocks = 0;    // blocks per row (of 32, or 256 for q8_K)
    std::vector<int8_t> qs;
    std::vector<float> d;
    std::vector<float> s;
    std::vector<int16_t> bsums;

    const int8_t * chunk(int64_t c, int r) const { return qs.data() + (c * k + r) * QK; }

    // Sizes the arrays (with their padding) for k rows of n elements quantized as act_type.
    void resize(int act_type_, int k_, int64_t n_, bool q8_k, bool q8_1) {
        act_type = act_type_;
        k = k_;
        n = n_;
        n_blocks = n / (q8_k ? QK_K : QK);
        qs.resize((size_t) ((n / QK) * k + 1) * QK);
        d.resize((size_t) (n_blocks * k) + PAD);
        s.resize(q8_1 ? (size_t) (n_blocks * k) + PAD : 0);
        bsums.resize(q8_k ? (size_t) (n_blocks * k + 1) * 16 : 0);
    }
};

}  // namespace ke::kernels
