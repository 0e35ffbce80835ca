/* Residual quantiser with shared and tower-specific codebooks, the quantiser of
 * GenSAR's dual-purpose identifiers (GENSAR.md section 2), plus the
 * Sinkhorn-balanced collision resolution of the last level.
 *
 * The latent of one item is the concatenation of T (1 or 2) tower slices,
 * z = [z_0 (dim[0]) | z_1 (dim[1])], D = dim[0] + dim[1]. Levels, in code order:
 *   shared levels 0 .. n_shared-1        on the full residual (width D)
 *   tower-0 specific levels              on residual[:, 0:dim[0]]
 *   tower-1 specific levels              on residual[:, dim[0]:D]
 * Semantic ID = shared codes + tower-0 codes; collaborative ID = shared codes +
 * tower-1 codes. The same structure serves the joint RQ-VAE (dim = h, h), plain
 * residual k-means on raw embeddings (dim = d_sem, d_col) and the
 * single-embedding RQ-VAE (T = 1, no specific levels). */
#ifndef GENSAR_RQ_H
#define GENSAR_RQ_H

#include <stddef.h>
#include <stdint.h>

#define GS_RQ_MAX_LEVELS 8 /* per kind (shared, or specific per tower) */
#define GS_RQ_MAX_TOTAL (3 * GS_RQ_MAX_LEVELS)

typedef struct {
    int n_towers;  /* 1 or 2 */
    int dim[2];    /* width of each tower's slice of the latent */
    int n_shared;  /* shared levels, each on the full width D */
    int n_specific; /* specific levels per tower */
    int shared_k[GS_RQ_MAX_LEVELS];
    int specific_k[GS_RQ_MAX_LEVELS];
} gs_rq_config;

typedef struct {
    int k;            /* codebook size */
    int width;        /* codeword dimension */
    int col;          /* first latent column the level quantises */
    int tower;        /* -1 for shared levels */
    size_t cb_offset; /* offset of its (k, width) codebook in the codebook buffer */
} gs_rq_level;

/* Validates cfg and lists its levels in code order. Returns GS_OK or GS_EINVAL. */
int gs_rq_levels(const gs_rq_config *cfg, gs_rq_level *levels, int *n_levels,
                 size_t *codebook_floats);

/* z (N,D) -> codes (N,nL) int32: nearest codeword level by level on the running
 * residual. Optional outputs (NULL to skip): zq (N,D) the sum of the chosen
 * codewords; level_in[l] (N, width_l) the residual entering level l (level_in
 * itself may be NULL). */
int gs_rq_encode(const gs_rq_config *cfg, const float *codebooks, size_t N, const float *z,
                 int32_t *codes, float *zq, float **level_in);

/* Balanced assignment (Sinkhorn-Knopp in the log domain, as in the reference:
 * distances centred to [-1, 1], plan proportional to exp(-d / eps), columns
 * then rows rescaled `iters` times). dist (m,F) -> score (m,F) = log plan up to
 * a per-row constant; the assignment of row i is argmax_j score[i,j]. */
void gs_sinkhorn_scores(int m, int F, const double *dist, double eps, int iters, double *score);

typedef struct {
    size_t collided_before;  /* items whose full ID was shared with another item */
    size_t moved;            /* items whose last code was changed */
    size_t unresolved;       /* items still colliding (prefix group larger than the codebook) */
    size_t largest_group;    /* largest prefix group (items sharing the first L-1 codes) */
} gs_resolve_stats;

/* Makes every row of ids (N,L) unique by re-assigning last-level codes within
 * prefix groups (rows sharing ids[:, :L-1]); earlier codes never change.
 *   level_k (L): codebook size of each level (bounds the codes)
 *   resid (N,d): residual entering the last level; codebook (K,d) its codewords
 *   fixed (N) or NULL: rows that must keep their code (already published IDs)
 * In a group with collisions, every code taken by a fixed row or by the movable
 * row nearest to it stays; the other movable rows ("colliders") are re-assigned
 * over the group's free codes with a Sinkhorn plan (eps, iters), one to one,
 * colliders nearest to their original code choosing first. Exactly duplicate
 * rows thus get distinct codes (the lowest index keeps the nearest code). When
 * a group has more movable colliders than free codes the excess keeps its
 * nearest code and is counted in stats->unresolved (the caller decides). */
int gs_resolve_collisions(size_t N, int L, int32_t *ids, const int *level_k, int d,
                          const float *resid, const float *codebook, const unsigned char *fixed,
                          double eps, int iters, gs_resolve_stats *stats);

/* Plain residual k-means: fits every codebook of cfg level by level on the
 * running residual of z (N,D) (k-means with n_init inits, max_iter
 * iterations, seed), writing codebooks (sum k_l*width_l floats, gs_rq_levels
 * layout). Requires N >= k_l for every level. Also initialises the RQ-VAE's
 * codebooks on its first batch. */
int gs_rq_fit_kmeans(const gs_rq_config *cfg, size_t N, const float *z, int n_init, int max_iter,
                     uint64_t seed, float *codebooks);

#endif
