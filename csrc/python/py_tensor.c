/* Bindings of csrc/tensor: the matrix multiply and the row-wise kernels, for
 * tests, benchmarks and Python-side glue. Every function releases the GIL while
 * the kernel runs. */
#include "binding.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../common.h"
#include "../tensor/gemm.h"
#include "../nn/linear.h"
#include "../nn/optim.h"
#include "../tensor/ops.h"

static PyObject *py_sgemm(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"a", "b", "trans_a", "trans_b", "alpha", "beta", "out", NULL};
    PyObject *oa, *ob, *oout = Py_None, *oalpha = NULL, *obeta = NULL;
    int ta = 0, tb = 0;
    float alpha = 1.0f, beta = 0.0f;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|ppOOO", kwlist, &oa, &ob, &ta, &tb, &oalpha,
                                     &obeta, &oout))
        return NULL;
    if (gs_arg_float(oalpha, "alpha", -FLT_MAX, FLT_MAX, 0, &alpha) ||
        gs_arg_float(obeta, "beta", -FLT_MAX, FLT_MAX, 0, &beta))
        return NULL;
    PyArrayObject *a = gs_check_array(oa, "a", NPY_FLOAT32, 2, 2);
    if (!a) return NULL;
    PyArrayObject *b = gs_check_array(ob, "b", NPY_FLOAT32, 2, 2);
    if (!b) return NULL;
    npy_intp M = PyArray_DIM(a, ta ? 1 : 0), K = PyArray_DIM(a, ta ? 0 : 1);
    npy_intp Kb = PyArray_DIM(b, tb ? 1 : 0), N = PyArray_DIM(b, tb ? 0 : 1);
    if (K != Kb) {
        PyErr_Format(PyExc_ValueError,
                     "inner dimensions differ: op(a) is (%zd, %zd) and op(b) is (%zd, %zd)",
                     (Py_ssize_t)M, (Py_ssize_t)K, (Py_ssize_t)Kb, (Py_ssize_t)N);
        return NULL;
    }
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "matrix dimensions must be below 2**31");
        return NULL;
    }
    PyArrayObject *out;
    if (oout == Py_None) {
        if (beta != 0.0f) {
            PyErr_SetString(PyExc_ValueError, "beta != 0 accumulates into C: pass out=");
            return NULL;
        }
        npy_intp dims[2] = {M, N};
        out = gs_new_f32(2, dims);
        if (!out) return NULL;
    } else {
        out = gs_check_out_array(oout, "out", NPY_FLOAT32, 2, 2);
        if (!out) return NULL;
        if (PyArray_DIM(out, 0) != M || PyArray_DIM(out, 1) != N) {
            PyErr_Format(PyExc_ValueError, "out must have shape (%zd, %zd)", (Py_ssize_t)M,
                         (Py_ssize_t)N);
            return NULL;
        }
        /* Any overlap, not only the same start pointer: the kernel writes out in
         * blocks while it still reads a and b. */
        if (gs_no_overlap(a, "a", out, "out") || gs_no_overlap(b, "b", out, "out")) return NULL;
        Py_INCREF(out);
    }
    const float *pa = PyArray_DATA(a), *pb = PyArray_DATA(b);
    float *pc = PyArray_DATA(out);
    int lda = (int)PyArray_DIM(a, 1), ldb = (int)PyArray_DIM(b, 1);
    Py_BEGIN_ALLOW_THREADS
    gs_sgemm(ta, tb, (int)M, (int)N, (int)K, alpha, pa, lda, pb, ldb, beta, pc, (int)N);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyObject *py_softmax(PyObject *self, PyObject *arg)
{
    (void)self;
    PyArrayObject *x = gs_check_array(arg, "x", NPY_FLOAT32, 1, 8);
    if (!x) return NULL;
    PyArrayObject *y = gs_new_f32_like(x);
    if (!y) return NULL;
    size_t rows = gs_rows(x);
    int n = gs_last_dim(x);
    const float *px = PyArray_DATA(x);
    float *py = PyArray_DATA(y);
    Py_BEGIN_ALLOW_THREADS
    gs_softmax_forward(rows, n, px, py);
    Py_END_ALLOW_THREADS
    return (PyObject *)y;
}

