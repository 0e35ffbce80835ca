/* k-means (Lloyd) with greedy k-means++ seeding, empty-cluster repair and
 * several initialisations keeping the lowest inertia. Used alone
 * (gensar.ids.kmeans), to initialise every RQ-VAE codebook on the first batch,
 * and level by level by the plain residual k-means quantiser.
 *
 * Determinism: every random choice comes from `seed`; distance sums are
 * reduced in a fixed order, so a fixed seed gives the same result for any
 * thread count (up to the SGEMM's, which is also thread-count independent). */
#ifndef GENSAR_KMEANS_H
#define GENSAR_KMEANS_H

#include <stddef.h>
#include <stdint.h>

/* For each row of x (N,d): the index of the nearest row of C (K,d) in squared
 * L2 distance (ties -> lowest index) into labels (N), and that squared distance
 * into dist2 (N) unless dist2 is NULL. Blocked SGEMM: x @ C^T. */
int gs_nearest_centroid(size_t N, int d, const float *x, int K, const float *C, int32_t *labels,
                        float *dist2);

/* GS_OK if every value of x (N,d) is finite and every squared row norm is
 * small enough (< FLT_MAX / 8) that squared distances between rows stay finite
 * in float; otherwise GS_EINVAL with a message naming `what` and the row. */
int gs_check_points(size_t N, int d, const float *x, const char *what);

/* x (N,d) -> centroids (k,d), labels (N), inertia (sum of squared distances to
 * the assigned centroid, accumulated in double). Requires N >= k >= 1,
 * n_init >= 1, max_iter >= 1. tol: stop when the total squared centroid shift
 * falls below tol * (mean per-dimension variance of x) (scikit-learn's rule).
 * labels may be NULL. init (k,d) or NULL: starting centroids instead of
 * k-means++ (then a single run). x (and init) must pass gs_check_points.
 * Returns GS_OK or GS_EINVAL / GS_ENOMEM; on GS_OK centroids, labels and
 * inertia are always written. */
int gs_kmeans(size_t N, int d, const float *x, int k, int n_init, int max_iter, double tol,
              uint64_t seed, const float *init, float *centroids, int32_t *labels,
              double *inertia);

#endif
