/*
 * kern_pack.c - the packed weight layout and the 16-bit activation path of kern_matmul:
 * packing and unpacking, the activation quantizer, the scalar reference and the driver
 * that runs the SIMD kernel.
 *
 * Why: a row-major quantized matrix forces a float conversion per (row, 32-weight
 * block, token), because every block has its own scale: that conversion and the scale
 * multiply cost as much as the float FMAs they replace, so integer dots over row-major
 * blocks barely beat decoding the weights to floats. Packing eight rows so that vector
 * lane i holds row i turns the integer partial sums of eight rows into one vector: one
 * conversion and one FMA per eight rows per block, no horizontal sums at all.
 *
 * The layout of a matrix (Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 with columns % 32 == 0, Q4_K,
 * Q5_K or Q6_K with columns % 256 == 0; rows % 8 == 0): groups of 8 rows, each a run of
 * chunks, one chunk per GGUF block (32 columns; a K-quant super-block: 256), in column
 * order. A chunk is the eight rows' fp16 scales d[8], for Q4_1 and Q5_1 their
 * fp16 minimums m[8], for Q5 the high bits (below), then the quants in "quads" of 32
 * bytes, four bytes (one 32-bit lane) per row:
 *   Q4: quad k (k < 4) holds columns 8k .. 8k + 7. In row i's lane, nibble j of the low
 *       16 bits is column 8k + 2j and nibble j of the high 16 bits column 8k + 2j + 1,
 *       so (lane >> 4j) & 0x000f000f is the pair of columns (8k + 2j, 8k + 2j + 1) as two
 *       16-bit integers, ready for a 16-bit multiply-add with the activation pair.
 *   Q5: the low four bits of each quant in quads exactly as Q4; their fifth bits in one
 *       more 32-byte vector before them, row i's lane holding bit 4k + j of its low 16
 *       bits for column 8k + 2j and of its high 16 bits for column 8k + 2j + 1, so one
 *       16-bit shift by 4k + j - 4 and a mask of 0x10 put a column pair's fifth bits
 *       where its nibbles need them.
 *   Q4_K: a chunk spans a super-block, 256 columns: the eight rows' d[8], dmin[8], their
 *       12 scale bytes transposed (byte s of row i at 8s + i, so one 8-byte load gives
 *       a sub-block's 6-bit scale or minimum bits for all eight rows), then 32 quads in
 *       Q4's layout (quad k: columns 8k .. 8k + 7, sub-block k / 4).
 *   Q5_K: as Q4_K, with eight Q5 fifth-bit vectors (one per sub-block) between the scale
 *       bytes and the quads.
 *   Q6_K: a super-block too: d[8], the 16 int8 sub-block scales transposed (scale s of
 *       row i at 8s + i), per 32-column sub-block two vectors of the quants' bits 4 and
 *       5 (each laid out as Q5's fifth bits), then 32 quads of their low nibbles. The
 *       kernel rebuilds q - 32 in each 16-bit half: no minimum term, and the 16-column
 *       halves of a 32-column block (quads 0-1, 2-3) keep separate sums for their scales.
 *   Q8_0: quad k (k < 8) holds columns 4k .. 4k + 3 as bytes (4k, 4k + 2, 4k + 1, 4k + 3):
 *       the low bytes of the two 16-bit halves are columns (4k, 4k + 1), the high bytes
 *       (4k + 2, 4k + 3), each pair one sign extension away from 16-bit integers.
 * A chunk has exactly the bytes of the eight GGUF blocks it replaces, so a packed matrix
 * is the size of the original, and packing is a permutation (kern_pack_unpack_block
 * inverts it exactly).
 *
 * Activations: each token's row is quantized per 32-element block to 16-bit integers
 * (d = max|x| / 32767, q = round(x / d)), and s = d * sum(q) is kept for the minimum
 * term. A 16-bit activation is within 1/65534 of its block's largest magnitude, 256
 * times finer than 8-bit activations: logits stay within ~1e-4 of the float path.
 *
 * The element, for a weight row and a token: per block b in order, the exact integer
 * dot isum_b (int32: |w| <= 128, |q| <= 32767, 32 products), then
 *   acc = fma((float)isum_b, d_w * d_x, acc);   macc = fma(m_w, s_x, macc)
 * with m_w the Q4_1 or Q5_1 minimum, -8 d_w for Q4_0, -16 d_w for Q5_0, none for Q8_0;
 * y = acc + macc. For Q4_K and Q5_K, block b is sub-block b % 8 of super-block b / 8, with d_w =
 * d * sc and m_w = -(dmin * m), each product exact in float (11 x 6 bits). For Q6_K each
 * half h of block b adds its own exact isum: acc = fma((float)isum_h, (d * sc_h) * d_x, acc). Every
 * path (scalar, SIMD, one token or many, any row range) computes exactly this, so the result is
 * batch and split invariant.
 */
