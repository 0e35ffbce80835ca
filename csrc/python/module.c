/* gensar._core: module definition, error mapping and argument checks shared by
 * the per-subsystem binding files. */
#define GS_BINDING_MAIN
#include "binding.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "../tensor/cpu.h"

PyObject *gs_raise(int status)
{
    PyObject *type = status == GS_EINVAL   ? PyExc_ValueError
                     : status == GS_ENOMEM ? PyExc_MemoryError
                                           : PyExc_RuntimeError;
    PyErr_SetString(type, gs_last_error());
    return NULL;
}

static const char *dtype_name(int typenum)
{
    switch (typenum) {
    case NPY_FLOAT32: return "float32";
    case NPY_FLOAT64: return "float64";
    case NPY_INT32: return "int32";
    case NPY_INT64: return "int64";
    case NPY_UINT8: return "uint8";
    default: return "another dtype";
    }
}

PyArrayObject *gs_check_array(PyObject *obj, const char *name, int typenum, int min_ndim,
                              int max_ndim)
{
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy array of dtype %s, got %s", name,
                     dtype_name(typenum), Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_TYPE(a) != typenum) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype %s, got %s; convert it with .astype(np.%s)",
                     name, dtype_name(typenum), PyArray_DESCR(a)->typeobj->tp_name,
                     dtype_name(typenum));
        return NULL;
    }
    /* '>f4' has type number NPY_FLOAT32 too: the C core would read its bytes
     * reversed, so it is refused rather than silently misread. */
    if (!PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_TypeError,
                     "%s has non-native (big-endian) byte order %R; convert it with "
                     "%s.astype(np.%s) (a native-order copy)",
                     name, (PyObject *)PyArray_DESCR(a), name, dtype_name(typenum));
        return NULL;
    }
    int nd = PyArray_NDIM(a);
    if (nd < min_ndim || nd > max_ndim) {
        if (min_ndim == max_ndim)
            PyErr_Format(PyExc_ValueError, "%s must be %d-dimensional, got %d dimensions", name,
                         min_ndim, nd);
        else
            PyErr_Format(PyExc_ValueError, "%s must have %d to %d dimensions, got %d", name,
                         min_ndim, max_ndim, nd);
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a)) {
        PyErr_Format(PyExc_ValueError,
                     "%s is not C-contiguous (a transposed or sliced view?); gensar does not copy "
                     "silently: pass np.ascontiguousarray(%s)",
                     name, name);
        return NULL;
    }
    if (!PyArray_ISALIGNED(a)) { /* e.g. np.frombuffer at an odd offset: the kernels assume alignment */
        PyErr_Format(PyExc_ValueError, "%s is not aligned in memory; pass %s.copy()", name, name);
        return NULL;
    }
    for (int i = 0; i < nd; i++)
        if (PyArray_DIM(a, i) == 0) {
            PyErr_Format(PyExc_ValueError, "%s is empty (axis %d has length 0)", name, i);
            return NULL;
        }
    return a;
}

int gs_arg_int64(PyObject *o, const char *name, long long lo, long long hi, long long *out)
{
    if (!o) return 0;
    /* bool is an int subclass, and np.bool_ has __index__ in old NumPy: both are
     * refused, as True where a count is expected is a mistake, not a 1. */
    if (PyBool_Check(o) || PyArray_IsScalar(o, Bool) || !PyIndex_Check(o) || PyFloat_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an integer, got %s %R", name, Py_TYPE(o)->tp_name,
                     o);
        return -1;
    }
    PyObject *i = PyNumber_Index(o);
    if (!i) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be an integer, got %s", name, Py_TYPE(o)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < lo || v > hi) {
        if (hi >= LLONG_MAX)
            PyErr_Format(PyExc_ValueError, "%s must be an integer >= %lld, got %R", name, lo, o);
        else
            PyErr_Format(PyExc_ValueError, "%s must be an integer in [%lld, %lld], got %R", name, lo,
                         hi, o);
        return -1;
    }
    *out = v;
    return 0;
}

