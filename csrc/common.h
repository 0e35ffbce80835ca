/* Shared conventions of the gensar C core: status codes, error messages, aligned
 * allocation and the thread count. No Python headers here: the core is a plain C
 * library that the binding in csrc/python/ wraps. */
#ifndef GENSAR_COMMON_H
#define GENSAR_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Every fallible C function returns one of these and leaves a message that
 * gs_last_error() returns (per calling thread). The binding maps them to
 * ValueError / MemoryError / RuntimeError. */
enum {
    GS_OK = 0,
    GS_EINVAL = 1,  /* bad argument: shape, range, configuration */
    GS_ENOMEM = 2,  /* an allocation failed */
    GS_ERUNTIME = 3 /* anything else (numerical failure, internal state) */
};

/* Records a printf-style message for the calling thread and returns `code`,
 * so callers write `return gs_fail(GS_EINVAL, "k must be >= 1, got %d", k);`. */
int gs_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *gs_last_error(void);

/* 64-byte aligned allocation (cache line and widest SIMD register). Memory is
 * not initialised. gs_free(NULL) is a no-op. */
void *gs_alloc(size_t bytes);
void *gs_calloc(size_t bytes);
void gs_free(void *p);

/* Threads used by every OpenMP region of the core: the value given to
 * gs_set_num_threads() if > 0, otherwise OpenMP's default (OMP_NUM_THREADS).
 * n must be in [0, gs_max_threads()] (GS_EINVAL otherwise, setting unchanged):
 * OpenMP cannot create a million threads (it crashed), and more threads than
 * max(256, processors) only thrash. */
int gs_set_num_threads(int n);
/* Denormals flushed to zero on the OpenMP pool's worker threads (see common.c), and on the
 * calling thread between gs_ftz_enter() and gs_ftz_leave(its return value). */
void gs_flush_denormals(void);
unsigned gs_ftz_enter(void);
void gs_ftz_leave(unsigned old);
int gs_max_threads(void);
int gs_num_threads(void);
/* This thread's index in the current OpenMP team (0 outside parallel regions). */
int gs_thread_id(void);

#endif