#include "kern_internal.h"
#include "kern_kquants.h"

#include <assert.h>
#include <math.h>
#include <string.h>

bool
kern_pack_supported(llm_dtype t, int64_t n_rows, int64_t n_cols)
{
    bool k = t == LLM_DTYPE_Q4_K || t == LLM_DTYPE_Q5_K || t == LLM_DTYPE_Q6_K;
    return (t == LLM_DTYPE_Q4_0 || t == LLM_DTYPE_Q4_1 || t == LLM_DTYPE_Q5_0 ||
            t == LLM_DTYPE_Q5_1 || t == LLM_DTYPE_Q8_0 || k) &&
           n_rows > 0 && n_rows % 8 == 0 && n_cols > 0 && n_cols % (k ? 256 : 32) == 0;
}

size_t
kern__pack_chunk_bytes(llm_dtype t)
{
    return 8 * kern_type((int)t)->size; // eight GGUF blocks, permuted
}

int64_t
kern__pack_chunk_cols(llm_dtype t)
{
    return kern_type((int)t)->blck; // one GGUF block per row
}

size_t
kern_pack_bytes(llm_dtype t, int64_t n_rows, int64_t n_cols)
{
    return (size_t)(n_rows / 8) * (size_t)(n_cols / kern__pack_chunk_cols(t)) *
           kern__pack_chunk_bytes(t);
}

/* Quant j (0..31) of a GGUF block and its position in a chunk's quads. */
static int
q4_get(const uint8_t *qs, int j)
{
    return j < 16 ? qs[j] & 0x0f : qs[j - 16] >> 4;
}

/* Byte offset in the quads of Q4 column c of lane i, and the shift of its nibble. */
static void
q4_place(int i, int c, int *byte, int *shift)
{
    int k = c / 8, within = c % 8, j = within / 2, half = within % 2;
    int bit = 16 * half + 4 * j;
    *byte = 32 * k + 4 * i + bit / 8;
    *shift = bit % 8;
}

/* Bit of lane i's 32-bit word in a Q5 chunk's high-bit vector that holds column c's
 * fifth bit. */
static int
q5_hi_bit(int c)
{
    int k = c / 8, within = c % 8;
    return 16 * (within % 2) + 4 * k + within / 2;
}

/* Byte offset in the quads of Q8_0 column c of lane i. */
static int
q8_place(int i, int c)
{
    static const int order[4] = {0, 2, 1, 3}; // columns 4k + (0, 1, 2, 3) -> bytes
    return 32 * (c / 4) + 4 * i + order[c % 4];
}

/* Where a chunk's fifth bits (Q5) and quads start. */
static size_t
hi_offset(llm_dtype t)
{
    return t == LLM_DTYPE_Q5_1 ? 32 : 16;
}

static size_t
quads_offset(llm_dtype t)
{
    switch (t) {
    case LLM_DTYPE_Q4_1: return 32;
    case LLM_DTYPE_Q5_0: return 48;
    case LLM_DTYPE_Q5_1: return 64;
    case LLM_DTYPE_Q4_K: return KERN__PK_Q4K_QUADS;
    case LLM_DTYPE_Q5_K: return KERN__PK_Q5K_QUADS;
    case LLM_DTYPE_Q6_K: return KERN__PK_Q6K_QUADS;
    default: return 16;
    }
}

