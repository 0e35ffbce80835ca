#include "linear.h"

#include "../common.h"
#include "../tensor/simd.h"
#include "../tensor/gemm.h"

void gs_linear_forward(size_t N, int C, int OC, const float *x, const float *W, const float *b,
                       float *y)
{
    if (b)
        gs_sgemm_bias(0, 1, (int)N, OC, C, x, C, W, C, b, y, OC);
    else
        gs_sgemm(0, 1, (int)N, OC, C, 1.0f, x, C, W, C, 0.0f, y, OC);
}

void gs_linear_gelu_forward(size_t N, int C, int OC, const float *x, const float *W, const float *b,
                            float *y)
{
    gs_sgemm_bias_gelu(0, 1, (int)N, OC, C, x, C, W, C, b, y, OC);
}

// db[o] += sum_n dy[n, o] for o in [o0, o1) (o1 - o0 <= 64), n in order
GS_INLINE void column_sums_body(int o0, int o1, size_t N, int OC, const float *dy, float *db)
{
    float acc[64] = {0};
    const int w = o1 - o0;
    for (size_t n = 0; n < N; n++) {
        const float *row = dy + n * OC + o0;
        for (int o = 0; o < w; o++) acc[o] += row[o];
    }
    for (int o = 0; o < w; o++) db[o0 + o] += acc[o];
}
GS_MULTIVERSION(column_sums, (int o0, int o1, size_t N, int OC, const float *dy, float *db),
                (o0, o1, N, OC, dy, db))

void gs_linear_backward(size_t N, int C, int OC, const float *x, const float *W, const float *dy,
                        float *dx, float *dW, float *db)
{
    // dx (N,C) = dy (N,OC) @ W (OC,C)
    if (dx) gs_sgemm(0, 0, (int)N, C, OC, 1.0f, dy, OC, W, C, 0.0f, dx, C);
    // dW (OC,C) += dy^T (OC,N) @ x (N,C)
    gs_sgemm(1, 0, OC, C, (int)N, 1.0f, dy, OC, x, C, 1.0f, dW, C);
    if (db) {
        /* column sums in blocks of 64 columns, each summed over rows in row order by
         * one thread: thread-count independent, and the rows are read contiguously */
        const column_sums_fn sums = column_sums_pick();
        const int nblk = (OC + 63) / 64;
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * OC > 65536)
        for (int blk = 0; blk < nblk; blk++) sums(blk * 64, blk * 64 + 64 < OC ? blk * 64 + 64 : OC, N, OC, dy, db);
    }
}