static PyObject *py_softmax_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oy, *ody;
    if (!PyArg_ParseTuple(args, "OO", &oy, &ody)) return NULL;
    PyArrayObject *y = gs_check_array(oy, "y", NPY_FLOAT32, 1, 8);
    if (!y) return NULL;
    PyArrayObject *dy = gs_check_array(ody, "dy", NPY_FLOAT32, 1, 8);
    if (!dy || gs_same_shape(y, "y", dy, "dy")) return NULL;
    PyArrayObject *dx = gs_new_f32_like(y);
    if (!dx) return NULL;
    size_t rows = gs_rows(y);
    int n = gs_last_dim(y);
    const float *py = PyArray_DATA(y), *pdy = PyArray_DATA(dy);
    float *pdx = PyArray_DATA(dx);
    Py_BEGIN_ALLOW_THREADS
    gs_softmax_backward(rows, n, py, pdy, pdx);
    Py_END_ALLOW_THREADS
    return (PyObject *)dx;
}

/* Checks a (C,) parameter vector matching the last axis of x. */
static PyArrayObject *check_param(PyObject *o, const char *name, PyArrayObject *x)
{
    PyArrayObject *p = gs_check_array(o, name, NPY_FLOAT32, 1, 1);
    if (p && PyArray_DIM(p, 0) != gs_last_dim(x)) {
        PyErr_Format(PyExc_ValueError, "%s must have shape (%d,) to match the last axis of x, got (%zd,)",
                     name, gs_last_dim(x), (Py_ssize_t)PyArray_DIM(p, 0));
        return NULL;
    }
    return p;
}

/* eps of the norms: a positive finite float32 (parsed from an optional argument). */
static int parse_eps(PyObject *o, float *eps)
{
    return gs_arg_float(o, "eps", 0.0, FLT_MAX, GS_LO_OPEN, eps);
}

static PyObject *py_layernorm(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"x", "gamma", "beta", "eps", NULL};
    PyObject *ox, *og, *ob = Py_None, *oeps = NULL;
    float eps = 1e-5f;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OO", kwlist, &ox, &og, &ob, &oeps)) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8);
    if (!x || parse_eps(oeps, &eps)) return NULL;
    PyArrayObject *g = check_param(og, "gamma", x), *b = NULL;
    if (!g) return NULL;
    if (ob != Py_None && !(b = check_param(ob, "beta", x))) return NULL;
    size_t rows = gs_rows(x);
    npy_intp rdim[1] = {(npy_intp)rows};
    PyArrayObject *y = gs_new_f32_like(x), *mean = gs_new_f32(1, rdim), *rstd = gs_new_f32(1, rdim);
    if (!y || !mean || !rstd) {
        Py_XDECREF(y), Py_XDECREF(mean), Py_XDECREF(rstd);
        return NULL;
    }
    const float *px = PyArray_DATA(x), *pg = PyArray_DATA(g), *pb = b ? PyArray_DATA(b) : NULL;
    float *py = PyArray_DATA(y), *pm = PyArray_DATA(mean), *pr = PyArray_DATA(rstd);
    int C = gs_last_dim(x);
    Py_BEGIN_ALLOW_THREADS
    gs_layernorm_forward(rows, C, px, pg, pb, eps, py, pm, pr);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("NNN", y, mean, rstd);
}

/* Checks a (rows,) statistics vector saved by a forward pass. */
static PyArrayObject *check_stat(PyObject *o, const char *name, PyArrayObject *x)
{
    PyArrayObject *s = gs_check_array(o, name, NPY_FLOAT32, 1, 1);
    if (s && (size_t)PyArray_DIM(s, 0) != gs_rows(x)) {
        PyErr_Format(PyExc_ValueError, "%s must have one entry per row of x (%zu), got %zd", name,
                     gs_rows(x), (Py_ssize_t)PyArray_DIM(s, 0));
        return NULL;
    }
    return s;
}

