/* Bindings of the embedding models: the BERT sentence encoder (csrc/nn/bert.h) and the
 * SASRec sequential recommender (csrc/nn/sasrec.h). Models are PyCapsules whose destructor
 * frees the C model; their parameters are exposed as zero-copy NumPy views that keep the
 * capsule alive. Compute runs with the GIL released, under the model's lock
 * (binding.h): the models keep activation scratch, so one model shared by
 * several Python threads runs their calls one at a time. */
#include "binding.h"

#include <float.h>
#include <limits.h>
#include <math.h>

#include "../common.h"
#include "../nn/bert.h"
#include "../nn/sasrec.h"

#define BERT_CAPSULE "gensar.bert"

static void bert_capsule_free(PyObject *cap)
{
    gs_bert_free((gs_bert *)PyCapsule_GetPointer(cap, BERT_CAPSULE));
    gs_capsule_free_lock(cap);
}

static gs_bert *bert_from(PyObject *cap)
{
    if (!PyCapsule_IsValid(cap, BERT_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "model must be a BERT handle made by bert_new()");
        return NULL;
    }
    return (gs_bert *)PyCapsule_GetPointer(cap, BERT_CAPSULE);
}

static int parse_bert_config(PyObject *args, PyObject *kw, gs_bert_config *c)
{
    static char *kwlist[] = {"vocab_size", "hidden", "layers", "heads", "intermediate",
                             "max_positions", "type_vocab_size", "layer_norm_eps", NULL};
    PyObject *o[8];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOO", kwlist, &o[0], &o[1], &o[2], &o[3],
                                     &o[4], &o[5], &o[6], &o[7]))
        return -1;
    int *sizes[7] = {&c->vocab_size, &c->hidden, &c->layers, &c->heads, &c->intermediate,
                     &c->max_positions, &c->type_vocab_size};
    for (int i = 0; i < 7; i++)
        if (gs_arg_int(o[i], kwlist[i], 1, INT32_MAX, sizes[i])) return -1;
    if (gs_arg_float(o[7], "layer_norm_eps", 0.0, FLT_MAX, GS_LO_OPEN, &c->layer_norm_eps)) return -1;
    int st = gs_bert_check_config(c);
    if (st) {
        gs_raise(st);
        return -1;
    }
    return 0;
}

