/* Bindings of csrc/nn/layers.h (embedding, attention, relative position bias,
 * dropout, cross-entropy) for tests and Python-side glue. Every call checks its
 * arrays, then releases the GIL while the kernel runs. */
#include "binding.h"

#include <float.h>
#include <stdint.h>
#include <string.h>

#include "../common.h"
#include "../nn/layers.h"

static PyArrayObject *new_zeros_f32(int ndim, const npy_intp *dims)
{
    return (PyArrayObject *)PyArray_ZEROS(ndim, (npy_intp *)dims, NPY_FLOAT32, 0);
}

static PyObject *py_embedding(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oids, *otab;
    if (!PyArg_ParseTuple(args, "OO", &oids, &otab)) return NULL;
    PyArrayObject *ids = gs_check_array(oids, "ids", NPY_INT32, 1, 1);
    if (!ids) return NULL;
    PyArrayObject *tab = gs_check_array(otab, "table", NPY_FLOAT32, 2, 2);
    if (!tab) return NULL;
    size_t N = (size_t)PyArray_DIM(ids, 0);
    int V = (int)PyArray_DIM(tab, 0), C = (int)PyArray_DIM(tab, 1);
    if (gs_check_ids(N, PyArray_DATA(ids), V, "ids")) return gs_raise(GS_EINVAL);
    npy_intp dims[2] = {(npy_intp)N, C};
    PyArrayObject *out = gs_new_f32(2, dims);
    if (!out) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gs_embedding_forward(N, C, PyArray_DATA(ids), PyArray_DATA(tab), PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyObject *py_embedding_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oids, *odout, *oV;
    int V;
    if (!PyArg_ParseTuple(args, "OOO", &oids, &odout, &oV)) return NULL;
    if (gs_arg_int(oV, "V (vocab size)", 1, INT32_MAX, &V)) return NULL;
    PyArrayObject *ids = gs_check_array(oids, "ids", NPY_INT32, 1, 1);
    if (!ids) return NULL;
    PyArrayObject *dout = gs_check_array(odout, "dout", NPY_FLOAT32, 2, 2);
    if (!dout) return NULL;
    if (PyArray_DIM(dout, 0) != PyArray_DIM(ids, 0)) {
        PyErr_SetString(PyExc_ValueError, "dout must have one row per id");
        return NULL;
    }
    size_t N = (size_t)PyArray_DIM(ids, 0);
    int C = (int)PyArray_DIM(dout, 1);
    if (gs_check_ids(N, PyArray_DATA(ids), V, "ids")) return gs_raise(GS_EINVAL);
    npy_intp dims[2] = {V, C};
    PyArrayObject *dt = new_zeros_f32(2, dims);
    if (!dt) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gs_embedding_backward(N, C, PyArray_DATA(ids), PyArray_DATA(dout), PyArray_DATA(dt));
    Py_END_ALLOW_THREADS
    return (PyObject *)dt;
}

/* Parses q (B,Tq,H*dh), k, v (B,Tk,H*dh) and the options shared by the
 * attention forward and backward bindings into `a`. Returns 0 or -1. */
static int parse_attention(PyObject *oq, PyObject *ok, PyObject *ov, PyObject *oH,
                           PyObject *oscale, int causal, PyObject *omask, PyObject *obias,
                           PyObject *op, PyObject *oseed, PyObject *ostream, PyArrayObject **q,
                           PyArrayObject **k, PyArrayObject **v, gs_attention_args *a)
{
    int H = 0;
    float scale = 1.0f, p = 0.0f;
    unsigned long long seed = 0, stream = 0;
    if (gs_arg_int(oH, "num_heads", 1, INT32_MAX, &H) ||
        gs_arg_float(oscale, "scale", -FLT_MAX, FLT_MAX, 0, &scale) ||
        gs_arg_float(op, "dropout_p", 0.0, 1.0, GS_HI_OPEN, &p) || gs_arg_u64(oseed, "seed", &seed) ||
        gs_arg_u64(ostream, "stream", &stream))
        return -1;
    if (!(*q = gs_check_array(oq, "q", NPY_FLOAT32, 3, 3))) return -1;
    if (!(*k = gs_check_array(ok, "k", NPY_FLOAT32, 3, 3))) return -1;
    if (!(*v = gs_check_array(ov, "v", NPY_FLOAT32, 3, 3))) return -1;
    if (gs_same_shape(*k, "k", *v, "v")) return -1;
    int B = (int)PyArray_DIM(*q, 0), Tq = (int)PyArray_DIM(*q, 1), D = (int)PyArray_DIM(*q, 2);
    int Tk = (int)PyArray_DIM(*k, 1);
    if (PyArray_DIM(*k, 0) != B || PyArray_DIM(*k, 2) != D) {
        PyErr_SetString(PyExc_ValueError, "q (B,Tq,D) and k, v (B,Tk,D) must agree on B and D");
        return -1;
    }
    if (D % H) {
        PyErr_Format(PyExc_ValueError, "num_heads must divide the width %d, got %d", D, H);
        return -1;
    }
    memset(a, 0, sizeof *a);
    a->B = B, a->H = H, a->Tq = Tq, a->Tk = Tk, a->dh = D / H;
    a->ldq = a->ldk = a->ldv = a->ldo = D;
    a->scale = scale, a->causal = causal;
    a->dropout_p = p, a->dropout_seed = seed, a->dropout_stream = stream;
    if (omask != Py_None) {
        PyArrayObject *m = gs_check_array(omask, "key_mask", NPY_INT32, 2, 2);
        if (!m) return -1;
        if (PyArray_DIM(m, 0) != B || PyArray_DIM(m, 1) != Tk) {
            PyErr_Format(PyExc_ValueError, "key_mask must have shape (B, Tk) = (%d, %d)", B, Tk);
            return -1;
        }
        a->key_mask = PyArray_DATA(m);
    }
    if (obias != Py_None) {
        PyArrayObject *pb = gs_check_array(obias, "pos_bias", NPY_FLOAT32, 3, 3);
        if (!pb) return -1;
        if (PyArray_DIM(pb, 0) != H || PyArray_DIM(pb, 1) != Tq || PyArray_DIM(pb, 2) != Tk) {
            PyErr_Format(PyExc_ValueError, "pos_bias must have shape (H, Tq, Tk) = (%d, %d, %d)", H,
                         Tq, Tk);
            return -1;
        }
        a->pos_bias = PyArray_DATA(pb);
    }
    return 0;
}

static PyObject *py_attention(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"q", "k", "v", "num_heads", "scale", "causal", "key_mask",
                             "pos_bias", "dropout_p", "seed", "stream", NULL};
    PyObject *oq, *ok, *ov, *omask = Py_None, *obias = Py_None, *oH, *oscale = NULL, *op = NULL,
             *oseed = NULL, *ostream = NULL;
    int causal = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|OpOOOOO", kwlist, &oq, &ok, &ov, &oH, &oscale,
                                     &causal, &omask, &obias, &op, &oseed, &ostream))
        return NULL;
    PyArrayObject *q, *k, *v;
    gs_attention_args a;
    if (parse_attention(oq, ok, ov, oH, oscale, causal, omask, obias, op, oseed, ostream, &q, &k, &v,
                        &a))
        return NULL;
    npy_intp pd[4] = {a.B, a.H, a.Tq, a.Tk};
    PyArrayObject *out = gs_new_f32_like(q), *probs = gs_new_f32(4, pd);
    if (!out || !probs) {
        Py_XDECREF(out), Py_XDECREF(probs);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = gs_attention_forward(&a, PyArray_DATA(q), PyArray_DATA(k), PyArray_DATA(v),
                              PyArray_DATA(probs), PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (st) {
        Py_DECREF(out), Py_DECREF(probs);
        return gs_raise(st);
    }
    return Py_BuildValue("NN", out, probs);
}

static PyObject *py_attention_backward(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"q", "k", "v", "probs", "dout", "num_heads", "scale", "causal",
                             "key_mask", "pos_bias", "dropout_p", "seed", "stream", NULL};
    PyObject *oq, *ok, *ov, *oprobs, *odout, *omask = Py_None, *obias = Py_None, *oH,
             *oscale = NULL, *op = NULL, *oseed = NULL, *ostream = NULL;
    int causal = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOO|OpOOOOO", kwlist, &oq, &ok, &ov, &oprobs,
                                     &odout, &oH, &oscale, &causal, &omask, &obias, &op, &oseed,
                                     &ostream))
        return NULL;
    PyArrayObject *q, *k, *v;
    gs_attention_args a;
    if (parse_attention(oq, ok, ov, oH, oscale, causal, omask, obias, op, oseed, ostream, &q, &k, &v,
                        &a))
        return NULL;
    PyArrayObject *probs = gs_check_array(oprobs, "probs", NPY_FLOAT32, 4, 4);
    if (!probs) return NULL;
    if (PyArray_DIM(probs, 0) != a.B || PyArray_DIM(probs, 1) != a.H ||
        PyArray_DIM(probs, 2) != a.Tq || PyArray_DIM(probs, 3) != a.Tk) {
        PyErr_SetString(PyExc_ValueError, "probs must have shape (B, H, Tq, Tk)");
        return NULL;
    }
    PyArrayObject *dout = gs_check_array(odout, "dout", NPY_FLOAT32, 3, 3);
    if (!dout || gs_same_shape(q, "q", dout, "dout")) return NULL;
    npy_intp pd[4] = {a.B, a.H, a.Tq, a.Tk}, bd[3] = {a.H, a.Tq, a.Tk};
    PyArrayObject *dq = gs_new_f32_like(q), *dk = gs_new_f32_like(k), *dv = gs_new_f32_like(v);
    PyArrayObject *ds = gs_new_f32(4, pd);
    PyArrayObject *db = a.pos_bias ? new_zeros_f32(3, bd) : NULL;
    if (!dq || !dk || !dv || !ds || (a.pos_bias && !db)) {
        Py_XDECREF(dq), Py_XDECREF(dk), Py_XDECREF(dv), Py_XDECREF(ds), Py_XDECREF(db);
        return NULL;
    }
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = gs_attention_backward(&a, PyArray_DATA(q), PyArray_DATA(k), PyArray_DATA(v),
                          PyArray_DATA(probs), PyArray_DATA(dout), PyArray_DATA(ds),
                          PyArray_DATA(dq), PyArray_DATA(dk), PyArray_DATA(dv),
                          db ? PyArray_DATA(db) : NULL);
    Py_END_ALLOW_THREADS
    Py_DECREF(ds);
    if (st) {
        Py_DECREF(dq), Py_DECREF(dk), Py_DECREF(dv), Py_XDECREF(db);
        return gs_raise(st);
    }
    if (!db) {
        Py_INCREF(Py_None);
        db = (PyArrayObject *)Py_None;
    }
    return Py_BuildValue("NNNN", dq, dk, dv, db);
}

