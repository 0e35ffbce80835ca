/* Shared helpers of the CPython binding (csrc/python/ is the only place that
 * knows Python). Each subsystem has one py_<name>.c with its method table;
 * module.c assembles them into gensar._core. */
#ifndef GENSAR_BINDING_H
#define GENSAR_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL gensar_ARRAY_API
#ifndef GS_BINDING_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

/* Raises the Python exception matching a core status code, with the core's
 * message, and returns NULL. */
PyObject *gs_raise(int status);

/* Checks that `obj` is a NumPy array of dtype `typenum`, C-contiguous, with
 * ndim in [min_ndim, max_ndim] and no zero-length axis, else raises TypeError or
 * ValueError naming `name` and returns NULL. Non-contiguous arrays are refused,
 * not copied, so a caller never pays a hidden copy. Returns a borrowed ref. */
PyArrayObject *gs_check_array(PyObject *obj, const char *name, int typenum, int min_ndim,
                              int max_ndim);
/* Same as gs_check_array and also requires the array to be writeable. */
PyArrayObject *gs_check_out_array(PyObject *obj, const char *name, int typenum, int min_ndim,
                                  int max_ndim);

/* Rows of an array seen as (rows, last_dim). */
size_t gs_rows(PyArrayObject *a);
int gs_last_dim(PyArrayObject *a);
/* Raises ValueError unless a and b have identical shapes. Returns 0 on success. */
int gs_same_shape(PyArrayObject *a, const char *na, PyArrayObject *b, const char *nb);
/* A new uninitialised float32 array shaped like `like` (or with given dims). */
PyArrayObject *gs_new_f32_like(PyArrayObject *like);
PyArrayObject *gs_new_f32(int ndim, const npy_intp *dims);

extern PyMethodDef gs_tensor_methods[];
extern PyMethodDef gs_layers_methods[];
extern PyMethodDef gs_t5_methods[];
extern PyMethodDef gs_decode_methods[];
extern PyMethodDef gs_quant_methods[];
extern PyMethodDef gs_embeddings_methods[];

#endif