static PyObject *py_bert_tensor_specs(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    gs_bert_config c;
    if (parse_bert_config(args, kw, &c)) return NULL;
    int n = gs_bert_num_tensors(&c);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        gs_bert_tensor s;
        gs_bert_tensor_spec(&c, i, &s);
        PyObject *item = s.cols == 1 ? Py_BuildValue("(sn(i))", s.name, (Py_ssize_t)s.offset, s.rows)
                                     : Py_BuildValue("(sn(ii))", s.name, (Py_ssize_t)s.offset,
                                                     s.rows, s.cols);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *py_bert_new(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    gs_bert_config c;
    if (parse_bert_config(args, kw, &c)) return NULL;
    gs_bert *m;
    int st = gs_bert_create(&c, &m);
    if (st) return gs_raise(st);
    PyObject *cap = gs_new_model_capsule(m, BERT_CAPSULE, bert_capsule_free);
    if (!cap) gs_bert_free(m);
    return cap;
}

static PyObject *py_bert_params(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_bert *m = bert_from(cap);
    if (!m) return NULL;
    return gs_f32_view(cap, m->params, m->n_params);
}

static PyObject *py_bert_encode(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model", "ids", "offsets", "type_ids", "pooling", "normalize", NULL};
    PyObject *ocap, *oids, *ooff, *otype = Py_None, *opool = NULL;
    int pooling = GS_BERT_POOL_MEAN, normalize = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OOp", kwlist, &ocap, &oids, &ooff, &otype,
                                     &opool, &normalize))
        return NULL;
    gs_bert *m = bert_from(ocap);
    if (!m || gs_arg_int(opool, "pooling", 0, 1, &pooling)) return NULL;
    PyArrayObject *ids = gs_check_array(oids, "ids", NPY_INT32, 1, 1);
    if (!ids) return NULL;
    PyArrayObject *off = gs_check_array(ooff, "offsets", NPY_INT64, 1, 1);
    if (!off) return NULL;
    PyArrayObject *types = NULL;
    if (otype != Py_None) {
        types = gs_check_array(otype, "type_ids", NPY_INT32, 1, 1);
        if (!types) return NULL;
        if (gs_same_shape(ids, "ids", types, "type_ids")) return NULL;
    }
    npy_intp n_seq = PyArray_DIM(off, 0) - 1;
    if (n_seq < 1 || n_seq > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "offsets must have n_sequences + 1 entries (>= 2), got %zd",
                     (Py_ssize_t)PyArray_DIM(off, 0));
        return NULL;
    }
    const int64_t *o = PyArray_DATA(off);
    if (o[n_seq] != PyArray_DIM(ids, 0)) {
        PyErr_Format(PyExc_ValueError, "offsets[-1] must equal len(ids) = %zd, got %lld",
                     (Py_ssize_t)PyArray_DIM(ids, 0), (long long)o[n_seq]);
        return NULL;
    }
    npy_intp dims[2] = {n_seq, m->cfg.hidden};
    PyArrayObject *out = gs_new_f32(2, dims);
    if (!out) return NULL;
    int st;
    GS_READ_LOCKED(ocap, {
        st = gs_bert_encode(m, (int)n_seq, o, PyArray_DATA(ids), types ? PyArray_DATA(types) : NULL,
                            pooling, normalize, PyArray_DATA(out));
    });
    if (st) {
        Py_DECREF(out);
        return gs_raise(st);
    }
    return (PyObject *)out;
}

/* ------------------------------------------------------------------ SASRec */
#define SASREC_CAPSULE "gensar.sasrec"

static void sasrec_capsule_free(PyObject *cap)
{
    gs_sasrec_free((gs_sasrec *)PyCapsule_GetPointer(cap, SASREC_CAPSULE));
    gs_capsule_free_lock(cap);
}

static gs_sasrec *sasrec_from(PyObject *cap)
{
    if (!PyCapsule_IsValid(cap, SASREC_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "model must be a SASRec handle made by sasrec_new()");
        return NULL;
    }
    return (gs_sasrec *)PyCapsule_GetPointer(cap, SASREC_CAPSULE);
}

static int parse_sasrec_config(PyObject *args, PyObject *kw, gs_sasrec_config *c)
{
    static char *kwlist[] = {"n_items", "max_len", "hidden", "layers", "heads", "inner", "dropout",
                             NULL};
    PyObject *o[7];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOO", kwlist, &o[0], &o[1], &o[2], &o[3], &o[4],
                                     &o[5], &o[6]))
        return -1;
    int *sizes[6] = {&c->n_items, &c->max_len, &c->hidden, &c->layers, &c->heads, &c->inner};
    for (int i = 0; i < 6; i++)
        if (gs_arg_int(o[i], kwlist[i], 1, INT32_MAX, sizes[i])) return -1;
    if (gs_arg_float(o[6], "dropout", 0.0, 1.0, GS_HI_OPEN, &c->dropout)) return -1;
    int st = gs_sasrec_check_config(c);
    if (st) {
        gs_raise(st);
        return -1;
    }
    return 0;
}

