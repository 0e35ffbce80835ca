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

/* Checks that `obj` is a NumPy array of dtype `typenum` in native byte order,
 * aligned, C-contiguous, with ndim in [min_ndim, max_ndim] and no zero-length
 * axis, else raises TypeError or
 * ValueError naming `name` and returns NULL. Non-contiguous arrays are refused,
 * not copied, so a caller never pays a hidden copy. Returns a borrowed ref. */
PyArrayObject *gs_check_array(PyObject *obj, const char *name, int typenum, int min_ndim,
                              int max_ndim);
/* Same as gs_check_array and also requires the array to be writeable. */
PyArrayObject *gs_check_out_array(PyObject *obj, const char *name, int typenum, int min_ndim,
                                  int max_ndim);

/* The one place where arguments are checked, so every error names the argument.
 *
 * Integers: a Python int or NumPy integer; bool, float (3.7), str and None are
 * refused with TypeError, values outside [lo, hi] (including >= 2**63) with
 * ValueError; nothing wraps or truncates. `o == NULL` (an omitted optional
 * argument) leaves *out untouched and succeeds. Return 0, or -1 with an exception. */
int gs_arg_int64(PyObject *o, const char *name, long long lo, long long hi, long long *out);
int gs_arg_int(PyObject *o, const char *name, int lo, int hi, int *out);
/* A seed or stream: an integer in [0, 2**64) (negative seeds are refused, not wrapped). */
int gs_arg_u64(PyObject *o, const char *name, unsigned long long *out);
/* Real numbers: int, float or NumPy scalar (bool refused), NaN always refused,
 * infinities refused unless GS_ALLOW_INF; the range is [lo, hi] with GS_LO_OPEN /
 * GS_HI_OPEN making that end exclusive. */
enum { GS_LO_OPEN = 1, GS_HI_OPEN = 2, GS_ALLOW_INF = 4 };
int gs_arg_double(PyObject *o, const char *name, double lo, double hi, int flags, double *out);
/* Same, for a float32 setting (also refuses values that overflow float32). */
int gs_arg_float(PyObject *o, const char *name, double lo, double hi, int flags, float *out);
/* Raises ValueError unless the byte ranges of a and b are disjoint (both are
 * C-contiguous after gs_check_array, so their ranges are exact). 0 or -1. */
int gs_no_overlap(PyArrayObject *a, const char *na, PyArrayObject *b, const char *nb);

/* AdamW settings (each object may be NULL = keep cfg's default), checked and
 * named: lr, weight_decay >= 0 and eps > 0, finite; betas in [0, 1). */
#include "../nn/optim.h"
int gs_parse_adamw(PyObject *lr, PyObject *beta1, PyObject *beta2, PyObject *eps, PyObject *wd,
                   gs_adamw_config *cfg);

/* Per-model lock, for models shared between Python threads. A readers-writer
 * lock: calls that write the model (its activation workspace, gradients,
 * parameters: logits, forward_backward, train_step...) take it exclusively;
 * calls that only read the parameters and work in their own buffers (beam
 * search, decoding caches, BERT encode, SASRec scoring) take it shared, so they
 * still run in parallel with each other but never beside a training step. The
 * lock lives in the capsule's context (gs_capsule_add_lock after PyCapsule_New;
 * capsule destructors call gs_capsule_free_lock). Take it with the GIL released:
 *     gs_model_lock *lk = gs_capsule_lock(cap);
 *     Py_BEGIN_ALLOW_THREADS  gs_lock_write(lk); ...C call...; gs_unlock(lk);  Py_END_ALLOW_THREADS
 * (waiting with the GIL held could deadlock against a thread that needs the GIL). */
#include <pthread.h>
typedef pthread_rwlock_t gs_model_lock;
int gs_capsule_add_lock(PyObject *cap);
/* A capsule owning `ptr` (destructor `dtor`) with its lock: the one way a model
 * object reaches Python. On failure returns NULL and ptr still belongs to the caller. */
PyObject *gs_new_model_capsule(void *ptr, const char *name, PyCapsule_Destructor dtor);
void gs_capsule_free_lock(PyObject *cap);
gs_model_lock *gs_capsule_lock(PyObject *cap);
void gs_lock_write(gs_model_lock *lk);
void gs_lock_read(gs_model_lock *lk);
void gs_unlock(gs_model_lock *lk);
/* The idiom above in one line: runs the statement(s) `...` with the GIL released
 * and the lock of the model in capsule `cap` held exclusively (WRITE) or shared
 * (READ). The statements must not touch Python objects. */
#define GS_LOCKED_(cap, take, ...)                                                                 \
    do {                                                                                           \
        gs_model_lock *gs_lk_ = gs_capsule_lock(cap);                                              \
        Py_BEGIN_ALLOW_THREADS take(gs_lk_);                                                       \
        unsigned gs_csr_ = gs_ftz_enter(); /* denormals flushed inside the call only */           \
        __VA_ARGS__;                                                                               \
        gs_ftz_leave(gs_csr_);                                                                     \
        gs_unlock(gs_lk_);                                                                         \
        Py_END_ALLOW_THREADS                                                                       \
    } while (0)
#define GS_WRITE_LOCKED(cap, ...) GS_LOCKED_(cap, gs_lock_write, __VA_ARGS__)
#define GS_READ_LOCKED(cap, ...) GS_LOCKED_(cap, gs_lock_read, __VA_ARGS__)

/* Rows of an array seen as (rows, last_dim). */
size_t gs_rows(PyArrayObject *a);
int gs_last_dim(PyArrayObject *a);
/* Raises ValueError unless a and b have identical shapes. Returns 0 on success. */
int gs_same_shape(PyArrayObject *a, const char *na, PyArrayObject *b, const char *nb);
/* The encoder input of a T5 call: input_ids int32 (B, T) or (B, T, K) (K token slots per
 * position whose embeddings are summed: an item bag, see gs_t5_check_batch) and
 * attention_mask int32 (B, T). Sets *B, *T, *K (1 for 2-D ids) and the data pointers.
 * 0, or -1 with a ValueError / TypeError naming the argument. */
int gs_parse_encoder_input(PyObject *oids, PyObject *omask, int *B, int *T, int *K,
                           const int32_t **ids, const int32_t **mask);
/* A new uninitialised float32 array shaped like `like` (or with given dims). */
PyArrayObject *gs_new_f32_like(PyArrayObject *like);
PyArrayObject *gs_new_f32(int ndim, const npy_intp *dims);
/* A zero-copy 1-D float32 view of n floats at p that keeps `owner` alive. */
PyObject *gs_f32_view(PyObject *owner, float *p, size_t n);

extern PyMethodDef gs_tensor_methods[];
extern PyMethodDef gs_layers_methods[];
extern PyMethodDef gs_t5_methods[];
extern PyMethodDef gs_decode_methods[];
extern PyMethodDef gs_quant_methods[];
extern PyMethodDef gs_embeddings_methods[];

#endif