/* Q6_K's quant e (0..63) of a block: in each half of 128 (ql += 64, qh += 32), group g
 * of 32 takes the low (g < 2) or high nibbles of ql[l + 32 (g % 2)] and bits 2g, 2g + 1
 * of qh[l]. q6_put stores one into a zeroed block. */
static int
q6_get(const blk_q6_k *b, int e)
{
    int h = e / 128, g = e % 128 / 32, l = e % 32;
    int lo = b->ql[64 * h + l + 32 * (g % 2)] >> (g < 2 ? 0 : 4) & 0x0f;
    return lo | (b->qh[32 * h + l] >> 2 * g & 3) << 4;
}

static void
q6_put(blk_q6_k *b, int e, int q)
{
    int h = e / 128, g = e % 128 / 32, l = e % 32;
    b->ql[64 * h + l + 32 * (g % 2)] |= (uint8_t)((q & 0x0f) << (g < 2 ? 0 : 4));
    b->qh[32 * h + l] |= (uint8_t)((q >> 4) << 2 * g);
}

static bool
is_q5(llm_dtype t)
{
    return t == LLM_DTYPE_Q5_0 || t == LLM_DTYPE_Q5_1;
}

static uint32_t
lane_word(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void
kern_pack_unpack_block(llm_dtype t, const void *chunk, int lane, void *blk)
{
    const uint8_t *c = chunk, *quads = c + quads_offset(t);
    if (t == LLM_DTYPE_Q6_K) {
        blk_q6_k *b = blk;
        memset(b, 0, sizeof(*b));
        memcpy(&b->d, c + 2 * lane, 2);
        for (int sb = 0; sb < 16; sb++)
            b->scales[sb] = (int8_t)c[KERN__PK_Q6K_SCALES + 8 * sb + lane];
        for (int j = 0; j < 8; j++) {
            uint32_t wa = lane_word(c + KERN__PK_Q6K_BITS + 64 * j + 4 * lane);
            uint32_t wb = lane_word(c + KERN__PK_Q6K_BITS + 64 * j + 32 + 4 * lane);
            for (int l = 0; l < 32; l++) {
                int byte, shift;
                q4_place(lane, l, &byte, &shift);
                int q = (quads[128 * j + byte] >> shift) & 0x0f;
                q |= (int)(wa >> q5_hi_bit(l) & 1u) << 4 | (int)(wb >> q5_hi_bit(l) & 1u) << 5;
                q6_put(b, 32 * j + l, q);
            }
        }
        return;
    }
    if (t == LLM_DTYPE_Q4_K || t == LLM_DTYPE_Q5_K) { // d, dmin and scales lead both
        blk_q4_k *b = blk;
        memcpy(&b->d, c + 2 * lane, 2);
        memcpy(&b->dmin, c + KERN__PK_DMIN + 2 * lane, 2);
        for (int s = 0; s < K_SCALE_SIZE; s++)
            b->scales[s] = c[KERN__PK_K_SCALES + 8 * s + lane];
        uint8_t *qs = t == LLM_DTYPE_Q4_K ? b->qs : ((blk_q5_k *)blk)->qs;
        memset(qs, 0, QK_K / 2);
        for (int e = 0; e < QK_K; e++) { // element e: sub-block e / 32, in qs as to_float
            int byte, shift;
            q4_place(lane, e % 32, &byte, &shift);
            int q = (quads[128 * (e / 32) + byte] >> shift) & 0x0f;
            qs[32 * (e / 64) + e % 32] |= (uint8_t)(e % 64 < 32 ? q : q << 4);
        }
        if (t == LLM_DTYPE_Q5_K) { // bit j of qh[l] is element 32j + l's fifth bit
            uint8_t *qh = ((blk_q5_k *)blk)->qh;
            memset(qh, 0, QK_K / 8);
            for (int j = 0; j < 8; j++) {
                uint32_t w = lane_word(c + KERN__PK_Q5K_HI + 32 * j + 4 * lane);
                for (int l = 0; l < 32; l++)
                    qh[l] |= (uint8_t)((w >> q5_hi_bit(l) & 1u) << j);
            }
        }
        return;
    }
    if (t == LLM_DTYPE_Q8_0) {
        blk_q8_0 *b = blk;
        memcpy(&b->d, c + 2 * lane, 2);
        for (int j = 0; j < 32; j++)
            b->qs[j] = (int8_t)quads[q8_place(lane, j)];
        return;
    }
    uint8_t *qs, *qh = NULL;
    if (t == LLM_DTYPE_Q4_1) {
        blk_q4_1 *b = blk;
        memcpy(&b->d, c + 2 * lane, 2);
        memcpy(&b->m, c + 16 + 2 * lane, 2);
        qs = b->qs;
    } else if (t == LLM_DTYPE_Q5_1) {
        blk_q5_1 *b = blk;
        memcpy(&b->d, c + 2 * lane, 2);
        memcpy(&b->m, c + 16 + 2 * lane, 2);
        qs = b->qs;
        qh = b->qh;
    } else if (t == LLM_DTYPE_Q5_0) {
        blk_q5_0 *b = blk;
        memcpy(&b->d, c + 2 * lane, 2);
        qs = b->qs;
        qh = b->qh;
    } else {
        blk_q4_0 *b = blk;
        memcpy(&b->d, c + 2 * lane, 2);
        qs = b->qs;
    }
    memset(qs, 0, 16);
    if (qh) { // bit j of qh (little-endian) is element j's fifth bit
        uint32_t w = lane_word(c + hi_offset(t) + 4 * lane), h = 0;
        for (int j = 0; j < 32; j++)
            h |= (w >> q5_hi_bit(j) & 1u) << j;
        for (int i = 0; i < 4; i++)
            qh[i] = (uint8_t)(h >> 8 * i);
    }
    for (int j = 0; j < 32; j++) {
        int byte, shift;
        q4_place(lane, j, &byte, &shift);
        int q = (quads[byte] >> shift) & 0x0f;
        qs[j % 16] |= (uint8_t)(j < 16 ? q : q << 4);
    }
}

/* 32 columns' 4-bit quants into lane i of four quads (Q4's layout). */
static void
pack_q4_lane(const uint8_t *el, int i, uint8_t *quads)
{
    for (int k = 0; k < 4; k++) {
        const uint8_t *e = el + 8 * k; // columns 8k .. 8k + 7
        uint8_t *w = quads + 32 * k + 4 * i;
        w[0] = (uint8_t)(e[0] | e[2] << 4); // low half: even columns, nibble j = 2j
        w[1] = (uint8_t)(e[4] | e[6] << 4);
        w[2] = (uint8_t)(e[1] | e[3] << 4); // high half: odd columns
        w[3] = (uint8_t)(e[5] | e[7] << 4);
    }
}

/* One row's block into lane i of a chunk's quads, a 32-bit word per quad (the layout
 * above, little-endian): the loader packs every weight of the model through here. */
static void
pack_lane(llm_dtype t, const uint8_t *blk, int i, uint8_t *quads)
{
    uint8_t el[32];
    if (t == LLM_DTYPE_Q6_K) { // per sub-block: nibbles, then bits 4 and 5 as Q5's
        const blk_q6_k *b = (const blk_q6_k *)blk;
        for (int j = 0; j < 8; j++) {
            uint32_t wa = 0, wb = 0;
            for (int l = 0; l < 32; l++) {
                int q = q6_get(b, 32 * j + l);
                el[l] = (uint8_t)(q & 0x0f);
                wa |= (uint32_t)(q >> 4 & 1) << q5_hi_bit(l);
                wb |= (uint32_t)(q >> 5 & 1) << q5_hi_bit(l);
            }
            pack_q4_lane(el, i, quads + 128 * j);
            uint8_t *pa = quads - KERN__PK_Q6K_QUADS + KERN__PK_Q6K_BITS + 64 * j + 4 * i;
            for (int k = 0; k < 4; k++) {
                pa[k] = (uint8_t)(wa >> 8 * k);
                pa[32 + k] = (uint8_t)(wb >> 8 * k);
            }
        }
        return;
    }
    if (t == LLM_DTYPE_Q4_K || t == LLM_DTYPE_Q5_K) {
        const uint8_t *qs =
            t == LLM_DTYPE_Q4_K ? ((const blk_q4_k *)blk)->qs : ((const blk_q5_k *)blk)->qs;
        for (int j = 0; j < QK_K / 32; j++) { // sub-block j: nibbles of qs[32 (j / 2) ..]
            for (int l = 0; l < 32; l++)
                el[l] = j % 2 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 0x0f;
            pack_q4_lane(el, i, quads + 128 * j);
            if (t == LLM_DTYPE_Q5_K) { // sub-block j's fifth bits into its Q5 vector
                const uint8_t *qh = ((const blk_q5_k *)blk)->qh;
                uint32_t w = 0;
                for (int l = 0; l < 32; l++)
                    w |= (uint32_t)(qh[l] >> j & 1u) << q5_hi_bit(l);
                uint8_t *hw = quads - KERN__PK_Q5K_QUADS + KERN__PK_Q5K_HI + 32 * j + 4 * i;
                for (int b = 0; b < 4; b++)
                    hw[b] = (uint8_t)(w >> 8 * b);
            }
        }
        return;
    }
    if (t == LLM_DTYPE_Q8_0) {
        memcpy(el, ((const blk_q8_0 *)blk)->qs, 32);
        for (int k = 0; k < 8; k++) {
            const uint8_t *e = el + 4 * k;
            uint8_t *w = quads + 32 * k + 4 * i;
            w[0] = e[0];
            w[1] = e[2];
            w[2] = e[1];
            w[3] = e[3];
        }
        return;
    }
    const uint8_t *qs = t == LLM_DTYPE_Q4_1   ? ((const blk_q4_1 *)blk)->qs
                        : t == LLM_DTYPE_Q5_0 ? ((const blk_q5_0 *)blk)->qs
                        : t == LLM_DTYPE_Q5_1 ? ((const blk_q5_1 *)blk)->qs
                                              : ((const blk_q4_0 *)blk)->qs;
    if (is_q5(t)) {
        const uint8_t *qh =
            t == LLM_DTYPE_Q5_0 ? ((const blk_q5_0 *)blk)->qh : ((const blk_q5_1 *)blk)->qh;
        uint32_t h = lane_word(qh), w = 0;
        for (int j = 0; j < 32; j++)
            w |= (h >> j & 1u) << q5_hi_bit(j);
        uint8_t *hw = quads - quads_offset(t) + hi_offset(t) + 4 * i;
        for (int b = 0; b < 4; b++)
            hw[b] = (uint8_t)(w >> 8 * b);
    }
    for (int j = 0; j < 16; j++) {
        el[j] = qs[j] & 0x0f;
        el[j + 16] = qs[j] >> 4;
    }
    pack_q4_lane(el, i, quads);
}

void
kern_pack(const kern_mat *src, void *dst, kern_mat *out)
{
    assert(!src->packed && kern_pack_supported(src->type, src->n_rows, src->n_cols));
    llm_dtype t = src->type;
    int64_t nb = src->n_cols / kern__pack_chunk_cols(t);
    size_t chunk_bytes = kern__pack_chunk_bytes(t), bsz = kern_type((int)t)->size;
    for (int64_t g = 0; g < src->n_rows / 8; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *c = (uint8_t *)dst + (size_t)(g * nb + b) * chunk_bytes;
            for (int i = 0; i < 8; i++) {
                const uint8_t *blk =
                    (const uint8_t *)src->data + (size_t)(8 * g + i) * src->row_bytes + b * bsz;
                if (t == LLM_DTYPE_Q6_K) { // d comes last in its block
                    const blk_q6_k *b6 = (const blk_q6_k *)blk;
                    memcpy(c + 2 * i, &b6->d, 2);
                    for (int sb = 0; sb < 16; sb++)
                        c[KERN__PK_Q6K_SCALES + 8 * sb + i] = (uint8_t)b6->scales[sb];
                    pack_lane(t, blk, i, c + quads_offset(t));
                    continue;
                }
                memcpy(c + 2 * i, blk, 2); // d is every other type's first field
                bool k = t == LLM_DTYPE_Q4_K || t == LLM_DTYPE_Q5_K;
                if (t == LLM_DTYPE_Q4_1 || t == LLM_DTYPE_Q5_1 || k)
                    memcpy(c + 16 + 2 * i, blk + 2, 2); // m (K-quants: dmin) follows d
                if (k)                                  // the same offset in blk_q5_k
                    for (int sb = 0; sb < K_SCALE_SIZE; sb++)
                        c[KERN__PK_K_SCALES + 8 * sb + i] = ((const blk_q4_k *)blk)->scales[sb];
                pack_lane(t, blk, i, c + quads_offset(t));
            }
        }
    *out = *src;
    out->data = dst;
    out->packed = true;
}

/* --- 16-bit activations ------------------------------------------------------------- */

void
kern__quantize_i16_scalar(const float *x, int64_t n, void *out)
{
    assert(n % 32 == 0);
    kern__i16x a = kern__i16x_at(out, n);
    int16_t *qs = (int16_t *)a.qs; // the view is const for readers; this is the writer
    float *d_out = (float *)a.d, *s_out = (float *)a.s;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float v = fabsf(xb[j]);
            amax = v > amax ? v : amax; // as _mm256_max_ps(v, amax) with amax second
        }
        float d = amax / 32767.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            // Clamped before rounding (NaN and overflow included, as min/max_ps do),
            // then rounded half to even.
            float v = xb[j] * id;
            v = v < 32767.0f ? v : 32767.0f;
            v = v > -32767.0f ? v : -32767.0f;
            int q = (int)nearbyintf(v);
            qs[32 * b + j] = (int16_t)q;
            sum += q;
        }
        d_out[b] = d;
        s_out[b] = d * (float)sum;
    }
}