int gs_arg_int(PyObject *o, const char *name, int lo, int hi, int *out)
{
    long long v;
    if (!o) return 0;
    if (gs_arg_int64(o, name, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

int gs_arg_u64(PyObject *o, const char *name, unsigned long long *out)
{
    if (!o) return 0;
    if (PyBool_Check(o) || PyArray_IsScalar(o, Bool) || !PyIndex_Check(o) || PyFloat_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an integer, got %s", name, Py_TYPE(o)->tp_name);
        return -1;
    }
    PyObject *i = PyNumber_Index(o);
    if (!i) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(i);
    Py_DECREF(i);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be an integer in [0, 2**64), got %R", name, o);
        return -1;
    }
    *out = v;
    return 0;
}

/* What a real argument must be, e.g. "a finite number > 0" or "in [0, 1)", into
 * buf; numbers formatted by C, as PyErr_Format has no %g. Bounds at or beyond
 * +-FLT_MAX mean "no bound". */
static void describe_range(char *buf, size_t n, double lo, double hi, int flags)
{
    const char *fin = (flags & GS_ALLOW_INF) ? "a number" : "a finite number";
    int has_lo = lo > -FLT_MAX, has_hi = hi < FLT_MAX;
    if (has_lo && has_hi)
        snprintf(buf, n, "%s in %s%g, %g%s", fin, (flags & GS_LO_OPEN) ? "(" : "[", lo, hi,
                 (flags & GS_HI_OPEN) ? ")" : "]");
    else if (has_lo)
        snprintf(buf, n, "%s %s %g", fin, (flags & GS_LO_OPEN) ? ">" : ">=", lo);
    else if (has_hi)
        snprintf(buf, n, "%s %s %g", fin, (flags & GS_HI_OPEN) ? "<" : "<=", hi);
    else
        snprintf(buf, n, "%s", fin);
}

int gs_arg_double(PyObject *o, const char *name, double lo, double hi, int flags, double *out)
{
    if (!o) return 0;
    if (PyBool_Check(o) || PyArray_IsScalar(o, Bool) ||
        !(PyFloat_Check(o) || PyIndex_Check(o) || PyArray_IsScalar(o, Number))) {
        PyErr_Format(PyExc_TypeError, "%s must be a real number, got %s", name, Py_TYPE(o)->tp_name);
        return -1;
    }
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        v = HUGE_VAL; /* an int beyond double: reported as out of range below */
    }
    char want[128];
    describe_range(want, sizeof want, lo, hi, flags);
    int ok = !isnan(v) && (!isinf(v) || (flags & GS_ALLOW_INF)) &&
             ((flags & GS_LO_OPEN) ? v > lo : v >= lo) && ((flags & GS_HI_OPEN) ? v < hi : v <= hi);
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got %R", name, want, o);
        return -1;
    }
    *out = v;
    return 0;
}

int gs_arg_float(PyObject *o, const char *name, double lo, double hi, int flags, float *out)
{
    double v;
    if (!o) return 0;
    /* +-FLT_MAX bounds mean "none": a value beyond them gets the float32 message below */
    if (gs_arg_double(o, name, lo <= -FLT_MAX ? -HUGE_VAL : lo, hi >= FLT_MAX ? HUGE_VAL : hi, flags,
                      &v))
        return -1;
    if (isfinite(v) && fabs(v) > FLT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s = %R does not fit in float32", name, o);
        return -1;
    }
    *out = (float)v;
    return 0;
}

