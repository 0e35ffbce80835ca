#define _POSIX_C_SOURCE 200809L /* posix_memalign under -std=c11 */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int gs_set_num_threads(int n)
{
    if (n < 0 || n > gs_max_threads())
        return gs_fail(GS_EINVAL, "number of threads must be in [0, %d] (0 = OpenMP default), got %d",
                       gs_max_threads(), n);
    requested_threads = n;
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