static PyObject *py_layernorm_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *og, *om, *or, *ody;
    if (!PyArg_ParseTuple(args, "OOOOO", &ox, &og, &om, &or, &ody)) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8);
    if (!x) return NULL;
    PyArrayObject *g = check_param(og, "gamma", x);
    if (!g) return NULL;
    PyArrayObject *m = check_stat(om, "mean", x);
    if (!m) return NULL;
    PyArrayObject *r = check_stat(or, "rstd", x);
    if (!r) return NULL;
    PyArrayObject *dy = gs_check_array(ody, "dy", NPY_FLOAT32, 1, 8);
    if (!dy || gs_same_shape(x, "x", dy, "dy")) return NULL;
    npy_intp cdim[1] = {gs_last_dim(x)};
    PyArrayObject *dx = gs_new_f32_like(x);
    PyArrayObject *dg = (PyArrayObject *)PyArray_ZEROS(1, cdim, NPY_FLOAT32, 0);
    PyArrayObject *db = (PyArrayObject *)PyArray_ZEROS(1, cdim, NPY_FLOAT32, 0);
    if (!dx || !dg || !db) {
        Py_XDECREF(dx), Py_XDECREF(dg), Py_XDECREF(db);
        return NULL;
    }
    size_t rows = gs_rows(x);
    int C = gs_last_dim(x);
    Py_BEGIN_ALLOW_THREADS
    gs_layernorm_backward(rows, C, PyArray_DATA(x), PyArray_DATA(g), PyArray_DATA(m),
                          PyArray_DATA(r), PyArray_DATA(dy), PyArray_DATA(dx), PyArray_DATA(dg),
                          PyArray_DATA(db));
    Py_END_ALLOW_THREADS
    return Py_BuildValue("NNN", dx, dg, db);
}

static PyObject *py_rmsnorm(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"x", "weight", "eps", NULL};
    PyObject *ox, *ow, *oeps = NULL;
    float eps = 1e-6f;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kwlist, &ox, &ow, &oeps)) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8);
    if (!x || parse_eps(oeps, &eps)) return NULL;
    PyArrayObject *w = check_param(ow, "weight", x);
    if (!w) return NULL;
    size_t rows = gs_rows(x);
    npy_intp rdim[1] = {(npy_intp)rows};
    PyArrayObject *y = gs_new_f32_like(x), *rstd = gs_new_f32(1, rdim);
    if (!y || !rstd) {
        Py_XDECREF(y), Py_XDECREF(rstd);
        return NULL;
    }
    int C = gs_last_dim(x);
    Py_BEGIN_ALLOW_THREADS
    gs_rmsnorm_forward(rows, C, PyArray_DATA(x), PyArray_DATA(w), eps, PyArray_DATA(y),
                       PyArray_DATA(rstd));
    Py_END_ALLOW_THREADS
    return Py_BuildValue("NN", y, rstd);
}

static PyObject *py_rmsnorm_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *ow, *or, *ody;
    if (!PyArg_ParseTuple(args, "OOOO", &ox, &ow, &or, &ody)) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8);
    if (!x) return NULL;
    PyArrayObject *w = check_param(ow, "weight", x);
    if (!w) return NULL;
    PyArrayObject *r = check_stat(or, "rstd", x);
    if (!r) return NULL;
    PyArrayObject *dy = gs_check_array(ody, "dy", NPY_FLOAT32, 1, 8);
    if (!dy || gs_same_shape(x, "x", dy, "dy")) return NULL;
    npy_intp cdim[1] = {gs_last_dim(x)};
    PyArrayObject *dx = gs_new_f32_like(x);
    PyArrayObject *dw = (PyArrayObject *)PyArray_ZEROS(1, cdim, NPY_FLOAT32, 0);
    if (!dx || !dw) {
        Py_XDECREF(dx), Py_XDECREF(dw);
        return NULL;
    }
    size_t rows = gs_rows(x);
    int C = gs_last_dim(x);
    Py_BEGIN_ALLOW_THREADS
    gs_rmsnorm_backward(rows, C, PyArray_DATA(x), PyArray_DATA(w), PyArray_DATA(r),
                        PyArray_DATA(dy), PyArray_DATA(dx), PyArray_DATA(dw));
    Py_END_ALLOW_THREADS
    return Py_BuildValue("NN", dx, dw);
}

typedef void (*unary_fn)(size_t, const float *, float *);
typedef void (*unary_bwd_fn)(size_t, const float *, const float *, float *);