int gs_parse_adamw(PyObject *lr, PyObject *beta1, PyObject *beta2, PyObject *eps, PyObject *wd,
                   gs_adamw_config *cfg)
{
    if (gs_arg_float(lr, "lr", 0.0, FLT_MAX, 0, &cfg->lr) ||
        gs_arg_float(beta1, "beta1", 0.0, 1.0, GS_HI_OPEN, &cfg->beta1) ||
        gs_arg_float(beta2, "beta2", 0.0, 1.0, GS_HI_OPEN, &cfg->beta2) ||
        gs_arg_float(eps, "eps", 0.0, FLT_MAX, GS_LO_OPEN, &cfg->eps) ||
        gs_arg_float(wd, "weight_decay", 0.0, FLT_MAX, 0, &cfg->weight_decay))
        return -1;
    /* a float32 rounding can still make beta 1.0 (0.99999999 -> 1.0f) */
    if (gs_adamw_check(cfg, 0, NULL, NULL, NULL, NULL)) {
        gs_raise(GS_EINVAL);
        return -1;
    }
    return 0;
}

int gs_no_overlap(PyArrayObject *a, const char *na, PyArrayObject *b, const char *nb)
{
    const char *a0 = PyArray_BYTES(a), *b0 = PyArray_BYTES(b);
    const char *a1 = a0 + PyArray_NBYTES(a), *b1 = b0 + PyArray_NBYTES(b);
    if (a1 <= b0 || b1 <= a0) return 0;
    PyErr_Format(PyExc_ValueError,
                 "%s and %s share memory (views of one buffer); the result would be wrong: "
                 "pass arrays that do not overlap (e.g. %s.copy())",
                 na, nb, na);
    return -1;
}

int gs_capsule_add_lock(PyObject *cap)
{
    gs_model_lock *lk = PyMem_RawMalloc(sizeof *lk);
    if (!lk || pthread_rwlock_init(lk, NULL) != 0) {
        PyMem_RawFree(lk);
        PyErr_NoMemory();
        return -1;
    }
    if (PyCapsule_SetContext(cap, lk) < 0) {
        pthread_rwlock_destroy(lk);
        PyMem_RawFree(lk);
        return -1;
    }
    return 0;
}

PyObject *gs_new_model_capsule(void *ptr, const char *name, PyCapsule_Destructor dtor)
{
    PyObject *cap = PyCapsule_New(ptr, name, dtor);
    if (cap && gs_capsule_add_lock(cap)) {
        PyCapsule_SetDestructor(cap, NULL); /* ptr stays the caller's to free */
        Py_DECREF(cap);
        return NULL;
    }
    return cap;
}