static PyObject *py_sasrec_tensor_specs(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    gs_sasrec_config c;
    if (parse_sasrec_config(args, kw, &c)) return NULL;
    int n = gs_sasrec_num_tensors(&c);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        gs_sasrec_tensor s;
        gs_sasrec_tensor_spec(&c, i, &s);
        PyObject *item = s.cols == 1
                             ? Py_BuildValue("(sn(i)i)", s.name, (Py_ssize_t)s.offset, s.rows, s.decay)
                             : Py_BuildValue("(sn(ii)i)", s.name, (Py_ssize_t)s.offset, s.rows,
                                             s.cols, s.decay);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *py_sasrec_new(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    gs_sasrec_config c;
    if (parse_sasrec_config(args, kw, &c)) return NULL;
    gs_sasrec *m;
    int st = gs_sasrec_create(&c, &m);
    if (st) return gs_raise(st);
    PyObject *cap = gs_new_model_capsule(m, SASREC_CAPSULE, sasrec_capsule_free);
    if (!cap) gs_sasrec_free(m);
    return cap;
}

static PyObject *py_sasrec_buffers(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_sasrec *m = sasrec_from(cap);
    if (!m) return NULL;
    PyObject *p = gs_f32_view(cap, m->params, m->n_params), *g = gs_f32_view(cap, m->grads, m->n_params);
    PyObject *mm = gs_f32_view(cap, m->m, m->n_params), *v = gs_f32_view(cap, m->v, m->n_params);
    PyObject *out = (p && g && mm && v) ? PyTuple_Pack(4, p, g, mm, v) : NULL;
    Py_XDECREF(p), Py_XDECREF(g), Py_XDECREF(mm), Py_XDECREF(v);
    return out;
}

static PyObject *py_sasrec_step(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *oset = NULL;
    long long set = -1;
    if (!PyArg_ParseTuple(args, "O|O", &cap, &oset)) return NULL;
    gs_sasrec *m = sasrec_from(cap);
    if (!m || gs_arg_int64(oset, "set", -1, LONG_MAX, &set)) return NULL;
    if (set >= 0) m->step = (long)set;
    return PyLong_FromLong(m->step);
}

/* seqs (B,T) int32 with T == max_len; returns B or -1 with an exception set. */
static int check_seqs_array(gs_sasrec *m, PyArrayObject *a, const char *name)
{
    if (PyArray_DIM(a, 1) != m->cfg.max_len) {
        PyErr_Format(PyExc_ValueError, "%s must have max_len = %d columns, got %zd", name,
                     m->cfg.max_len, (Py_ssize_t)PyArray_DIM(a, 1));
        return -1;
    }
    if (PyArray_DIM(a, 0) > INT32_MAX / 2) {
        PyErr_Format(PyExc_ValueError, "%s has too many rows", name);
        return -1;
    }
    return (int)PyArray_DIM(a, 0);
}

static PyObject *py_sasrec_forward_backward(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model", "seqs", "targets", "train", "seed", "negatives", "log_q", NULL};
    PyObject *ocap, *oseq, *otgt, *oseed = NULL, *oneg = Py_None, *ologq = Py_None;
    int train = 1;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|pOOO", kwlist, &ocap, &oseq, &otgt, &train, &oseed,
                                     &oneg, &ologq))
        return NULL;
    gs_sasrec *m = sasrec_from(ocap);
    if (!m || gs_arg_u64(oseed, "seed", &seed)) return NULL;
    PyArrayObject *seqs = gs_check_array(oseq, "seqs", NPY_INT32, 2, 2);
    if (!seqs) return NULL;
    PyArrayObject *tgt = gs_check_array(otgt, "targets", NPY_INT32, 2, 2);
    if (!tgt) return NULL;
    if (gs_same_shape(seqs, "seqs", tgt, "targets")) return NULL;
    int B = check_seqs_array(m, seqs, "seqs");
    if (B < 0) return NULL;
    PyArrayObject *neg = NULL;
    int K = 0;
    if (oneg != Py_None) {  // the sampled softmax; None: the full softmax over every item
        if (!(neg = gs_check_array(oneg, "negatives", NPY_INT32, 1, 1))) return NULL;
        if (PyArray_DIM(neg, 0) > INT32_MAX) {  // gs_check_array refuses an empty one
            PyErr_SetString(PyExc_ValueError, "negatives has more than 2^31 - 1 items");
            return NULL;
        }
        K = (int)PyArray_DIM(neg, 0);
    }
    PyArrayObject *logq = NULL;
    if (ologq != Py_None) {
        if (!neg) {
            PyErr_SetString(PyExc_ValueError, "log_q corrects the sampled softmax: give negatives too");
            return NULL;
        }
        if (!(logq = gs_check_array(ologq, "log_q", NPY_FLOAT32, 1, 1))) return NULL;
        if (PyArray_DIM(logq, 0) != m->cfg.n_items) {
            PyErr_Format(PyExc_ValueError, "log_q must have one value per item (%d), got %zd", m->cfg.n_items,
                         (Py_ssize_t)PyArray_DIM(logq, 0));
            return NULL;
        }
        const float *lq = PyArray_DATA(logq);
        for (npy_intp i = 0; i < PyArray_DIM(logq, 0); i++)
            if (!isfinite(lq[i])) {
                PyErr_Format(PyExc_ValueError, "log_q[%zd] is not finite (%g)", (Py_ssize_t)i, (double)lq[i]);
                return NULL;
            }
    }
    double loss = 0.0;
    size_t count = 0;
    int st;
    GS_WRITE_LOCKED(ocap, {
        st = gs_sasrec_forward_backward(m, B, PyArray_DATA(seqs), PyArray_DATA(tgt), K,
                                        neg ? PyArray_DATA(neg) : NULL, logq ? PyArray_DATA(logq) : NULL,
                                        train, (uint64_t)seed, &loss, &count);
    });
    if (st) return gs_raise(st);
    return Py_BuildValue("(dn)", loss, (Py_ssize_t)count);
}