static const struct {
    const char *name;
    unary_fn fwd;
    unary_bwd_fn bwd;
} activations[] = {{"relu", gs_relu_forward, gs_relu_backward},
                   {"gelu_tanh", gs_gelu_tanh_forward, gs_gelu_tanh_backward},
                   {"gelu_erf", gs_gelu_erf_forward, gs_gelu_erf_backward},
                   {NULL, NULL, NULL}};

static int find_activation(const char *name)
{
    for (int i = 0; activations[i].name; i++)
        if (strcmp(activations[i].name, name) == 0) return i;
    PyErr_Format(PyExc_ValueError,
                 "unknown activation '%s'; expected 'relu', 'gelu_tanh' or 'gelu_erf'", name);
    return -1;
}

static PyObject *py_activation(PyObject *self, PyObject *args)
{
    (void)self;
    const char *name;
    PyObject *ox;
    if (!PyArg_ParseTuple(args, "sO", &name, &ox)) return NULL;
    int k = find_activation(name);
    if (k < 0) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8);
    if (!x) return NULL;
    PyArrayObject *y = gs_new_f32_like(x);
    if (!y) return NULL;
    size_t n = (size_t)PyArray_SIZE(x);
    Py_BEGIN_ALLOW_THREADS
    activations[k].fwd(n, PyArray_DATA(x), PyArray_DATA(y));
    Py_END_ALLOW_THREADS
    return (PyObject *)y;
}

static PyObject *py_activation_backward(PyObject *self, PyObject *args)
{
    (void)self;
    const char *name;
    PyObject *ox, *ody;
    if (!PyArg_ParseTuple(args, "sOO", &name, &ox, &ody)) return NULL;
    int k = find_activation(name);
    if (k < 0) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8);
    if (!x) return NULL;
    PyArrayObject *dy = gs_check_array(ody, "dy", NPY_FLOAT32, 1, 8);
    if (!dy || gs_same_shape(x, "x", dy, "dy")) return NULL;
    PyArrayObject *dx = gs_new_f32_like(x);
    if (!dx) return NULL;
    size_t n = (size_t)PyArray_SIZE(x);
    Py_BEGIN_ALLOW_THREADS
    activations[k].bwd(n, PyArray_DATA(x), PyArray_DATA(dy), PyArray_DATA(dx));
    Py_END_ALLOW_THREADS
    return (PyObject *)dx;
}

static PyObject *py_gemm_kernel_name(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyUnicode_FromString(gs_sgemm_kernel_name());
}


/* Checks W (OC, C) against x (..., C) and an optional bias (OC). */
static int check_linear_args(PyArrayObject *x, PyObject *ow, PyObject *ob, PyArrayObject **w,
                             PyArrayObject **b)
{
    *w = gs_check_array(ow, "W", NPY_FLOAT32, 2, 2);
    if (!*w) return -1;
    if (PyArray_DIM(*w, 1) != gs_last_dim(x)) {
        PyErr_Format(PyExc_ValueError, "W must have shape (out_features, %d) to match x, got (%zd, %zd)",
                     gs_last_dim(x), (Py_ssize_t)PyArray_DIM(*w, 0), (Py_ssize_t)PyArray_DIM(*w, 1));
        return -1;
    }
    *b = NULL;
    if (ob && ob != Py_None) {
        *b = gs_check_array(ob, "b", NPY_FLOAT32, 1, 1);
        if (!*b) return -1;
        if (PyArray_DIM(*b, 0) != PyArray_DIM(*w, 0)) {
            PyErr_Format(PyExc_ValueError, "b must have shape (%zd,), got (%zd,)",
                         (Py_ssize_t)PyArray_DIM(*w, 0), (Py_ssize_t)PyArray_DIM(*b, 0));
            return -1;
        }
    }
    return 0;
}