PyObject *gs_f32_view(PyObject *owner, float *p, size_t n)
{
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *a = PyArray_SimpleNewFromData(1, dims, NPY_FLOAT32, p);
    if (!a) return NULL;
    Py_INCREF(owner);
    if (PyArray_SetBaseObject((PyArrayObject *)a, owner) < 0) {
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

void gs_capsule_free_lock(PyObject *cap)
{
    gs_model_lock *lk = PyCapsule_GetContext(cap);
    if (!lk) return;
    pthread_rwlock_destroy(lk);
    PyMem_RawFree(lk);
}

gs_model_lock *gs_capsule_lock(PyObject *cap) { return PyCapsule_GetContext(cap); }

void gs_lock_write(gs_model_lock *lk)
{
    if (lk) pthread_rwlock_wrlock(lk);
}

void gs_lock_read(gs_model_lock *lk)
{
    if (lk) pthread_rwlock_rdlock(lk);
}

void gs_unlock(gs_model_lock *lk)
{
    if (lk) pthread_rwlock_unlock(lk);
}

PyArrayObject *gs_check_out_array(PyObject *obj, const char *name, int typenum, int min_ndim,
                                  int max_ndim)
{
    PyArrayObject *a = gs_check_array(obj, name, typenum, min_ndim, max_ndim);
    if (a && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s is read-only; pass a writeable array", name);
        return NULL;
    }
    return a;
}

size_t gs_rows(PyArrayObject *a)
{
    size_t rows = 1;
    for (int i = 0; i < PyArray_NDIM(a) - 1; i++) rows *= (size_t)PyArray_DIM(a, i);
    return rows;
}

int gs_last_dim(PyArrayObject *a) { return (int)PyArray_DIM(a, PyArray_NDIM(a) - 1); }

int gs_same_shape(PyArrayObject *a, const char *na, PyArrayObject *b, const char *nb)
{
    if (PyArray_NDIM(a) == PyArray_NDIM(b) &&
        memcmp(PyArray_DIMS(a), PyArray_DIMS(b), sizeof(npy_intp) * PyArray_NDIM(a)) == 0)
        return 0;
    PyObject *sa = PyObject_GetAttrString((PyObject *)a, "shape");
    PyObject *sb = PyObject_GetAttrString((PyObject *)b, "shape");
    PyErr_Format(PyExc_ValueError, "%s and %s must have the same shape, got %R and %R", na, nb, sa,
                 sb);
    Py_XDECREF(sa);
    Py_XDECREF(sb);
    return -1;
}

int gs_parse_encoder_input(PyObject *oids, PyObject *omask, int *B, int *T, int *K,
                           const int32_t **ids, const int32_t **mask)
{
    PyArrayObject *a = gs_check_array(oids, "input_ids", NPY_INT32, 2, 3);
    if (!a) return -1;
    PyArrayObject *m = gs_check_array(omask, "attention_mask", NPY_INT32, 2, 2);
    if (!m) return -1;
    if (PyArray_DIM(m, 0) != PyArray_DIM(a, 0) || PyArray_DIM(m, 1) != PyArray_DIM(a, 1)) {
        PyErr_Format(PyExc_ValueError, "attention_mask has shape (%zd, %zd); it needs one entry per "
                     "input position: (%zd, %zd), the first two axes of input_ids",
                     (Py_ssize_t)PyArray_DIM(m, 0), (Py_ssize_t)PyArray_DIM(m, 1),
                     (Py_ssize_t)PyArray_DIM(a, 0), (Py_ssize_t)PyArray_DIM(a, 1));
        return -1;
    }
    npy_intp k = PyArray_NDIM(a) == 3 ? PyArray_DIM(a, 2) : 1;
    if (PyArray_DIM(a, 0) > INT32_MAX || PyArray_DIM(a, 1) > INT32_MAX || k > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "input_ids is too large");  /* the core bounds K itself */
        return -1;
    }
    *B = (int)PyArray_DIM(a, 0), *T = (int)PyArray_DIM(a, 1), *K = (int)k;
    *ids = PyArray_DATA(a), *mask = PyArray_DATA(m);
    return 0;
}

PyArrayObject *gs_new_f32(int ndim, const npy_intp *dims)
{
    return (PyArrayObject *)PyArray_SimpleNew(ndim, (npy_intp *)dims, NPY_FLOAT32);
}

PyArrayObject *gs_new_f32_like(PyArrayObject *like)
{
    return gs_new_f32(PyArray_NDIM(like), PyArray_DIMS(like));
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg)
{
    (void)self;
    int n = 0;
    if (gs_arg_int(arg, "n (number of threads)", 0, gs_max_threads(), &n)) return NULL;
    if (gs_set_num_threads(n)) return gs_raise(GS_EINVAL);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyLong_FromLong(gs_num_threads());
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "isa must be a str ('scalar', 'avx2' or 'avx512'), got %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    int isa = gs_isa_from_name(name);
    if (isa < 0) {
        PyErr_Format(PyExc_ValueError, "isa must be 'scalar', 'avx2' or 'avx512', got %R", arg);
        return NULL;
    }
    int status = gs_set_isa(isa);
    if (status) return gs_raise(status);
    Py_RETURN_NONE;
}

static PyObject *py_get_isa(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyUnicode_FromString(gs_isa_name(gs_isa()));
}

static PyObject *py_best_isa(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyUnicode_FromString(gs_isa_name(gs_isa_best()));
}

static PyObject *py_set_precision(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "precision must be a str ('fp32' or 'bf16'), got %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    int precision = gs_precision_from_name(name);
    if (precision < 0) {
        PyErr_Format(PyExc_ValueError, "precision must be 'fp32' or 'bf16', got %R", arg);
        return NULL;
    }
    int status = gs_set_precision(precision);
    if (status) return gs_raise(status);
    Py_RETURN_NONE;
}

static PyObject *py_get_precision(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyUnicode_FromString(gs_precision_name(gs_precision()));
}

static PyObject *py_has_bf16(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyBool_FromLong(gs_cpu_has_bf16());
}

static PyObject *py_set_amx(PyObject *self, PyObject *arg)
{
    (void)self;
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    int status = gs_set_amx(on);
    if (status) return gs_raise(status);
    Py_RETURN_NONE;
}

static PyObject *py_amx(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyBool_FromLong(gs_amx());
}

static PyMethodDef module_methods[] = {
    {"set_isa", py_set_isa, METH_O,
     "set_isa(name): the kernel path every C kernel uses from now on: 'scalar', 'avx2' or 'avx512' "
     "(no higher than best_isa())."},
    {"get_isa", py_get_isa, METH_NOARGS, "get_isa() -> str: the kernel path in use."},
    {"best_isa", py_best_isa, METH_NOARGS, "best_isa() -> str: the best kernel path this CPU supports."},
    {"set_precision", py_set_precision, METH_O,
     "set_precision(name): precision of the matrix products from now on: 'fp32' or 'bf16' "
     "(bf16 needs has_bf16() and the avx512 path)."},
    {"get_precision", py_get_precision, METH_NOARGS, "get_precision() -> str: 'fp32' or 'bf16'."},
    {"has_bf16", py_has_bf16, METH_NOARGS,
     "has_bf16() -> bool: the CPU can run bf16 products (AVX512-BF16 and the AVX-512 path)."},
    {"set_amx", py_set_amx, METH_O,
     "set_amx(on): allow (True, the default where available) or forbid AMX tiles for the bf16 "
     "products; ValueError if asked for where there is none."},
    {"amx", py_amx, METH_NOARGS, "amx() -> bool: the bf16 products would run on AMX tiles."},
    {"set_num_threads", py_set_num_threads, METH_O,
     "set_num_threads(n): threads used by every C kernel; 0 restores the OpenMP default "
     "(OMP_NUM_THREADS). n must be an integer in [0, max(256, processors)]: more threads "
     "than that only thrash, and OpenMP cannot create millions of them."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS,
     "get_num_threads() -> int: threads the C kernels use."},
    {NULL, NULL, 0, NULL}};

/* One table per subsystem; module init concatenates them. */
static PyMethodDef *method_tables[] = {
    module_methods, gs_tensor_methods, gs_layers_methods, gs_t5_methods,
    gs_decode_methods, gs_quant_methods, gs_embeddings_methods, NULL};

static struct PyModuleDef core_module = {PyModuleDef_HEAD_INIT, "_core",
                                         "gensar's C core (see csrc/).", -1, NULL};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();
    gs_flush_denormals();
    size_t count = 0;
    for (PyMethodDef **t = method_tables; *t; t++)
        for (PyMethodDef *m = *t; m->ml_name; m++) count++;
    /* Lives as long as the process, as a static table would. */
    static PyMethodDef *all = NULL;
    if (!all) {
        all = PyMem_RawCalloc(count + 1, sizeof(PyMethodDef));
        if (!all) return PyErr_NoMemory();
        size_t k = 0;
        for (PyMethodDef **t = method_tables; *t; t++)
            for (PyMethodDef *m = *t; m->ml_name; m++) all[k++] = *m;
    }
    core_module.m_methods = all;
    return PyModule_Create(&core_module);
}