static int check_buckets(int num_buckets, int max_distance)
{
    if (num_buckets < 2 || max_distance < 1) {
        PyErr_Format(PyExc_ValueError,
                     "num_buckets must be >= 2 and max_distance >= 1, got %d and %d", num_buckets,
                     max_distance);
        return -1;
    }
    return 0;
}

static PyObject *py_relative_bucket(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *orel, *onb, *omaxd;
    int rel, bidir, nb, maxd;
    if (!PyArg_ParseTuple(args, "OpOO", &orel, &bidir, &onb, &omaxd)) return NULL;
    if (gs_arg_int(orel, "relative_position", -(1 << 30), 1 << 30, &rel) ||
        gs_arg_int(onb, "num_buckets", 2, 1 << 20, &nb) ||
        gs_arg_int(omaxd, "max_distance", 1, 1 << 30, &maxd) || check_buckets(nb, maxd))
        return NULL;
    return PyLong_FromLong(gs_t5_relative_bucket(rel, bidir, nb, maxd));
}

static PyObject *py_relative_bias(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *otab, *oTq, *oTk, *oq0, *omaxd;
    int Tq, Tk, q0, bidir, maxd;
    if (!PyArg_ParseTuple(args, "OOOOpO", &otab, &oTq, &oTk, &oq0, &bidir, &omaxd)) return NULL;
    PyArrayObject *tab = gs_check_array(otab, "table", NPY_FLOAT32, 2, 2);
    if (!tab) return NULL;
    /* the output holds H * Tq * Tk floats: keep each length below 2**16 */
    if (gs_arg_int(oTq, "Tq", 1, 1 << 16, &Tq) || gs_arg_int(oTk, "Tk", 1, 1 << 16, &Tk) ||
        gs_arg_int(oq0, "q0", 0, 1 << 30, &q0) || gs_arg_int(omaxd, "max_distance", 1, 1 << 30, &maxd))
        return NULL;
    if (PyArray_DIM(tab, 0) > (1 << 20) || PyArray_DIM(tab, 1) > (1 << 16)) {
        PyErr_SetString(PyExc_ValueError, "table must be (num_buckets <= 2**20, H <= 2**16)");
        return NULL;
    }
    int nb = (int)PyArray_DIM(tab, 0), H = (int)PyArray_DIM(tab, 1);
    if (check_buckets(nb, maxd)) return NULL;
    npy_intp dims[3] = {H, Tq, Tk};
    PyArrayObject *out = gs_new_f32(3, dims);
    if (!out) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gs_relative_bias_forward(H, Tq, Tk, q0, bidir, nb, maxd, PyArray_DATA(tab), PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyObject *py_relative_bias_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *odb, *onb, *oq0, *omaxd;
    int nb, q0, bidir, maxd;
    if (!PyArg_ParseTuple(args, "OOOpO", &odb, &onb, &oq0, &bidir, &omaxd)) return NULL;
    PyArrayObject *db = gs_check_array(odb, "dbias", NPY_FLOAT32, 3, 3);
    if (!db || gs_arg_int(onb, "num_buckets", 2, 1 << 20, &nb) ||
        gs_arg_int(oq0, "q0", 0, 1 << 30, &q0) || gs_arg_int(omaxd, "max_distance", 1, 1 << 30, &maxd) ||
        check_buckets(nb, maxd))
        return NULL;
    if (PyArray_DIM(db, 0) > INT32_MAX || PyArray_DIM(db, 1) > INT32_MAX ||
        PyArray_DIM(db, 2) > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "dbias is too large");
        return NULL;
    }
    int H = (int)PyArray_DIM(db, 0), Tq = (int)PyArray_DIM(db, 1), Tk = (int)PyArray_DIM(db, 2);
    npy_intp dims[2] = {nb, H};
    PyArrayObject *dt = new_zeros_f32(2, dims);
    if (!dt) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gs_relative_bias_backward(H, Tq, Tk, q0, bidir, nb, maxd, PyArray_DATA(db), PyArray_DATA(dt));
    Py_END_ALLOW_THREADS
    return (PyObject *)dt;
}

