/* Which instruction-set path the kernels run. One build runs on any x86-64: the
 * hot kernels exist in a portable (scalar) version, an AVX2+FMA version and an
 * AVX-512 version, and every call picks the one gs_isa() names. The default is
 * the best the CPU (and the OS, for the AVX-512 register state) supports;
 * gs_set_isa() forces a lower path, for tests that compare the paths and for
 * users who set GENSAR_ISA (read by the Python package at import). */
#ifndef GENSAR_CPU_H
#define GENSAR_CPU_H

enum {
    GS_ISA_SCALAR = 0, /* portable C, compiled for the build's baseline */
    GS_ISA_AVX2 = 1,   /* AVX2 + FMA (Haswell, Zen 1 and later) */
    GS_ISA_AVX512 = 2  /* AVX-512 F/DQ/BW/VL (Skylake-X, Ice Lake, Sapphire Rapids, Zen 4/5) */
};

/* The path the kernels use now. Cheap (a load): kernels call it on every call. */
int gs_isa(void);
/* The best path this CPU supports. */
int gs_isa_best(void);
/* Uses `isa` from now on (every thread). GS_OK, or GS_EINVAL with a message if
 * the CPU does not support it or the value is not a path. */
int gs_set_isa(int isa);
/* "scalar", "avx2", "avx512"; NULL for other values. */
const char *gs_isa_name(int isa);
/* Inverse of gs_isa_name; -1 for an unknown name. */
int gs_isa_from_name(const char *name);

/* Precision of the matrix products (gs_sgemm, gs_sgemm_bias): fp32 (the default)
 * or bf16, where A and B are rounded to bfloat16 (round to nearest even) as they
 * are packed and the products are summed in fp32 by AVX512-BF16 dot-product
 * instructions. Inputs and outputs stay fp32; every other kernel is unchanged.
 * bf16 needs the AVX-512 path and a CPU with avx512_bf16 (Cooper Lake, Sapphire
 * Rapids and later, Zen 4/5). */
enum { GS_PRECISION_FP32 = 0, GS_PRECISION_BF16 = 1 };

/* 1 if this CPU (and OS) can run the bf16 products. */
int gs_cpu_has_bf16(void);
/* The precision in use; cheap, read by every gs_sgemm call. */
int gs_precision(void);
/* Uses `precision` from now on. GS_OK, or GS_EINVAL with a message if the value
 * is not a precision, or bf16 is asked for without CPU support or while a path
 * below AVX-512 is forced. */
int gs_set_precision(int precision);
/* 1 if the bf16 products may use AMX tiles (amx_bf16 on the CPU, the Linux
 * kernel granted the tile state to this process, and not turned off by
 * gs_set_amx): they then run as TDPBF16PS on 16 x 16 tiles instead of VDPBF16PS. */
int gs_amx(void);
/* Allows (1) or forbids (0) AMX for the bf16 products; GS_EINVAL if asked for
 * on a CPU or OS without it. For tests and benchmarks that compare the two. */
int gs_set_amx(int on);
/* "fp32", "bf16"; NULL for other values. */
const char *gs_precision_name(int precision);
/* Inverse of gs_precision_name; -1 for an unknown name. */
int gs_precision_from_name(const char *name);

#endif
