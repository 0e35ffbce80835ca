#include "linear.h"

#include "../common.h"
#include "../tensor/gemm.h"

void gs_linear_forward(size_t N, int C, int OC, const float *x, const float *W, const float *b,
                       float *y)
{
    if (b)
        gs_sgemm_bias(0, 1, (int)N, OC, C, x, C, W, C, b, y, OC);
    else
        gs_sgemm(0, 1, (int)N, OC, C, 1.0f, x, C, W, C, 0.0f, y, OC);
}

void gs_linear_backward(size_t N, int C, int OC, const float *x, const float *W, const float *dy,
                        float *dx, float *dW, float *db)
{
    // dx (N,C) = dy (N,OC) @ W (OC,C)
    if (dx) gs_sgemm(0, 0, (int)N, C, OC, 1.0f, dy, OC, W, C, 0.0f, dx, C);
    // dW (OC,C) += dy^T (OC,N) @ x (N,C)
    gs_sgemm(1, 0, OC, C, (int)N, 1.0f, dy, OC, x, C, 1.0f, dW, C);
    if (db) {
        /* column sums, one column per thread in row order: thread-count independent */
#pragma omp parallel for schedule(static) num_threads(gs_num_threads()) if (N * OC > 65536)
        for (int o = 0; o < OC; o++) {
            float s = 0.0f;
            for (size_t n = 0; n < N; n++) s += dy[n * OC + o];
            db[o] += s;
        }
    }
}
