/* log-sum-exp of a row of logits over the full vocabulary: the normaliser of
 * every beam-search score, computed for each live beam at each step, so on a
 * 32k-token vocabulary it costs as much as the LM head. AVX2/FMA at run time
 * when the CPU has it, portable double-precision loop otherwise. */
#ifndef GENSAR_LSE_H
#define GENSAR_LSE_H

// x (n) -> log(sum_i exp(x[i])) in double; NaN if any x is NaN, +-inf if the
// maximum is infinite. Deterministic for a given CPU (fixed summation order).
double gs_log_sum_exp(const float *x, int n);

/* Which implementation runs on this CPU: "avx2-fma" or "generic". */
const char *gs_log_sum_exp_kernel_name(void);

#endif