static PyObject *py_sasrec_adamw(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model", "lr", "beta1", "beta2", "eps", "weight_decay",
                             "max_grad_norm", NULL};
    PyObject *ocap, *olr = NULL, *ob1 = NULL, *ob2 = NULL, *oeps = NULL, *owd = NULL, *oclip = NULL;
    gs_adamw_config cfg = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f};
    double clip = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OOOOOO", kwlist, &ocap, &olr, &ob1, &ob2, &oeps,
                                     &owd, &oclip))
        return NULL;
    gs_sasrec *m = sasrec_from(ocap);
    if (!m || gs_parse_adamw(olr, ob1, ob2, oeps, owd, &cfg) ||
        gs_arg_double(oclip, "max_grad_norm", 0.0, INFINITY, GS_ALLOW_INF, &clip))
        return NULL;
    double norm = 0.0;
    int st;
    GS_WRITE_LOCKED(ocap, st = gs_sasrec_adamw(m, &cfg, clip, &norm));
    if (st) return gs_raise(st);
    return PyFloat_FromDouble(norm);
}

static PyObject *py_sasrec_score(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ocap, *oseq;
    if (!PyArg_ParseTuple(args, "OO", &ocap, &oseq)) return NULL;
    gs_sasrec *m = sasrec_from(ocap);
    if (!m) return NULL;
    PyArrayObject *seqs = gs_check_array(oseq, "seqs", NPY_INT32, 2, 2);
    if (!seqs) return NULL;
    int B = check_seqs_array(m, seqs, "seqs");
    if (B < 0) return NULL;
    npy_intp ds[2] = {B, m->cfg.n_items}, dh[2] = {B, m->cfg.hidden};
    PyArrayObject *scores = gs_new_f32(2, ds), *hidden = gs_new_f32(2, dh);
    if (!scores || !hidden) {
        Py_XDECREF(scores), Py_XDECREF(hidden);
        return NULL;
    }
    int st;
    GS_READ_LOCKED(ocap, {
        st = gs_sasrec_score(m, B, PyArray_DATA(seqs), PyArray_DATA(scores), PyArray_DATA(hidden));
    });
    if (st) {
        Py_DECREF(scores), Py_DECREF(hidden);
        return gs_raise(st);
    }
    PyObject *out = PyTuple_Pack(2, scores, hidden);
    Py_DECREF(scores), Py_DECREF(hidden);
    return out;
}