static PyObject *py_dropout(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *op, *oseed, *ostream = NULL;
    float p;
    unsigned long long seed, stream = 0;
    if (!PyArg_ParseTuple(args, "OOO|O", &ox, &op, &oseed, &ostream)) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 1, 8);
    if (!x || gs_arg_float(op, "dropout p", 0.0, 1.0, GS_HI_OPEN, &p) || gs_arg_u64(oseed, "seed", &seed) ||
        gs_arg_u64(ostream, "stream", &stream))
        return NULL;
    PyArrayObject *y = gs_new_f32_like(x);
    if (!y) return NULL;
    size_t n = (size_t)PyArray_SIZE(x);
    Py_BEGIN_ALLOW_THREADS
    gs_dropout(n, p, seed, stream, PyArray_DATA(x), PyArray_DATA(y));
    Py_END_ALLOW_THREADS
    return (PyObject *)y;
}

static int parse_ce(PyObject *ol, PyObject *ot, PyArrayObject **l, PyArrayObject **t)
{
    if (!(*l = gs_check_array(ol, "logits", NPY_FLOAT32, 2, 2))) return -1;
    if (!(*t = gs_check_array(ot, "targets", NPY_INT32, 1, 1))) return -1;
    if (PyArray_DIM(*t, 0) != PyArray_DIM(*l, 0)) {
        PyErr_Format(PyExc_ValueError, "targets must have one entry per row of logits (%zd), got %zd",
                     (Py_ssize_t)PyArray_DIM(*l, 0), (Py_ssize_t)PyArray_DIM(*t, 0));
        return -1;
    }
    return 0;
}

