#define _POSIX_C_SOURCE 200809L /* posix_memalign under -std=c11 */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

static _Thread_local char last_error[512];

int gs_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

const char *gs_last_error(void) { return last_error[0] ? last_error : "unknown error in the gensar core"; }

void *gs_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}

void *gs_calloc(size_t bytes)
{
    void *p = gs_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void gs_free(void *p) { free(p); }

static int requested_threads = 0;

int gs_max_threads(void)
{
    int procs = 1;
#ifdef _OPENMP
    procs = omp_get_num_procs();
#endif
    return procs > 256 ? procs : 256;
}

/* Denormal floats (|x| < 1.2e-38) cost x86 cores about a hundred cycles per operation. A
 * trained model is full of them (attention probabilities of far-away tokens and their
 * gradients): a real GenSAR training step took 5.8x longer than with them flushed (2.10 vs
 * 0.36 s, ml-100k quick model, 1 thread). So gensar's kernels treat them as zero (MXCSR
 * flush-to-zero + denormals-are-zero, as PyTorch's set_flush_denormal does): the OpenMP
 * pool's worker threads keep the setting, the calling thread has it only inside gensar's
 * calls (gs_ftz_enter / gs_ftz_leave around them), so NumPy and other code on the caller's
 * thread keep IEEE subnormals. Only values below 1.2e-38 change.
 * GENSAR_KEEP_DENORMALS=1 turns it off. */
#define GS_FTZ_DAZ 0x8040u /* MXCSR bits 15 (flush to zero) and 6 (denormals are zero) */

static int keep_denormals(void)
{
    static int keep = -1;
    if (keep < 0) {
        const char *e = getenv("GENSAR_KEEP_DENORMALS");
        keep = e && *e && strcmp(e, "0") != 0;
    }
    return keep;
}

unsigned gs_ftz_enter(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned old = _mm_getcsr();
    if (!keep_denormals()) _mm_setcsr(old | GS_FTZ_DAZ);
    return old;
#else
    return 0;
#endif
}

void gs_ftz_leave(unsigned old)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(old);
#else
    (void)old;
#endif
}

void gs_flush_denormals(void)
{
    if (keep_denormals()) return;
#if defined(__x86_64__) || defined(__i386__)
    const unsigned caller = _mm_getcsr();
#pragma omp parallel num_threads(gs_num_threads())
    _mm_setcsr(_mm_getcsr() | GS_FTZ_DAZ);
    _mm_setcsr(caller); /* the calling thread (thread 0 of the team) as it was */
#endif
}

int gs_set_num_threads(int n)
{
    if (n < 0 || n > gs_max_threads())
        return gs_fail(GS_EINVAL, "number of threads must be in [0, %d] (0 = OpenMP default), got %d",
                       gs_max_threads(), n);
    requested_threads = n;
    gs_flush_denormals(); /* threads the pool may have started for the new count */
    return GS_OK;
}

int gs_num_threads(void)
{
    if (requested_threads > 0) return requested_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int gs_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