/* The reference element of one packed row (group chunks from block 0, lane i). */
static float
dot_ref(llm_dtype t, const uint8_t *chunks, size_t chunk_bytes, int lane, kern__i16x x, int64_t nb)
{
    float acc = 0.0f, macc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        union {
            blk_q4_0 q4_0;
            blk_q4_1 q4_1;
            blk_q5_0 q5_0;
            blk_q5_1 q5_1;
            blk_q8_0 q8_0;
        } blk;
        kern_pack_unpack_block(t, chunks + (size_t)b * chunk_bytes, lane, &blk);
        const int16_t *q = x.qs + 32 * b;
        int32_t isum = 0;
        float dw, mw = 0.0f;
        if (t == LLM_DTYPE_Q8_0) {
            for (int j = 0; j < 32; j++)
                isum += blk.q8_0.qs[j] * q[j];
            dw = kern_half_to_float(blk.q8_0.d);
        } else if (is_q5(t)) {
            const uint8_t *qs = t == LLM_DTYPE_Q5_1 ? blk.q5_1.qs : blk.q5_0.qs;
            uint32_t qh = lane_word(t == LLM_DTYPE_Q5_1 ? blk.q5_1.qh : blk.q5_0.qh);
            for (int j = 0; j < 32; j++)
                isum += (q4_get(qs, j) | (int)(qh >> j & 1u) << 4) * q[j];
            dw = kern_half_to_float(t == LLM_DTYPE_Q5_1 ? blk.q5_1.d : blk.q5_0.d);
            mw = t == LLM_DTYPE_Q5_1 ? kern_half_to_float(blk.q5_1.m) : -16.0f * dw;
        } else {
            const uint8_t *qs = t == LLM_DTYPE_Q4_1 ? blk.q4_1.qs : blk.q4_0.qs;
            for (int j = 0; j < 32; j++)
                isum += q4_get(qs, j) * q[j];
            dw = kern_half_to_float(t == LLM_DTYPE_Q4_1 ? blk.q4_1.d : blk.q4_0.d);
            mw = t == LLM_DTYPE_Q4_1 ? kern_half_to_float(blk.q4_1.m) : -8.0f * dw;
        }
        acc = fmaf((float)isum, dw * x.d[b], acc);
        if (t != LLM_DTYPE_Q8_0)
            macc = fmaf(mw, x.s[b], macc);
    }
    return acc + macc;
}