static PyObject *py_cross_entropy(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"logits", "targets", "ignore_index", NULL};
    PyObject *ol, *ot, *oignore = NULL;
    int ignore = -100;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kwlist, &ol, &ot, &oignore)) return NULL;
    if (gs_arg_int(oignore, "ignore_index", INT32_MIN, INT32_MAX, &ignore)) return NULL;
    PyArrayObject *l, *t;
    if (parse_ce(ol, ot, &l, &t)) return NULL;
    size_t N = (size_t)PyArray_DIM(l, 0);
    int V = (int)PyArray_DIM(l, 1);
    npy_intp nd[1] = {(npy_intp)N};
    PyArrayObject *rl = gs_new_f32(1, nd);
    if (!rl) return NULL;
    double sum = 0.0;
    size_t count = 0;
    int st;
    Py_BEGIN_ALLOW_THREADS
    st = gs_cross_entropy_forward(N, V, PyArray_DATA(l), PyArray_DATA(t), ignore, PyArray_DATA(rl),
                                  &sum, &count);
    Py_END_ALLOW_THREADS
    if (st) {
        Py_DECREF(rl);
        return gs_raise(st);
    }
    return Py_BuildValue("dNn", count ? sum / count : 0.0, rl, (Py_ssize_t)count);
}

static PyObject *py_cross_entropy_backward(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"logits", "targets", "scale", "ignore_index", NULL};
    PyObject *ol, *ot, *oscale, *oignore = NULL;
    int ignore = -100;
    float scale;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|O", kwlist, &ol, &ot, &oscale, &oignore))
        return NULL;
    if (gs_arg_float(oscale, "scale", -FLT_MAX, FLT_MAX, 0, &scale) ||
        gs_arg_int(oignore, "ignore_index", INT32_MIN, INT32_MAX, &ignore))
        return NULL;
    PyArrayObject *l, *t;
    if (parse_ce(ol, ot, &l, &t)) return NULL;
    size_t N = (size_t)PyArray_DIM(l, 0);
    int V = (int)PyArray_DIM(l, 1);
    const int32_t *pt = PyArray_DATA(t);
    for (size_t n = 0; n < N; n++)
        if (pt[n] != ignore && (pt[n] < 0 || pt[n] >= V)) {
            PyErr_Format(PyExc_ValueError, "targets[%zu] = %d must be in [0, %d) or %d", n,
                         (int)pt[n], V, ignore);
            return NULL;
        }
    PyArrayObject *dl = gs_new_f32_like(l);
    if (!dl) return NULL;
    Py_BEGIN_ALLOW_THREADS
    gs_cross_entropy_backward(N, V, PyArray_DATA(l), pt, ignore, scale, PyArray_DATA(dl));
    Py_END_ALLOW_THREADS
    return (PyObject *)dl;
}

