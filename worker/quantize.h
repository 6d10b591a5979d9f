/*
 * quantize.h - convert a GGUF model's weights to another element type (llm-quantize).
 *
 * Every matrix (a tensor of two or more dimensions and at least QUANT_MIN_ELEMS
 * elements) is re-encoded to the target type through the kernels' traits table: each
 * row is decoded with the source type's to_float and encoded with the target's
 * from_float, so any type with both functions works as source or target. Vectors
 * (norms) and small tensors are stored as F32, which is what the engine computes them
 * in anyway. A matrix whose rows are not a multiple of the target's block size falls
 * back, when they are a multiple of 32, to llama.cpp's choice for the K-quants (Q4_K ->
 * Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0) or Q8_0 for the others, else to F32 (logged). All metadata is
 * copied byte for byte except general.file_type and general.quantization_version, which are set for
 * the target.
 *
 * The conversion streams: tensor shapes and the output layout are fixed first, then the
 * file is written one tensor at a time, one row at a time, through gguf_writer_write_stream
 * (temporary name + rename, so a failure leaves nothing behind). Memory use is two rows
 * plus the header, whatever the model's size; the input is read through its mapping.
 * What it does not do: importance-weighted quantization, per-tensor type mixes
 * (llama.cpp's Q4_K_M), or checking that the output is not the input (the caller does).
 *
 * Thread: functions are reentrant; quant_file runs on the caller's thread.
 */
#ifndef LLM_WORKER_QUANTIZE_H
#define LLM_WORKER_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kern.h"

/* Tensors with fewer elements than this stay F32: quantizing them saves nothing worth
 * the error. 1024 keeps every real projection (the tiny test model's K/V ones have
 * 2048 elements) and leaves vectors and toy matrices exact. */
#define QUANT_MIN_ELEMS 1024

/* general.quantization_version written to every output (ggml's current block layout). */
#define QUANT_VERSION 2

typedef struct {
    uint64_t in_bytes, out_bytes; // file sizes
    uint64_t n_tensors;
    uint64_t n_converted; // tensors stored in the target type
    uint64_t n_fallback;  // matrices stored in a fallback type because of their row length
    uint64_t elapsed_ns;
} quant_stats;

/* quant_type_parse maps a target name ("Q4_0", "Q8_0", "F16", ...) to its type.
 * LLM_OK; LLM_EINVAL if the name is not a target (see quant_type_list); LLM_ENOTSUP if
 * it is a target whose encoder does not exist yet (no from_float in the traits table);
 * *out is set in both of the last two cases only when the name is known. */
int quant_type_parse(const char *name, llm_dtype *out);

/* quant_type_list returns the target names, comma-separated (static string). */
const char *quant_type_list(void);

/* quant_ftype returns llama.cpp's general.file_type number for a target type ("mostly
 * Q4_0" = 2, ...), or -1 for a type that is not a target. */
int quant_ftype(llm_dtype target);

/* quant_tensor_type returns the type tensor t is stored as for the given target (see
 * the file comment): the target, F32, or the target's fallback. */
llm_dtype quant_tensor_type(const gguf_tensor *t, llm_dtype target);

/* quant_file converts the GGUF file in_path to target and writes it to out_path (via a
 * temporary file in its directory and rename). st may be NULL. Returns LLM_OK;
 * LLM_EIO (cannot read the input, or cannot write the output: full disk, permission,
 * file size limit), LLM_EINVAL (malformed input), LLM_ENOTSUP (input tensor of a type
 * that cannot be decoded, or a target without an encoder) or LLM_ENOMEM, with one line
 * in err. On failure out_path is untouched and no temporary file remains. */
int quant_file(const char *in_path, const char *out_path, llm_dtype target, quant_stats *st,
               char *err, size_t err_len);

#endif