/* The reference element for Q4_K and Q5_K: block b is sub-block b % 8 of super-block
 * b / 8. */
static float
dot_ref_k(llm_dtype t, const uint8_t *chunks, size_t chunk_bytes, int lane, kern__i16x x,
          int64_t nb)
{
    float acc = 0.0f, macc = 0.0f;
    union {
        blk_q4_k q4;
        blk_q5_k q5;
    } blk;
    uint8_t sc[8], m[8];
    for (int64_t b = 0; b < nb; b++) {
        int j = (int)(b % 8);
        if (j == 0) {
            kern_pack_unpack_block(t, chunks + (size_t)(b / 8) * chunk_bytes, lane, &blk);
            kern__k_scales_unpack(blk.q4.scales, sc, m); // d, dmin, scales: one layout
        }
        const uint8_t *qs = t == LLM_DTYPE_Q4_K ? blk.q4.qs : blk.q5.qs;
        const int16_t *q = x.qs + 32 * b;
        int32_t isum = 0;
        for (int l = 0; l < 32; l++) {
            uint8_t v = qs[32 * (j / 2) + l];
            int hi = t == LLM_DTYPE_Q5_K ? (blk.q5.qh[l] >> j & 1) << 4 : 0;
            isum += ((j % 2 ? v >> 4 : v & 0x0f) | hi) * q[l];
        }
        float dw = kern_half_to_float(blk.q4.d) * (float)sc[j];
        float mw = kern_half_to_float(blk.q4.dmin) * (float)m[j];
        acc = fmaf((float)isum, dw * x.d[b], acc);
        macc = fmaf(-mw, x.s[b], macc);
    }
    return acc + macc;
}