PyMethodDef gs_layers_methods[] = {
    {"embedding", py_embedding, METH_VARARGS,
     "embedding(ids int32 (N,), table (V,C)) -> out (N,C) = table[ids]"},
    {"embedding_backward", py_embedding_backward, METH_VARARGS,
     "embedding_backward(ids (N,), dout (N,C), V) -> dtable (V,C)"},
    {"attention", (PyCFunction)(void (*)(void))py_attention, METH_VARARGS | METH_KEYWORDS,
     "attention(q (B,Tq,D), k (B,Tk,D), v (B,Tk,D), num_heads, scale=1.0, causal=False, "
     "key_mask=None (B,Tk) int32, pos_bias=None (H,Tq,Tk), dropout_p=0.0, seed=0, stream=0) "
     "-> (out (B,Tq,D), probs (B,H,Tq,Tk))"},
    {"attention_backward", (PyCFunction)(void (*)(void))py_attention_backward,
     METH_VARARGS | METH_KEYWORDS,
     "attention_backward(q, k, v, probs, dout, num_heads, ...same options) -> "
     "(dq, dk, dv, dpos_bias (H,Tq,Tk) or None)"},
    {"relative_bucket", py_relative_bucket, METH_VARARGS,
     "relative_bucket(relative_position, bidirectional, num_buckets, max_distance) -> int (T5)"},
    {"relative_bias", py_relative_bias, METH_VARARGS,
     "relative_bias(table (num_buckets,H), Tq, Tk, q0, bidirectional, max_distance) -> (H,Tq,Tk)"},
    {"relative_bias_backward", py_relative_bias_backward, METH_VARARGS,
     "relative_bias_backward(dbias (H,Tq,Tk), num_buckets, q0, bidirectional, max_distance) -> "
     "dtable (num_buckets,H)"},
    {"dropout", py_dropout, METH_VARARGS,
     "dropout(x, p, seed, stream=0) -> y (counter-based; the backward is the same call on dy)"},
    {"cross_entropy", (PyCFunction)(void (*)(void))py_cross_entropy, METH_VARARGS | METH_KEYWORDS,
     "cross_entropy(logits (N,V), targets int32 (N,), ignore_index=-100) -> "
     "(mean loss, row_loss (N,), count)"},
    {"cross_entropy_backward", (PyCFunction)(void (*)(void))py_cross_entropy_backward,
     METH_VARARGS | METH_KEYWORDS,
     "cross_entropy_backward(logits, targets, scale, ignore_index=-100) -> dlogits (N,V)"},
    {NULL, NULL, 0, NULL}};
