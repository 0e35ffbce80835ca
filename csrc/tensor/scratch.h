/* Working memory kept per calling thread between calls. A fresh allocation of a
 * few MB is a fresh mmap whose pages the kernel zeroes on first touch: for the
 * packing buffers of a matrix multiply or a training step's activations that
 * cost more than the work itself. Each slot holds one buffer per thread, grown
 * on demand and freed when the thread exits; a request above GS_SCRATCH_KEEP_MAX
 * bytes is allocated and freed per call instead. A caller owns its slot until it
 * gives the buffer back; while it is out, a second get of the same slot on the
 * same thread (a nested caller, a second decoding cache) gets a fresh allocation,
 * so slots can be shared without corrupting each other. */
#ifndef GENSAR_SCRATCH_H
#define GENSAR_SCRATCH_H

#include <stddef.h>

enum {
    GS_SCRATCH_GEMM_A = 0,  /* packed A panels (gemm.c) */
    GS_SCRATCH_GEMM_B,      /* packed B panels (gemm.c) */
    GS_SCRATCH_ATTENTION,   /* per-thread attention tiles (layers.c) */
    GS_SCRATCH_MODEL_ACTS,  /* a training step's activations (sasrec.c) */
    GS_SCRATCH_MODEL_TMP,   /* a training step's temporaries (sasrec.c), the encoder pass of a decoding cache (t5.c) */
    GS_SCRATCH_DECODE,      /* a decoding cache: states and packed weights (t5.c) */
    GS_SCRATCH_SLOTS
};
#define GS_SCRATCH_KEEP_MAX ((size_t)256 << 20)

/* A 64-byte aligned buffer of >= bytes for `slot` of the calling thread, or NULL
 * (out of memory). Not initialised. Give it back with gs_scratch_put. */
void *gs_scratch_get(int slot, size_t bytes);
void gs_scratch_put(int slot, void *p);

#endif