static PyObject *py_linear(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"x", "W", "b", "activation", NULL};
    PyObject *ox, *ow, *ob = Py_None, *oact = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OO", kwlist, &ox, &ow, &ob, &oact)) return NULL;
    /* the one activation fused into the product (a BERT feed-forward layer) */
    int gelu = oact != Py_None;
    if (gelu && !(PyUnicode_Check(oact) && PyUnicode_CompareWithASCIIString(oact, "gelu_erf") == 0)) {
        PyErr_Format(PyExc_ValueError, "activation must be None or 'gelu_erf' (the one fused into "
                     "the product), got %R; apply others with activation(name, y)", oact);
        return NULL;
    }
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8), *w, *b;
    if (!x || check_linear_args(x, ow, ob, &w, &b)) return NULL;
    npy_intp dims[NPY_MAXDIMS];
    int nd = PyArray_NDIM(x);
    for (int i = 0; i < nd; i++) dims[i] = PyArray_DIM(x, i);
    dims[nd - 1] = PyArray_DIM(w, 0);
    PyArrayObject *y = gs_new_f32(nd, dims);
    if (!y) return NULL;
    size_t N = gs_rows(x);
    int C = gs_last_dim(x), OC = (int)PyArray_DIM(w, 0);
    const float *pb = b ? PyArray_DATA(b) : NULL;
    Py_BEGIN_ALLOW_THREADS
    (gelu ? gs_linear_gelu_forward : gs_linear_forward)(N, C, OC, PyArray_DATA(x), PyArray_DATA(w), pb,
                                                        PyArray_DATA(y));
    Py_END_ALLOW_THREADS
    return (PyObject *)y;
}

static PyObject *py_linear_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *ow, *ody;
    if (!PyArg_ParseTuple(args, "OOO", &ox, &ow, &ody)) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8), *w, *b;
    if (!x || check_linear_args(x, ow, NULL, &w, &b)) return NULL;
    PyArrayObject *dy = gs_check_array(ody, "dy", NPY_FLOAT32, 1, 8);
    if (!dy) return NULL;
    size_t N = gs_rows(x);
    int C = gs_last_dim(x), OC = (int)PyArray_DIM(w, 0);
    if (gs_rows(dy) != N || gs_last_dim(dy) != OC) {
        PyErr_Format(PyExc_ValueError, "dy must have shape (..., %d) with the leading shape of x", OC);
        return NULL;
    }
    npy_intp bdim[1] = {OC};
    PyArrayObject *dx = gs_new_f32_like(x);
    PyArrayObject *dw = (PyArrayObject *)PyArray_ZEROS(2, PyArray_DIMS(w), NPY_FLOAT32, 0);
    PyArrayObject *db = (PyArrayObject *)PyArray_ZEROS(1, bdim, NPY_FLOAT32, 0);
    if (!dx || !dw || !db) {
        Py_XDECREF(dx), Py_XDECREF(dw), Py_XDECREF(db);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    gs_linear_backward(N, C, OC, PyArray_DATA(x), PyArray_DATA(w), PyArray_DATA(dy),
                       PyArray_DATA(dx), PyArray_DATA(dw), PyArray_DATA(db));
    Py_END_ALLOW_THREADS
    return Py_BuildValue("NNN", dx, dw, db);
}

static PyObject *py_adamw_step(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"params", "grads", "m", "v", "step", "lr", "beta1", "beta2", "eps",
                             "weight_decay", NULL};
    PyObject *op, *og, *om, *ov, *ot, *olr = NULL, *ob1 = NULL, *ob2 = NULL, *oeps = NULL,
                                      *owd = NULL;
    long long t;
    gs_adamw_config cfg = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|OOOOO", kwlist, &op, &og, &om, &ov, &ot, &olr,
                                     &ob1, &ob2, &oeps, &owd))
        return NULL;
    PyArrayObject *p = gs_check_out_array(op, "params", NPY_FLOAT32, 1, 1);
    if (!p) return NULL;
    PyArrayObject *g = gs_check_array(og, "grads", NPY_FLOAT32, 1, 1);
    if (!g || gs_same_shape(p, "params", g, "grads")) return NULL;
    PyArrayObject *m = gs_check_out_array(om, "m", NPY_FLOAT32, 1, 1);
    if (!m || gs_same_shape(p, "params", m, "m")) return NULL;
    PyArrayObject *v = gs_check_out_array(ov, "v", NPY_FLOAT32, 1, 1);
    if (!v || gs_same_shape(p, "params", v, "v")) return NULL;
    /* The update reads and writes the four buffers element by element: m and v
     * as one buffer (or params as its own gradient) would compute garbage. */
    if (gs_no_overlap(p, "params", g, "grads") || gs_no_overlap(p, "params", m, "m") ||
        gs_no_overlap(p, "params", v, "v") || gs_no_overlap(m, "m", v, "v") ||
        gs_no_overlap(g, "grads", m, "m") || gs_no_overlap(g, "grads", v, "v"))
        return NULL;
    if (gs_arg_int64(ot, "step", 1, LLONG_MAX, &t) || gs_parse_adamw(olr, ob1, ob2, oeps, owd, &cfg))
        return NULL;
    size_t n = (size_t)PyArray_SIZE(p);
    Py_BEGIN_ALLOW_THREADS
    gs_adamw_step(n, PyArray_DATA(p), PyArray_DATA(g), PyArray_DATA(m), PyArray_DATA(v), NULL, &cfg,
                  (long)(t > LONG_MAX ? LONG_MAX : t));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_clip_grad_norm(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *og, *omax;
    double max_norm;
    if (!PyArg_ParseTuple(args, "OO", &og, &omax)) return NULL;
    PyArrayObject *g = gs_check_out_array(og, "grads", NPY_FLOAT32, 1, 1);
    if (!g || gs_arg_double(omax, "max_norm", 0.0, INFINITY, GS_ALLOW_INF, &max_norm)) return NULL;
    double norm;
    size_t n = (size_t)PyArray_SIZE(g);
    Py_BEGIN_ALLOW_THREADS
    norm = gs_clip_grad_norm(n, PyArray_DATA(g), max_norm);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(norm);
}