/* The reference element for Q6_K: block b is sub-block b % 8 of super-block b / 8, in
 * two 16-column halves with their own scales. */
static float
dot_ref_q6_k(const uint8_t *chunks, size_t chunk_bytes, int lane, kern__i16x x, int64_t nb)
{
    float acc = 0.0f;
    blk_q6_k blk;
    for (int64_t b = 0; b < nb; b++) {
        int j = (int)(b % 8);
        if (j == 0)
            kern_pack_unpack_block(LLM_DTYPE_Q6_K, chunks + (size_t)(b / 8) * chunk_bytes, lane,
                                   &blk);
        const int16_t *q = x.qs + 32 * b;
        float d = kern_half_to_float(blk.d);
        for (int h = 0; h < 2; h++) {
            int32_t isum = 0;
            for (int l = 16 * h; l < 16 * h + 16; l++)
                isum += (q6_get(&blk, 32 * j + l) - 32) * q[l];
            float dw = d * (float)blk.scales[2 * j + h];
            acc = fmaf((float)isum, dw * x.d[b], acc);
        }
    }
    return acc;
}

void
kern__p8_gemm_scalar(llm_dtype t, const char *w, size_t group_bytes, int64_t n_groups,
                     const char *xa, int64_t n, int n_tok, float *y, int64_t y_stride)
{
    size_t chunk_bytes = kern__pack_chunk_bytes(t), xb = KERN__I16X_BYTES(n);
    for (int64_t g = 0; g < n_groups; g++)
        for (int t_ = 0; t_ < n_tok; t_++)
            for (int i = 0; i < 8; i++)
                y[t_ * y_stride + 8 * g + i] =
                    t == LLM_DTYPE_Q6_K
                        ? dot_ref_q6_k((const uint8_t *)w + (size_t)g * group_bytes, chunk_bytes, i,
                                       kern__i16x_at(xa + (size_t)t_ * xb, n), n / 32)
                    : t == LLM_DTYPE_Q4_K || t == LLM_DTYPE_Q5_K
                        ? dot_ref_k(t, (const uint8_t *)w + (size_t)g * group_bytes, chunk_bytes, i,
                                    kern__i16x_at(xa + (size_t)t_ * xb, n), n / 32)
                        : dot_ref(t, (const uint8_t *)w + (size_t)g * group_bytes, chunk_bytes, i,
                                  kern__i16x_at(xa + (size_t)t_ * xb, n), n / 32);
}

