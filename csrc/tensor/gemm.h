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
 * thread count. */
#ifndef GENSAR_GEMM_H
#define GENSAR_GEMM_H

void gs_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

/* Which micro-kernel runs on this CPU: "avx2-fma" or "generic". */
const char *gs_sgemm_kernel_name(void);

#endif
