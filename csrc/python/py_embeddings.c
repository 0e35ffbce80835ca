/* Bindings of the embedding models: the BERT sentence encoder (csrc/nn/bert.h) and the
 * SASRec sequential recommender (csrc/nn/sasrec.h). Models are PyCapsules whose destructor
 * frees the C model; their parameters are exposed as zero-copy NumPy views that keep the
 * capsule alive. Compute runs with the GIL released. */
#include "binding.h"

#include "../common.h"
#include "../nn/bert.h"

#define BERT_CAPSULE "gensar.bert"

static void bert_capsule_free(PyObject *cap)
{
    gs_bert_free((gs_bert *)PyCapsule_GetPointer(cap, BERT_CAPSULE));
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
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiiiiif", kwlist, &c->vocab_size, &c->hidden,
                                     &c->layers, &c->heads, &c->intermediate, &c->max_positions,
                                     &c->type_vocab_size, &c->layer_norm_eps))
        return -1;
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
    PyObject *cap = PyCapsule_New(m, BERT_CAPSULE, bert_capsule_free);
    if (!cap) gs_bert_free(m);
    return cap;
}

/* A 1-D float32 view of n floats at data, keeping `owner` alive. */
static PyObject *view_of(float *data, size_t n, PyObject *owner)
{
    npy_intp dims[1] = {(npy_intp)n};
    PyObject *arr = PyArray_SimpleNewFromData(1, dims, NPY_FLOAT32, data);
    if (!arr) return NULL;
    Py_INCREF(owner);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, owner) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *py_bert_params(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_bert *m = bert_from(cap);
    if (!m) return NULL;
    return view_of(m->params, m->n_params, cap);
}

static PyObject *py_bert_encode(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model", "ids", "offsets", "type_ids", "pooling", "normalize", NULL};
    PyObject *ocap, *oids, *ooff, *otype = Py_None;
    int pooling = GS_BERT_POOL_MEAN, normalize = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|Oip", kwlist, &ocap, &oids, &ooff, &otype,
                                     &pooling, &normalize))
        return NULL;
    gs_bert *m = bert_from(ocap);
    if (!m) return NULL;
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
    Py_BEGIN_ALLOW_THREADS
    st = gs_bert_encode(m, (int)n_seq, o, PyArray_DATA(ids), types ? PyArray_DATA(types) : NULL,
                        pooling, normalize, PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (st) {
        Py_DECREF(out);
        return gs_raise(st);
    }
    return (PyObject *)out;
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
    {NULL, NULL, 0, NULL}};