void
kern__p8_rows(const kern__p8_impl *impl, const kern_mat *w, int64_t col0, int64_t n_in,
              const char *xa, int n_tok, float *y, int64_t y_stride, int64_t row0, int64_t row1,
              float *edge)
{
    int64_t cc = kern__pack_chunk_cols(w->type);
    assert(w->packed && n_in % cc == 0 && col0 % cc == 0 && col0 + n_in <= w->n_cols);
    size_t chunk_bytes = kern__pack_chunk_bytes(w->type);
    size_t group_bytes = (size_t)(w->n_cols / cc) * chunk_bytes;
    const char *wc = (const char *)w->data + (size_t)(col0 / cc) * chunk_bytes;
    for (int64_t g = row0 / 8, g1 = (row1 + 7) / 8; g < g1;) {
        int64_t r = 8 * g;
        if (r >= row0 && r + 8 <= row1) { // whole groups straight into y
            int64_t ge = g + 1;
            while (ge < g1 && 8 * ge + 8 <= row1)
                ge++;
            impl->gemm(w->type, wc + (size_t)g * group_bytes, group_bytes, ge - g, xa, n_in, n_tok,
                       y + (r - row0), y_stride);
            g = ge;
            continue;
        }
        impl->gemm(w->type, wc + (size_t)g * group_bytes, group_bytes, 1, xa, n_in, n_tok, edge, 8);
        for (int t = 0; t < n_tok; t++)
            for (int64_t i = 0; i < 8; i++)
                if (r + i >= row0 && r + i < row1)
                    y[t * y_stride + (r + i - row0)] = edge[8 * t + i];
        g++;
    }
}

