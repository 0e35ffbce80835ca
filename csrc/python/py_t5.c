/* Binding of csrc/nn/t5.h: the T5 encoder-decoder as a PyCapsule named
 * "gensar._core.t5" holding a gs_t5* (other bindings fetch it with
 * PyCapsule_GetPointer(obj, GS_T5_CAPSULE)), and decoding caches as capsules
 * named "gensar._core.t5_cache" whose context keeps their model alive.
 * gensar/seq2seq.py wraps these in the Seq2Seq class.
 *
 * Threads: logits / forward_backward / train_step share the model's activation
 * workspace (reallocated when a larger batch comes) and write gradients and
 * parameters, so they hold the model's lock (binding.h) exclusively while the
 * GIL is released; building a decoding cache only reads the parameters (shared
 * lock); a step or reorder of a cache writes that cache, so it takes the model's
 * lock exclusively (a cache is owned by its model). One model shared by several
 * Python threads thus gives the results of some sequential order of the calls. */
#include "binding.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../common.h"
#include "../nn/t5.h"

#define GS_T5_CACHE_CAPSULE "gensar._core.t5_cache"

static void t5_capsule_free(PyObject *cap)
{
    gs_t5_free(PyCapsule_GetPointer(cap, GS_T5_CAPSULE));
    gs_capsule_free_lock(cap);
}

static gs_t5 *get_model(PyObject *cap)
{
    if (!PyCapsule_IsValid(cap, GS_T5_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "expected a T5 model capsule (Seq2Seq._model)");
        return NULL;
    }
    return PyCapsule_GetPointer(cap, GS_T5_CAPSULE);
}

static PyObject *py_t5_new(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"vocab_size", "d_model", "d_kv", "d_ff", "num_layers",
                             "num_decoder_layers", "num_heads", "relative_attention_num_buckets",
                             "relative_attention_max_distance", "gated_gelu",
                             "tie_word_embeddings", "layer_norm_epsilon", "dropout_rate",
                             "scale_decoder_outputs", NULL};
    PyObject *o[14] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOOOOOOO|O", kwlist, &o[0], &o[1], &o[2],
                                     &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &o[9], &o[10], &o[11],
                                     &o[12], &o[13]))
        return NULL;
    gs_t5_config c;
    memset(&c, 0, sizeof c);
    int *sizes[9] = {&c.vocab_size, &c.d_model, &c.d_kv, &c.d_ff, &c.num_layers,
                     &c.num_decoder_layers, &c.num_heads, &c.relative_attention_num_buckets,
                     &c.relative_attention_max_distance};
    for (int i = 0; i < 9; i++)
        if (gs_arg_int(o[i], kwlist[i], 1, INT32_MAX, sizes[i])) return NULL;
    int flags[3] = {0, 0, -1}; /* scale_decoder_outputs default: scale exactly when tied (T5) */
    for (int i = 0; i < 3; i++) {
        PyObject *f = o[i == 2 ? 13 : 9 + i];
        if (!f || (i == 2 && f == Py_None)) continue;
        if ((flags[i] = PyObject_IsTrue(f)) < 0) return NULL;
    }
    c.gated_gelu = flags[0], c.tie_word_embeddings = flags[1];
    c.scale_decoder_outputs = flags[2] < 0 ? c.tie_word_embeddings : flags[2];
    if (gs_arg_float(o[11], "layer_norm_epsilon", 0.0, FLT_MAX, GS_LO_OPEN, &c.layer_norm_epsilon) ||
        gs_arg_float(o[12], "dropout_rate", 0.0, 1.0, GS_HI_OPEN, &c.dropout_rate))
        return NULL;
    gs_t5 *m;
    int st = gs_t5_new(&c, &m);
    if (st) return gs_raise(st);
    PyObject *cap = gs_new_model_capsule(m, GS_T5_CAPSULE, t5_capsule_free);
    if (!cap) gs_t5_free(m);
    return cap;
}

