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

#endif
