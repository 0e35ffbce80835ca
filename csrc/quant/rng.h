/* Small seeded random generator for the quantiser (splitmix64 seeding +
 * xoshiro256**). Header-only so each subsystem can own its stream; the same
 * seed gives the same numbers on every platform. */
#ifndef GENSAR_QUANT_RNG_H
#define GENSAR_QUANT_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} gs_rng;

static inline uint64_t gs_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void gs_rng_seed(gs_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = gs_splitmix64(&seed);
}

static inline uint64_t gs_rng_next(gs_rng *r)
{
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* uniform double in [0, 1) with 53 random bits */
static inline double gs_rng_uniform(gs_rng *r) { return (double)(gs_rng_next(r) >> 11) * 0x1.0p-53; }

/* uniform integer in [0, n) (n > 0); the tiny modulo bias is irrelevant here */
static inline uint64_t gs_rng_below(gs_rng *r, uint64_t n) { return gs_rng_next(r) % n; }

/* standard normal (Box-Muller) */
static inline double gs_rng_normal(gs_rng *r)
{
    double u1 = gs_rng_uniform(r), u2 = gs_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
