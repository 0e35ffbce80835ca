#define _GNU_SOURCE /* syscall() */
#include "cpu.h"

#include <string.h>
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

static int has_bf16 = -1;
static int active_precision = GS_PRECISION_FP32;

int gs_cpu_has_bf16(void)
{
    if (has_bf16 < 0) {
        has_bf16 = 0;
#if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init();
        has_bf16 = gs_isa_best() == GS_ISA_AVX512 && __builtin_cpu_supports("avx512bf16");
#endif
    }
    return has_bf16;
}

int gs_precision(void) { return active_precision; }

static int amx_ok = -1; /* the CPU has it and the OS lets this process use it */
static int amx_on = 1;

static int amx_available(void)
{
    if (amx_ok < 0) {
        amx_ok = 0;
#if defined(__linux__) && defined(__x86_64__) && defined(__GNUC__)
        /* Linux gives the 8 KB tile state to a process only on request
         * (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA; kernels >= 5.16);
         * without it the first tile instruction kills the process. */
        if (gs_cpu_has_bf16() && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16"))
            amx_ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
#endif
    }
    return amx_ok;
}

int gs_amx(void) { return amx_on && amx_available(); }

int gs_set_amx(int on)
{
    if (on && !amx_available())
        return gs_fail(GS_EINVAL, "AMX bf16 tiles are not available (no amx_bf16 on this CPU, or the OS "
                                  "did not grant the tile state)");
    amx_on = on != 0;
    return GS_OK;
}

static const char *const precision_names[] = {"fp32", "bf16"};

const char *gs_precision_name(int precision)
{
    return precision >= 0 && precision <= GS_PRECISION_BF16 ? precision_names[precision] : NULL;
}

int gs_precision_from_name(const char *name)
{
    for (int i = 0; i <= GS_PRECISION_BF16; i++)
        if (strcmp(name, precision_names[i]) == 0) return i;
    return -1;
}

int gs_set_precision(int precision)
{
    if (!gs_precision_name(precision))
        return gs_fail(GS_EINVAL, "unknown precision %d: use 0 (fp32) or 1 (bf16)", precision);
    if (precision == GS_PRECISION_BF16) {
        if (!gs_cpu_has_bf16())
            return gs_fail(GS_EINVAL, "bf16 precision needs a CPU with AVX512-BF16 (avx512_bf16); "
                                      "this one has none, or no AVX-512 (best path: %s)",
                           names[gs_isa_best()]);
        if (gs_isa() != GS_ISA_AVX512)
            return gs_fail(GS_EINVAL, "bf16 precision runs on the avx512 path, but the %s path is "
                                      "forced: set the avx512 path first", names[gs_isa()]);
    }
    active_precision = precision;
    return GS_OK;
}

int gs_set_isa(int isa)
{
    if (!gs_isa_name(isa))
        return gs_fail(GS_EINVAL, "unknown kernel path %d: use 0 (scalar), 1 (avx2) or 2 (avx512)", isa);
    if (isa > gs_isa_best())
        return gs_fail(GS_EINVAL, "this CPU does not support the %s path (best: %s)", names[isa],
                       names[gs_isa_best()]);
    if (isa != GS_ISA_AVX512 && active_precision == GS_PRECISION_BF16)
        return gs_fail(GS_EINVAL, "the %s path cannot run bf16 precision: set precision fp32 first",
                       names[isa]);
    active_isa = isa;
    return GS_OK;
}