static PyObject *py_t5_buffers(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_t5 *m = get_model(cap);
    if (!m) return NULL;
    npy_intp n = (npy_intp)gs_t5_num_params(m);
    PyObject *p = gs_f32_view(cap, gs_t5_params(m), n), *g = gs_f32_view(cap, gs_t5_grads(m), n);
    PyObject *mm = gs_f32_view(cap, gs_t5_adam_m(m), n), *vv = gs_f32_view(cap, gs_t5_adam_v(m), n);
    if (!p || !g || !mm || !vv) {
        Py_XDECREF(p), Py_XDECREF(g), Py_XDECREF(mm), Py_XDECREF(vv);
        return NULL;
    }
    return Py_BuildValue("NNNN", p, g, mm, vv);
}

static PyObject *py_t5_tensors(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_t5 *m = get_model(cap);
    if (!m) return NULL;
    int n = gs_t5_num_tensors(m);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        const gs_t5_tensor *t = gs_t5_tensor_at(m, i);
        PyObject *shape = t->ndim == 2 ? Py_BuildValue("(ii)", t->shape[0], t->shape[1])
                                       : Py_BuildValue("(i)", t->shape[0]);
        PyObject *item = shape ? Py_BuildValue("(snNi)", t->name, (Py_ssize_t)t->offset, shape,
                                               t->decay)
                               : NULL;
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *py_t5_step(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_t5 *m = get_model(cap);
    return m ? PyLong_FromLong(gs_t5_step(m)) : NULL;
}

static PyObject *py_t5_set_step(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *ostep;
    long long step;
    if (!PyArg_ParseTuple(args, "OO", &cap, &ostep)) return NULL;
    gs_t5 *m = get_model(cap);
    if (!m || gs_arg_int64(ostep, "step", 0, LONG_MAX, &step)) return NULL;
    GS_WRITE_LOCKED(cap, gs_t5_set_step(m, (long)step));
    Py_RETURN_NONE;
}

static PyObject *py_t5_workspace_bytes(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_t5 *m = get_model(cap);
    return m ? PyLong_FromSize_t(gs_t5_workspace_bytes(m)) : NULL;
}

/* Checks a (B,T) int32 array; B, T are taken from it or must equal *B (if > 0). */
static PyArrayObject *check_ids2d(PyObject *o, const char *name, int *B, int *T)
{
    PyArrayObject *a = gs_check_array(o, name, NPY_INT32, 2, 2);
    if (!a) return NULL;
    if (PyArray_DIM(a, 0) > INT32_MAX || PyArray_DIM(a, 1) > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s is too large", name);
        return NULL;
    }
    int b = (int)PyArray_DIM(a, 0), t = (int)PyArray_DIM(a, 1);
    if (*B > 0 && b != *B) {
        PyErr_Format(PyExc_ValueError, "%s has %d rows but the batch has %d inputs", name, b, *B);
        return NULL;
    }
    if (T && *T > 0 && t != *T) {
        PyErr_Format(PyExc_ValueError, "%s has %d columns, expected %d (shapes must match)", name,
                     t, *T);
        return NULL;
    }
    *B = b;
    if (T) *T = t;
    return a;
}

/* input_ids (B,T_in) or (B,T_in,K_in), attention_mask (B,T_in), decoder_input_ids (B,T_dec),
 * labels (B,T_dec) or NULL */
typedef struct {
    int B, T_in, K_in, T_dec;
    const int32_t *ids, *mask, *dec, *labels;
    const uint8_t *allowed; /* (B, T_dec, V) or NULL */
} batch_args;

/* The optional per-position token mask of the constrained loss (None: every token). */
static int parse_allowed(PyObject *o, const gs_t5 *m, batch_args *b)
{
    if (!o || o == Py_None) return 0;
    PyArrayObject *a = gs_check_array(o, "allowed", NPY_UINT8, 3, 3);
    if (!a) return -1;
    if (PyArray_DIM(a, 0) != b->B || PyArray_DIM(a, 1) != b->T_dec || PyArray_DIM(a, 2) != gs_t5_vocab_size(m)) {
        PyErr_Format(PyExc_ValueError, "allowed must have shape (batch %d, target positions %d, vocabulary %d), "
                     "got (%zd, %zd, %zd)", b->B, b->T_dec, gs_t5_vocab_size(m), (Py_ssize_t)PyArray_DIM(a, 0),
                     (Py_ssize_t)PyArray_DIM(a, 1), (Py_ssize_t)PyArray_DIM(a, 2));
        return -1;
    }
    b->allowed = PyArray_DATA(a);
    return 0;
}

static int parse_batch(PyObject *oids, PyObject *omask, PyObject *odec, PyObject *olab,
                       batch_args *b)
{
    memset(b, 0, sizeof *b);
    if (gs_parse_encoder_input(oids, omask, &b->B, &b->T_in, &b->K_in, &b->ids, &b->mask)) return -1;
    PyArrayObject *dec = check_ids2d(odec, "decoder_input_ids", &b->B, &b->T_dec);
    if (!dec) return -1;
    b->dec = PyArray_DATA(dec);
    if (olab) {
        PyArrayObject *lab = check_ids2d(olab, "labels", &b->B, &b->T_dec);
        if (!lab) return -1;
        b->labels = PyArray_DATA(lab);
    }
    return 0;
}

static PyObject *py_t5_logits(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *oids, *omask, *odec;
    if (!PyArg_ParseTuple(args, "OOOO", &cap, &oids, &omask, &odec)) return NULL;
    gs_t5 *m = get_model(cap);
    batch_args b;
    if (!m || parse_batch(oids, omask, odec, NULL, &b)) return NULL;
    npy_intp dims[3] = {b.B, b.T_dec, gs_t5_vocab_size(m)};
    PyArrayObject *out = gs_new_f32(3, dims);
    if (!out) return NULL;
    int st;
    float *po = PyArray_DATA(out);
    GS_WRITE_LOCKED(cap, st = gs_t5_logits(m, b.B, b.T_in, b.K_in, b.T_dec, b.ids, b.mask, b.dec, po));
    if (st) {
        Py_DECREF(out);
        return gs_raise(st);
    }
    return (PyObject *)out;
}

static PyObject *py_t5_forward_backward(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model", "input_ids", "attention_mask", "decoder_input_ids", "labels",
                             "dropout", "seed", "allowed", NULL};
    PyObject *cap, *oids, *omask, *odec, *olab, *oseed = NULL, *oallowed = NULL;
    int dropout = 0;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|pOO", kwlist, &cap, &oids, &omask, &odec,
                                     &olab, &dropout, &oseed, &oallowed))
        return NULL;
    gs_t5 *m = get_model(cap);
    batch_args b;
    if (!m || parse_batch(oids, omask, odec, olab, &b) || parse_allowed(oallowed, m, &b) ||
        gs_arg_u64(oseed, "seed", &seed))
        return NULL;
    float loss = 0.0f;
    int st;
    GS_WRITE_LOCKED(cap, {
        st = gs_t5_forward_backward(m, b.B, b.T_in, b.K_in, b.T_dec, b.ids, b.mask, b.dec, b.labels, b.allowed,
                                    dropout, seed, &loss);
    });
    if (st) return gs_raise(st);
    return PyFloat_FromDouble(loss);
}

