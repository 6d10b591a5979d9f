/*
 * kern_blocks.h - on-disk quantization block layouts, shared by CPU and CUDA kernels.
 *
 * Each struct is exactly the GGUF/ggml byte layout of one block; the static_asserts
 * pin the sizes so a padding change can never silently misread a model. Scales are
 * IEEE half precision stored as raw uint16_t (C11 has no half type).
 */
#ifndef LLM_KERNELS_KERN_BLOCKS_H
#define LLM_KERNELS_KERN_BLOCKS_H

#include <assert.h>
#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK8_0 32
#define QK5_0 32
#define QK5_1 32
#define QK_K 256 // elements per K-quant super-block
#define K_SCALE_SIZE 12

typedef uint16_t kern_half; // IEEE 754 binary16 bits
typedef uint16_t kern_bf16; // bfloat16 bits

// Q4_0: x = d * (q - 8), q in [0, 16). Low nibbles hold elements 0..15, high 16..31.
typedef struct {
    kern_half d;
    uint8_t qs[QK4_0 / 2];
} blk_q4_0;
static_assert(sizeof(blk_q4_0) == 2 + QK4_0 / 2, "blk_q4_0 size");

// Q4_1: x = d * q + m, q in [0, 16). Same nibble order as Q4_0.
typedef struct {
    kern_half d;
    kern_half m;
    uint8_t qs[QK4_1 / 2];
} blk_q4_1;
static_assert(sizeof(blk_q4_1) == 4 + QK4_1 / 2, "blk_q4_1 size");

// Q8_0: x = d * q, q in [-127, 127].
typedef struct {
    kern_half d;
    int8_t qs[QK8_0];
} blk_q8_0;
static_assert(sizeof(blk_q8_0) == 2 + QK8_0, "blk_q8_0 size");

// Q5_0: x = d * (q - 16), q in [0, 32). The low four bits of q are nibbles in Q4_0's
// order; bit j of qh (little-endian uint32) is bit 4 of element j.
typedef struct {
    kern_half d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} blk_q5_0;
static_assert(sizeof(blk_q5_0) == 2 + 4 + QK5_0 / 2, "blk_q5_0 size");

// Q5_1: x = d * q + m, q in [0, 32). Bits laid out as Q5_0.
typedef struct {
    kern_half d;
    kern_half m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} blk_q5_1;
static_assert(sizeof(blk_q5_1) == 4 + 4 + QK5_1 / 2, "blk_q5_1 size");

// Q4_K: 8 sub-blocks of 32; x = d * sc[j] * q - dmin * m[j], q in [0, 16), sc and m
// 6-bit. scales[12] packs them: for j < 4, sc[j] = scales[j] & 63 and m[j] =
// scales[j + 4] & 63; for j >= 4, the low four bits are the nibbles of scales[j + 4]
// (sc low, m high) and the top two are bits 6..7 of scales[j - 4] (sc) and scales[j]
// (m). Each 32 bytes of qs hold two sub-blocks: low nibbles 2i, high nibbles 2i + 1.
typedef struct {
    kern_half d;    // super-block scale of the sub-block scales
    kern_half dmin; // super-block scale of the sub-block minimums
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} blk_q4_k;
static_assert(sizeof(blk_q4_k) == 4 + K_SCALE_SIZE + QK_K / 2, "blk_q4_k size");

// Q5_K: Q4_K plus a fifth bit: bit i of qh[l] is bit 4 of element 32 * i + l.
typedef struct {
    kern_half d;
    kern_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} blk_q5_k;
static_assert(sizeof(blk_q5_k) == 4 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2, "blk_q5_k size");

// Q6_K: 16 sub-blocks of 16; x = d * scales[j] * (q - 32), q in [0, 64). In each half
// of 128 elements (ql += 64, qh += 32), for l < 32: element l takes ql[l] low nibble and
// qh[l] bits 0..1, element l + 32 ql[l + 32] low and bits 2..3, l + 64 ql[l] high and
// bits 4..5, l + 96 ql[l + 32] high and bits 6..7.
typedef struct {
    uint8_t ql[QK_K / 2];     // low four bits
    uint8_t qh[QK_K / 4];     // high two bits
    int8_t scales[QK_K / 16]; // 8-bit signed sub-block scales
    kern_half d;
} blk_q6_k;
static_assert(sizeof(blk_q6_k) == QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, "blk_q6_k size");

// Q8_K: x = d * q with a float (not half) scale; bsums[j] = sum of qs[16j .. 16j + 16)
// (ggml uses it in dots against K-quants; decoding ignores it).
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} blk_q8_k;
static_assert(sizeof(blk_q8_k) == 4 + QK_K + QK_K / 8, "blk_q8_k size");

#endif