void
kern__p8_quantize(const kern__p8_impl *impl, const float *x, int64_t x_stride, int64_t n_in,
                  int n_tok, char *xa)
{
    for (int t = 0; t < n_tok; t++)
        impl->quantize(x + (int64_t)t * x_stride, n_in, xa + (size_t)t * KERN__I16X_BYTES(n_in));
}

void
kern__matmul_p8(const kern__p8_impl *impl, const kern_mat *w, int64_t col0, int64_t n_in,
                const float *x, int64_t x_stride, float *y, int64_t y_stride, int n_tok,
                int64_t row0, int64_t row1, float *scratch)
{
    // Scratch: a group of quantized tokens, then [tokens][8] outputs for a partial
    // 8-row group at either end of [row0, row1).
    size_t xb = KERN__I16X_BYTES(n_in);
    size_t scratch_bytes = (size_t)KERN_MATMUL_SCRATCH(n_in) * sizeof(float);
    int per_group = (int)(scratch_bytes / (xb + 8 * sizeof(float)));
    assert(per_group >= 1);
    char *xa = (char *)scratch;
    float *edge = (float *)(xa + (size_t)per_group * xb);
    for (int t0 = 0; t0 < n_tok; t0 += per_group) {
        int nt = n_tok - t0 < per_group ? n_tok - t0 : per_group;
        kern__p8_quantize(impl, x + (int64_t)t0 * x_stride, x_stride, n_in, nt, xa);
        kern__p8_rows(impl, w, col0, n_in, xa, nt, y + (int64_t)t0 * y_stride, y_stride, row0, row1,
                      edge);
    }
}