static PyObject *py_t5_train_step(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model", "input_ids", "attention_mask", "decoder_input_ids", "labels",
                             "lr", "beta1", "beta2", "eps", "weight_decay", "max_grad_norm",
                             "seed", "allowed", NULL};
    PyObject *cap, *oids, *omask, *odec, *olab, *olr, *ob1, *ob2, *oeps, *owd, *oclip, *oseed;
    PyObject *oallowed = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOOOOOO|O", kwlist, &cap, &oids, &omask, &odec,
                                     &olab, &olr, &ob1, &ob2, &oeps, &owd, &oclip, &oseed, &oallowed))
        return NULL;
    gs_t5 *m = get_model(cap);
    batch_args b;
    if (!m || parse_batch(oids, omask, odec, olab, &b) || parse_allowed(oallowed, m, &b)) return NULL;
    gs_adamw_config ac;
    gs_t5_train_config tc = {0};
    unsigned long long seed = 0;
    if (gs_parse_adamw(olr, ob1, ob2, oeps, owd, &ac) ||
        gs_arg_float(oclip, "max_grad_norm", 0.0, INFINITY, GS_ALLOW_INF, &tc.max_grad_norm) ||
        gs_arg_u64(oseed, "seed", &seed))
        return NULL;
    tc.lr = ac.lr, tc.beta1 = ac.beta1, tc.beta2 = ac.beta2, tc.eps = ac.eps;
    tc.weight_decay = ac.weight_decay, tc.dropout_seed = seed;
    float loss = 0.0f, norm = 0.0f;
    int st;
    GS_WRITE_LOCKED(cap, {
        st = gs_t5_train_step(m, b.B, b.T_in, b.K_in, b.T_dec, b.ids, b.mask, b.dec, b.labels, b.allowed, &tc,
                              &loss, &norm);
    });
    if (st) return gs_raise(st);
    return Py_BuildValue("dd", (double)loss, (double)norm);
}