PyMethodDef gs_tensor_methods[] = {
    {"sgemm", (PyCFunction)(void (*)(void))py_sgemm, METH_VARARGS | METH_KEYWORDS,
     "sgemm(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None) -> out\n\n"
     "out (M,N) = alpha * op(a) (M,K) @ op(b) (K,N) + beta * out, float32, C-contiguous."},
    {"softmax", py_softmax, METH_O, "softmax(x) -> y: softmax over the last axis."},
    {"softmax_backward", py_softmax_backward, METH_VARARGS,
     "softmax_backward(y, dy) -> dx, with y the softmax output."},
    {"layernorm", (PyCFunction)(void (*)(void))py_layernorm, METH_VARARGS | METH_KEYWORDS,
     "layernorm(x, gamma, beta=None, eps=1e-5) -> (y, mean, rstd) over the last axis."},
    {"layernorm_backward", py_layernorm_backward, METH_VARARGS,
     "layernorm_backward(x, gamma, mean, rstd, dy) -> (dx, dgamma, dbeta)."},
    {"rmsnorm", (PyCFunction)(void (*)(void))py_rmsnorm, METH_VARARGS | METH_KEYWORDS,
     "rmsnorm(x, weight, eps=1e-6) -> (y, rstd): T5 RMS norm over the last axis."},
    {"rmsnorm_backward", py_rmsnorm_backward, METH_VARARGS,
     "rmsnorm_backward(x, weight, rstd, dy) -> (dx, dweight)."},
    {"activation", py_activation, METH_VARARGS,
     "activation(name, x) -> y with name in 'relu', 'gelu_tanh', 'gelu_erf'."},
    {"activation_backward", py_activation_backward, METH_VARARGS,
     "activation_backward(name, x, dy) -> dx."},
    {"linear", (PyCFunction)(void (*)(void))py_linear, METH_VARARGS | METH_KEYWORDS,
     "linear(x, W, b=None, activation=None) -> y: x (..., C) @ W^T, W (OC, C), b (OC) -> y (..., OC);\n"
     "activation='gelu_erf' applies GELU to each tile of y as it is computed."},
    {"linear_backward", py_linear_backward, METH_VARARGS,
     "linear_backward(x, W, dy) -> (dx, dW, db)."},
    {"adamw_step", (PyCFunction)(void (*)(void))py_adamw_step, METH_VARARGS | METH_KEYWORDS,
     "adamw_step(params, grads, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, "
     "weight_decay=0.01): one in-place AdamW update of flat float32 buffers; step counts from 1."},
    {"clip_grad_norm", py_clip_grad_norm, METH_VARARGS,
     "clip_grad_norm(grads, max_norm) -> norm before clipping; scales grads in place. "
     "max_norm >= 0 (0 or inf: no clipping)."},
    {"gemm_kernel_name", py_gemm_kernel_name, METH_NOARGS,
     "gemm_kernel_name() -> str: the SGEMM micro-kernel chosen for this CPU."},
    {NULL, NULL, 0, NULL}};
