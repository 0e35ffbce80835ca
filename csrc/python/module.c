/* gensar._core: module definition, error mapping and argument checks shared by
 * the per-subsystem binding files. */
#define GS_BINDING_MAIN
#include "binding.h"

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
    for (int i = 0; i < nd; i++)
        if (PyArray_DIM(a, i) == 0) {
            PyErr_Format(PyExc_ValueError, "%s is empty (axis %d has length 0)", name, i);
            return NULL;
        }
    return a;
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
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "number of threads must be >= 0 (0 = OpenMP default)");
        return NULL;
    }
    gs_set_num_threads((int)n);
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

static PyMethodDef module_methods[] = {
    {"set_isa", py_set_isa, METH_O,
     "set_isa(name): the kernel path every C kernel uses from now on: 'scalar', 'avx2' or 'avx512' "
     "(no higher than best_isa())."},
    {"get_isa", py_get_isa, METH_NOARGS, "get_isa() -> str: the kernel path in use."},
    {"best_isa", py_best_isa, METH_NOARGS, "best_isa() -> str: the best kernel path this CPU supports."},
    {"set_num_threads", py_set_num_threads, METH_O,
     "set_num_threads(n): threads used by every C kernel; 0 restores the OpenMP default "
     "(OMP_NUM_THREADS)."},
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