static PyObject *py_t5_train_grads(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model", "input_ids", "attention_mask", "decoder_input_ids", "labels",
                             "seed", "allowed", NULL};
    PyObject *cap, *oids, *omask, *odec, *olab, *oseed, *oallowed = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOO|O", kwlist, &cap, &oids, &omask, &odec,
                                     &olab, &oseed, &oallowed))
        return NULL;
    gs_t5 *m = get_model(cap);
    batch_args b;
    unsigned long long seed = 0;
    if (!m || parse_batch(oids, omask, odec, olab, &b) || parse_allowed(oallowed, m, &b) ||
        gs_arg_u64(oseed, "seed", &seed))
        return NULL;
    float loss = 0.0f;
    int st;
    GS_WRITE_LOCKED(cap, {
        st = gs_t5_train_grads(m, b.B, b.T_in, b.K_in, b.T_dec, b.ids, b.mask, b.dec, b.labels, b.allowed, seed,
                               &loss);
    });
    if (st) return gs_raise(st);
    return PyFloat_FromDouble(loss);
}

static PyObject *py_t5_apply_grads(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model", "lr", "beta1", "beta2", "eps", "weight_decay",
                             "max_grad_norm", NULL};
    PyObject *cap, *olr, *ob1, *ob2, *oeps, *owd, *oclip;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOO", kwlist, &cap, &olr, &ob1, &ob2, &oeps,
                                     &owd, &oclip))
        return NULL;
    gs_t5 *m = get_model(cap);
    if (!m) return NULL;
    gs_adamw_config ac;
    gs_t5_train_config tc = {0};
    if (gs_parse_adamw(olr, ob1, ob2, oeps, owd, &ac) ||
        gs_arg_float(oclip, "max_grad_norm", 0.0, INFINITY, GS_ALLOW_INF, &tc.max_grad_norm))
        return NULL;
    tc.lr = ac.lr, tc.beta1 = ac.beta1, tc.beta2 = ac.beta2, tc.eps = ac.eps;
    tc.weight_decay = ac.weight_decay;
    float norm = 0.0f;
    int st;
    GS_WRITE_LOCKED(cap, st = gs_t5_apply_grads(m, &tc, &norm));
    if (st) return gs_raise(st);
    return PyFloat_FromDouble(norm);
}

static PyObject *py_t5_grad_buffer(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_t5 *m = get_model(cap);
    if (!m) return NULL;
    return gs_f32_view(cap, gs_t5_grads(m), gs_t5_num_params(m) + GS_T5_GRAD_EXTRA);
}

/* ---- decoding caches ---- */

static void cache_capsule_free(PyObject *cap)
{
    gs_t5_cache_free(PyCapsule_GetPointer(cap, GS_T5_CACHE_CAPSULE));
    Py_XDECREF((PyObject *)PyCapsule_GetContext(cap));
}

static gs_t5_cache *get_cache(PyObject *cap, gs_t5 **model)
{
    if (!PyCapsule_IsValid(cap, GS_T5_CACHE_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "expected a decoding cache made by t5_cache_new");
        return NULL;
    }
    if (model) *model = PyCapsule_GetPointer(PyCapsule_GetContext(cap), GS_T5_CAPSULE);
    return PyCapsule_GetPointer(cap, GS_T5_CACHE_CAPSULE);
}

