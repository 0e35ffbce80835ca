#include "cpu.h"

#include <string.h>

#include "../common.h"

static int detect(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* libgcc's checks include the OS side (XCR0), so a kernel that does not
     * save the ZMM state reports no AVX-512 here. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
        return GS_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GS_ISA_AVX2;
#endif
    return GS_ISA_SCALAR;
}

/* -1 until first use. Written before any kernel runs (import time) or by
 * gs_set_isa; a race on first use stores the same value from every thread. */
static int best_isa = -1;
static int active_isa = -1;

int gs_isa_best(void)
{
    if (best_isa < 0) best_isa = detect();
    return best_isa;
}

int gs_isa(void)
{
    if (active_isa < 0) active_isa = gs_isa_best();
    return active_isa;
}

static const char *const names[] = {"scalar", "avx2", "avx512"};

const char *gs_isa_name(int isa)
{
    return isa >= 0 && isa <= GS_ISA_AVX512 ? names[isa] : NULL;
}

int gs_isa_from_name(const char *name)
{
    for (int i = 0; i <= GS_ISA_AVX512; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

int gs_set_isa(int isa)
{
    if (!gs_isa_name(isa))
        return gs_fail(GS_EINVAL, "unknown kernel path %d: use 0 (scalar), 1 (avx2) or 2 (avx512)", isa);
    if (isa > gs_isa_best())
        return gs_fail(GS_EINVAL, "this CPU does not support the %s path (best: %s)", names[isa],
                       names[gs_isa_best()]);
    active_isa = isa;
    return GS_OK;
}
