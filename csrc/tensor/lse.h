/* log-sum-exp of a row of logits over the full vocabulary: the normaliser of
 * every beam-search score, computed for each live beam at each step, so on a
 * 32k-token vocabulary it costs as much as the LM head. AVX2/FMA at run time
 * when the CPU has it, portable double-precision loop otherwise. */
#ifndef GENSAR_LSE_H
#define GENSAR_LSE_H

#include <stddef.h>

#include "gemm.h"

// x (n) -> log(sum_i exp(x[i])) in double; NaN if any x is NaN, +-inf if the
// maximum is infinite. Deterministic for a given CPU (fixed summation order).
double gs_log_sum_exp(const float *x, int n);

/* The LM head and its normaliser in one pass, without the (n, V) logits:
 *   lse[i] = log sum_v exp(A[i] . W[v])    A (n, C) row-major, W (V, C) given
 *   packed as gs_packed_b_new(1, C, V, W, C, &packed), which a decoder does once.
 * The product runs in tiles of (rows x vocabulary chunk) that stay in cache;
 * each tile leaves a partial (max, sum) per row, combined in chunk order, so the
 * result does not depend on the thread count or on the other rows. Same NaN/inf
 * rules as gs_log_sum_exp. Returns GS_OK or GS_ENOMEM. */
int gs_linear_log_sum_exp(size_t n, const float *A, const gs_packed_b *W, double *lse);

/* Which implementation runs on this CPU: "avx2-fma" or "generic". */
const char *gs_log_sum_exp_kernel_name(void);

#endif