static PyObject *py_t5_cache_new(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *oids, *omask, *orpi, *osteps;
    int rpi, max_steps;
    if (!PyArg_ParseTuple(args, "OOOOO", &cap, &oids, &omask, &orpi, &osteps)) return NULL;
    gs_t5 *m = get_model(cap);
    if (!m || gs_arg_int(orpi, "rows_per_input", 1, INT32_MAX, &rpi) ||
        gs_arg_int(osteps, "max_steps", 1, INT32_MAX, &max_steps))
        return NULL;
    int B, T, K;
    const int32_t *pi, *pm;
    if (gs_parse_encoder_input(oids, omask, &B, &T, &K, &pi, &pm)) return NULL;
    gs_t5_cache *c;
    int st;
    GS_READ_LOCKED(cap, st = gs_t5_cache_new(m, pi, pm, B, T, K, rpi, max_steps, &c));
    if (st) return gs_raise(st);
    PyObject *cc = PyCapsule_New(c, GS_T5_CACHE_CAPSULE, cache_capsule_free);
    if (!cc) {
        gs_t5_cache_free(c);
        return NULL;
    }
    Py_INCREF(cap); /* the cache keeps its model alive */
    PyCapsule_SetContext(cc, cap);
    return cc;
}

static PyObject *py_t5_decode_step(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cc, *otok;
    if (!PyArg_ParseTuple(args, "OO", &cc, &otok)) return NULL;
    gs_t5 *m;
    gs_t5_cache *c = get_cache(cc, &m);
    if (!c) return NULL;
    PyArrayObject *tok = gs_check_array(otok, "tokens", NPY_INT32, 1, 1);
    if (!tok) return NULL;
    if (PyArray_DIM(tok, 0) != gs_t5_cache_rows(c)) {
        PyErr_Format(PyExc_ValueError, "tokens must have one entry per cache row (%d), got %zd",
                     gs_t5_cache_rows(c), (Py_ssize_t)PyArray_DIM(tok, 0));
        return NULL;
    }
    npy_intp dims[2] = {gs_t5_cache_rows(c), gs_t5_vocab_size(m)};
    PyArrayObject *out = gs_new_f32(2, dims);
    if (!out) return NULL;
    int st;
    const int32_t *pt = PyArray_DATA(tok);
    float *po = PyArray_DATA(out);
    /* the model's lock, exclusive: the cache itself is written, one call at a time */
    GS_WRITE_LOCKED(PyCapsule_GetContext(cc), st = gs_t5_decode_step(m, c, pt, po));
    if (st) {
        Py_DECREF(out);
        return gs_raise(st);
    }
    return (PyObject *)out;
}

