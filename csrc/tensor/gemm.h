/* Single-precision matrix multiply, row-major, in every transpose form the
 * transformer forward and backward passes need:
 *
 *   C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C
 *
 * op(A) = A stored (M,K) with row stride lda, or A^T when trans_a (A stored
 * (K,M)); likewise op(B) = B stored (K,N) or, when trans_b, B^T with B stored
 * (N,K). beta == 0 overwrites C without reading it (C may hold garbage);
 * beta == 1 accumulates (gradient sums). Parallel with OpenMP; every element of
 * C is summed by one thread in a fixed order, so results do not depend on the
 * thread count.
 *
 * With gs_precision() == GS_PRECISION_BF16 (cpu.h, opt-in, AVX512-BF16 CPUs)
 * gs_sgemm and gs_sgemm_bias round op(A) and op(B) to bfloat16 (nearest even)
 * and sum the products in fp32, on AMX tiles where gs_amx() says so, with
 * VDPBF16PS otherwise; alpha, beta, bias and C stay fp32. */
#ifndef GENSAR_GEMM_H
#define GENSAR_GEMM_H

#include <stddef.h>

void gs_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

/* C (M,N) = op(A) @ op(B) + bias (N) on every row, the bias added as C is
 * written (a linear layer: C is never read). */
void gs_sgemm_bias(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda, const float *B,
                   int ldb, const float *bias, float *C, int ldc);

/* The same, then GELU (erf form) on every element: C = gelu(op(A) @ op(B) + bias), bias
 * may be NULL. Each finished tile of C goes through GELU while it is still in cache,
 * instead of a second pass over C from memory (a BERT feed-forward layer). Same values
 * as gs_sgemm_bias followed by gs_gelu_erf_forward. */
void gs_sgemm_bias_gelu(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, const float *bias, float *C, int ldc);

/* op(B) packed once for many products with the same right-hand side (an LM head
 * over every decoding step): the packing gs_sgemm redoes on each call. Always
 * fp32, whatever gs_precision() says: the beam search normalises fp32 logits of
 * its candidate tokens by this product's log-sum-exp, and the two must agree. */
typedef struct {
    int K, N;
    int isa;     /* the kernel path it was packed for (cpu.h): panel width 16 or 32 */
    float *data; /* slabs of depth <= KC, each a row of (kc, NR) column panels */
} gs_packed_b;

/* Packs op(B) (K, N) (trans_b as in gs_sgemm). Returns GS_OK or GS_ENOMEM;
 * release with gs_packed_b_free (safe on a zeroed struct). */
int gs_packed_b_new(int trans_b, int K, int N, const float *B, int ldb, gs_packed_b *out);
void gs_packed_b_free(gs_packed_b *pb);

/* The same into memory the caller owns (never give it to gs_packed_b_free):
 * data holds gs_packed_b_floats(K, N) floats, 64-byte aligned. For callers that
 * pack several matrices into one reused buffer. */
size_t gs_packed_b_floats(int K, int N);
void gs_packed_b_pack(int trans_b, int K, int N, const float *B, int ldb, float *data, gs_packed_b *out);

/* C (M, nc) = A (M, K) @ op(B)[:, j0 : j0 + nc] with op(B) packed: columns j0..j0+nc-1
 * of the packed matrix, j0 a multiple of GS_SGEMM_NR_MAX (any panel width divides it).
 * Same kernel and summation order as gs_sgemm on the path it was packed for, so
 * the results are bit-identical to it. GS_OK, GS_EINVAL (j0) or GS_ENOMEM. */
#define GS_SGEMM_NR_MAX 32
int gs_sgemm_packed_b(int M, int nc, const float *A, int lda, const gs_packed_b *pb, int j0, float *C,
                      int ldc);

/* The micro-kernel gs_sgemm uses now: "avx512", "avx2" or "scalar" (cpu.h), or
 * "amx-bf16" / "avx512-bf16" in bf16 precision. */
const char *gs_sgemm_kernel_name(void);

#endif