PyMethodDef gs_embeddings_methods[] = {
    {"bert_tensor_specs", (PyCFunction)(void (*)(void))py_bert_tensor_specs,
     METH_VARARGS | METH_KEYWORDS,
     "bert_tensor_specs(vocab_size, hidden, layers, heads, intermediate, max_positions, "
     "type_vocab_size, layer_norm_eps) -> [(name, offset, shape)]: layout of the parameter "
     "buffer (q/k/v fused as attention.self.qkv, rows q then k then v)."},
    {"bert_new", (PyCFunction)(void (*)(void))py_bert_new, METH_VARARGS | METH_KEYWORDS,
     "bert_new(vocab_size, hidden, layers, heads, intermediate, max_positions, type_vocab_size, "
     "layer_norm_eps) -> handle of a BERT encoder with zeroed parameters."},
    {"bert_params", py_bert_params, METH_O,
     "bert_params(model) -> float32 (n_params,) writable view of the parameter buffer."},
    {"bert_encode", (PyCFunction)(void (*)(void))py_bert_encode, METH_VARARGS | METH_KEYWORDS,
     "bert_encode(model, ids, offsets, type_ids=None, pooling=0, normalize=True) -> (B, H) "
     "float32. ids int32 (N,) packed tokens; offsets int64 (B+1,), sequence b is "
     "ids[offsets[b]:offsets[b+1]]; pooling 0 = mean over tokens, 1 = first ([CLS]) token."},
    {"sasrec_tensor_specs", (PyCFunction)(void (*)(void))py_sasrec_tensor_specs,
     METH_VARARGS | METH_KEYWORDS,
     "sasrec_tensor_specs(n_items, max_len, hidden, layers, heads, inner, dropout) -> "
     "[(name, offset, shape, decay)]: layout of the parameter buffer."},
    {"sasrec_new", (PyCFunction)(void (*)(void))py_sasrec_new, METH_VARARGS | METH_KEYWORDS,
     "sasrec_new(n_items, max_len, hidden, layers, heads, inner, dropout) -> handle (zeroed "
     "parameters; initialise them through sasrec_buffers)."},
    {"sasrec_buffers", py_sasrec_buffers, METH_O,
     "sasrec_buffers(model) -> (params, grads, adam_m, adam_v): float32 (n_params,) views."},
    {"sasrec_step", py_sasrec_step, METH_VARARGS,
     "sasrec_step(model, set=-1) -> AdamW steps taken (sets it first if set >= 0)."},
    {"sasrec_forward_backward", (PyCFunction)(void (*)(void))py_sasrec_forward_backward,
     METH_VARARGS | METH_KEYWORDS,
     "sasrec_forward_backward(model, seqs, targets, train=True, seed=0, negatives=None, log_q=None) -> "
     "(mean loss, count). negatives (K,) int32 item indices: sampled softmax over each slot's target and "
     "them; None: full softmax. log_q (n_items,) float32: log sampling probabilities subtracted from the "
     "sampled softmax's logits. "
     "seqs (B, max_len) int32 left-padded, 0 = padding, item i as i+1; targets (B, max_len) "
     "int32 next item in [0, n_items) or -100. Overwrites the gradient buffer."},
    {"sasrec_adamw", (PyCFunction)(void (*)(void))py_sasrec_adamw, METH_VARARGS | METH_KEYWORDS,
     "sasrec_adamw(model, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0, "
     "max_grad_norm=0) -> gradient norm before clipping; one AdamW update."},
    {"sasrec_score", py_sasrec_score, METH_VARARGS,
     "sasrec_score(model, seqs) -> (scores (B, n_items), hidden (B, hidden)) after the last slot, "
     "evaluation mode (no dropout)."},
    {NULL, NULL, 0, NULL}};