static PyObject *py_t5_cache_reorder(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cc, *osrc;
    if (!PyArg_ParseTuple(args, "OO", &cc, &osrc)) return NULL;
    gs_t5_cache *c = get_cache(cc, NULL);
    if (!c) return NULL;
    PyArrayObject *src = gs_check_array(osrc, "src_rows", NPY_INT32, 1, 1);
    if (!src) return NULL;
    if (PyArray_DIM(src, 0) != gs_t5_cache_rows(c)) {
        PyErr_Format(PyExc_ValueError, "src_rows must have one entry per cache row (%d), got %zd",
                     gs_t5_cache_rows(c), (Py_ssize_t)PyArray_DIM(src, 0));
        return NULL;
    }
    int st;
    const int32_t *ps = PyArray_DATA(src);
    /* the model's lock, exclusive: the cache itself is written, one call at a time */
    GS_WRITE_LOCKED(PyCapsule_GetContext(cc), st = gs_t5_cache_reorder(c, ps));
    if (st) return gs_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_t5_cache_rows(PyObject *self, PyObject *cc)
{
    (void)self;
    gs_t5_cache *c = get_cache(cc, NULL);
    return c ? PyLong_FromLong(gs_t5_cache_rows(c)) : NULL;
}

static PyObject *py_t5_cache_steps(PyObject *self, PyObject *cc)
{
    (void)self;
    gs_t5_cache *c = get_cache(cc, NULL);
    return c ? PyLong_FromLong(gs_t5_cache_steps(c)) : NULL;
}

PyMethodDef gs_t5_methods[] = {
    {"t5_new", (PyCFunction)(void (*)(void))py_t5_new, METH_VARARGS | METH_KEYWORDS,
     "t5_new(vocab_size, d_model, d_kv, d_ff, num_layers, num_decoder_layers, num_heads, "
     "relative_attention_num_buckets, relative_attention_max_distance, gated_gelu, "
     "tie_word_embeddings, layer_norm_epsilon, dropout_rate, scale_decoder_outputs=tie) -> model "
     "capsule (zero parameters)"},
    {"t5_buffers", py_t5_buffers, METH_O,
     "t5_buffers(model) -> (params, grads, adam_m, adam_v): zero-copy float32 views (n,)"},
    {"t5_tensors", py_t5_tensors, METH_O,
     "t5_tensors(model) -> [(hf_name, offset, shape, decay)] in buffer order"},
    {"t5_step", py_t5_step, METH_O, "t5_step(model) -> AdamW steps taken"},
    {"t5_set_step", py_t5_set_step, METH_VARARGS, "t5_set_step(model, step)"},
    {"t5_workspace_bytes", py_t5_workspace_bytes, METH_O,
     "t5_workspace_bytes(model) -> bytes of the activation workspace"},
    {"t5_logits", py_t5_logits, METH_VARARGS,
     "t5_logits(model, input_ids (B,T_in) or (B,T_in,K), attention_mask (B,T_in), decoder_input_ids (B,T_dec)) "
     "-> logits (B,T_dec,V) float32 (dropout off)"},
    {"t5_forward_backward", (PyCFunction)(void (*)(void))py_t5_forward_backward,
     METH_VARARGS | METH_KEYWORDS,
     "t5_forward_backward(model, input_ids, attention_mask, decoder_input_ids, labels, "
     "dropout=False, seed=0) -> mean token loss; grads buffer overwritten"},
    {"t5_train_grads", (PyCFunction)(void (*)(void))py_t5_train_grads, METH_VARARGS | METH_KEYWORDS,
     "t5_train_grads(model, input_ids, attention_mask, decoder_input_ids, labels, seed) -> mean "
     "token loss; the forward + backward of t5_train_step (same dropout masks), no update"},
    {"t5_apply_grads", (PyCFunction)(void (*)(void))py_t5_apply_grads, METH_VARARGS | METH_KEYWORDS,
     "t5_apply_grads(model, lr, beta1, beta2, eps, weight_decay, max_grad_norm) -> grad norm "
     "before clipping; the clipping + AdamW of t5_train_step on the grads buffer as it is"},
    {"t5_grad_buffer", py_t5_grad_buffer, METH_O,
     "t5_grad_buffer(model) -> float32 view (n_params + 1,): the gradients and one free slot"},
    {"t5_train_step", (PyCFunction)(void (*)(void))py_t5_train_step, METH_VARARGS | METH_KEYWORDS,
     "t5_train_step(model, input_ids, attention_mask, decoder_input_ids, labels, lr, beta1, beta2, "
     "eps, weight_decay, max_grad_norm, seed) -> (loss, grad_norm before clipping)"},
    {"t5_cache_new", py_t5_cache_new, METH_VARARGS,
     "t5_cache_new(model, input_ids (B,T_in) or (B,T_in,K), attention_mask (B,T_in), rows_per_input, max_steps) "
     "-> cache of B*rows_per_input decoder rows"},
    {"t5_decode_step", py_t5_decode_step, METH_VARARGS,
     "t5_decode_step(cache, tokens (rows,) int32) -> next-token logits (rows, V)"},
    {"t5_cache_reorder", py_t5_cache_reorder, METH_VARARGS,
     "t5_cache_reorder(cache, src_rows (rows,) int32): row r takes the history of src_rows[r]"},
    {"t5_cache_rows", py_t5_cache_rows, METH_O, "t5_cache_rows(cache) -> rows"},
    {"t5_cache_steps", py_t5_cache_steps, METH_O, "t5_cache_steps(cache) -> steps taken"},
    {NULL, NULL, 0, NULL}};
