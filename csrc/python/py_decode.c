/* Bindings of csrc/decode: the identifier trie (a PyCapsule owning a gs_trie)
 * and trie-constrained beam search over the decoders that implement gs_decoder.
 * gensar/decode.py wraps these in the public classes. (The tiny test decoder of
 * the beam-search tests lives in tests/csrc/ and is not part of the product.) */
#include "binding.h"

#include <string.h>

#include "../common.h"
#include "../decode/beam.h"
#include "../decode/beam_t5.h"
#include "../tensor/lse.h"
#include "../decode/trie.h"

#define TRIE_CAPSULE "gensar._core.trie"

static void trie_capsule_free(PyObject *cap)
{
    gs_trie_free(PyCapsule_GetPointer(cap, TRIE_CAPSULE));
}

static gs_trie *trie_from(PyObject *obj)
{
    if (!PyCapsule_IsValid(obj, TRIE_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "expected a trie handle (gensar.Trie()._handle)");
        return NULL;
    }
    return PyCapsule_GetPointer(obj, TRIE_CAPSULE);
}

/* A 1-D int32 C-contiguous array that may be empty (a prefix of length 0). */
static PyArrayObject *check_path(PyObject *obj, const char *name)
{
    if (PyArray_Check(obj) && PyArray_SIZE((PyArrayObject *)obj) == 0 &&
        PyArray_NDIM((PyArrayObject *)obj) == 1 && PyArray_TYPE((PyArrayObject *)obj) == NPY_INT32)
        return (PyArrayObject *)obj;
    return gs_check_array(obj, name, NPY_INT32, 1, 1);
}

static PyObject *py_trie_build(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"table", "vocab_size", "on_duplicate", "sort", NULL};
    PyObject *otable, *ovocab = NULL, *odup = NULL, *osort = NULL;
    int vocab_size = 0, on_dup = GS_TRIE_DUP_ERROR, sort = GS_TRIE_SORT_AUTO;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OOO", kwlist, &otable, &ovocab, &odup, &osort))
        return NULL;
    if (gs_arg_int(ovocab, "vocab_size", 0, INT32_MAX, &vocab_size) ||
        gs_arg_int(odup, "on_duplicate", 0, 1, &on_dup) || gs_arg_int(osort, "sort", 0, 2, &sort))
        return NULL;
    PyArrayObject *table = gs_check_array(otable, "id_sequences", NPY_INT32, 2, 2);
    if (!table) return NULL;
    npy_intp n = PyArray_DIM(table, 0), L = PyArray_DIM(table, 1);
    if (L > GS_TRIE_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "identifiers may have at most %d tokens, got %zd",
                     GS_TRIE_MAX_DEPTH, (Py_ssize_t)L);
        return NULL;
    }
    gs_trie *t = NULL;
    int status;
    const int32_t *p = PyArray_DATA(table);
    Py_BEGIN_ALLOW_THREADS
    status = gs_trie_build(p, n, (int)L, NULL, n, vocab_size, on_dup, sort, &t);
    Py_END_ALLOW_THREADS
    if (status) return gs_raise(status);
    PyObject *cap = PyCapsule_New(t, TRIE_CAPSULE, trie_capsule_free);
    if (!cap) gs_trie_free(t);
    return cap;
}

static PyObject *py_trie_info(PyObject *self, PyObject *arg)
{
    (void)self;
    gs_trie *t = trie_from(arg);
    if (!t) return NULL;
    PyObject *dups = PyList_New(t->n_dup_examples);
    if (!dups) return NULL;
    for (int i = 0; i < t->n_dup_examples; i++)
        PyList_SET_ITEM(dups, i, Py_BuildValue("(LL)", (long long)t->dup_examples[i][0],
                                               (long long)t->dup_examples[i][1]));
    return Py_BuildValue("{s:i,s:L,s:L,s:L,s:i,s:L,s:N}", "depth", t->depth, "n_items",
                         (long long)t->n_items, "n_nodes", (long long)t->n_nodes, "n_paths",
                         (long long)t->n_leaves, "max_token", (int)t->max_token, "n_duplicates",
                         (long long)t->n_duplicates, "duplicate_examples", dups);
}

static PyObject *py_trie_children(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ocap, *oprefix;
    if (!PyArg_ParseTuple(args, "OO", &ocap, &oprefix)) return NULL;
    gs_trie *t = trie_from(ocap);
    if (!t) return NULL;
    PyArrayObject *prefix = check_path(oprefix, "prefix");
    if (!prefix) return NULL;
    npy_intp len = PyArray_DIM(prefix, 0);
    int32_t node = len > t->depth ? -1 : gs_trie_walk(t, PyArray_DATA(prefix), (int)len);
    npy_intp n = node < 0 ? 0 : gs_trie_num_children(t, node);
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_INT32);
    if (out && n > 0)
        memcpy(PyArray_DATA(out), t->token + t->child_start[node], (size_t)n * sizeof(int32_t));
    return (PyObject *)out;
}

static PyObject *py_trie_lookup(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ocap, *opath;
    if (!PyArg_ParseTuple(args, "OO", &ocap, &opath)) return NULL;
    gs_trie *t = trie_from(ocap);
    if (!t) return NULL;
    PyArrayObject *path = check_path(opath, "seq");
    if (!path) return NULL;
    npy_intp len = PyArray_DIM(path, 0);
    if (len != t->depth) {
        PyErr_Format(PyExc_ValueError, "seq must have %d tokens (the trie depth), got %zd",
                     t->depth, (Py_ssize_t)len);
        return NULL;
    }
    return PyLong_FromLongLong((long long)gs_trie_lookup(t, PyArray_DATA(path), (int)len));
}

/* Copies of the CSR arrays, for inspection and tests. */
static PyObject *py_trie_arrays(PyObject *self, PyObject *arg)
{
    (void)self;
    gs_trie *t = trie_from(arg);
    if (!t) return NULL;
    npy_intp nl = t->depth + 2, nn = t->n_nodes, nc = t->n_nodes + 1, nleaf = t->n_leaves;
    PyArrayObject *ls = (PyArrayObject *)PyArray_SimpleNew(1, &nl, NPY_INT64);
    PyArrayObject *tok = (PyArrayObject *)PyArray_SimpleNew(1, &nn, NPY_INT32);
    PyArrayObject *cs = (PyArrayObject *)PyArray_SimpleNew(1, &nc, NPY_INT32);
    PyArrayObject *li = (PyArrayObject *)PyArray_SimpleNew(1, &nleaf, NPY_INT64);
    if (!ls || !tok || !cs || !li) {
        Py_XDECREF(ls), Py_XDECREF(tok), Py_XDECREF(cs), Py_XDECREF(li);
        return NULL;
    }
    memcpy(PyArray_DATA(ls), t->level_start, (size_t)nl * sizeof(int64_t));
    memcpy(PyArray_DATA(tok), t->token, (size_t)nn * sizeof(int32_t));
    memcpy(PyArray_DATA(cs), t->child_start, (size_t)nc * sizeof(int32_t));
    memcpy(PyArray_DATA(li), t->leaf_item, (size_t)nleaf * sizeof(int64_t));
    return Py_BuildValue("(NNNN)", ls, tok, cs, li);
}

/* ---- beam search targets: one shared trie, or per-input candidate sets ---- */

typedef struct {
    int B;
    const gs_trie **tries; /* (B) */
    gs_trie **owned;       /* (B) candidate mode: built here, freed by target_free */
} beam_target;

static void target_free(beam_target *tg)
{
    if (tg->owned)
        for (int b = 0; b < tg->B; b++) gs_trie_free(tg->owned[b]);
    PyMem_Free(tg->owned);
    PyMem_Free(tg->tries);
    memset(tg, 0, sizeof *tg);
}

/* Exactly one of `trie` (a capsule) or (`table`, `candidates`) is given.
 * table (N_items, L) int32, candidates (B, n_cand) int64 (-1 = padding).
 * Token ids are checked against vocab_size. Returns 0 or -1 with an exception. */
static int target_parse(PyObject *otrie, PyObject *otable, PyObject *ocand, int on_dup, int B,
                        int vocab_size, beam_target *tg)
{
    memset(tg, 0, sizeof *tg);
    int have_trie = otrie && otrie != Py_None;
    int have_cand = ocand && ocand != Py_None;
    if (have_trie == have_cand) {
        PyErr_SetString(PyExc_ValueError,
                        "give either a trie (full catalogue) or candidates with their id table "
                        "(sampled protocol), not both or neither");
        return -1;
    }
    tg->B = B;
    tg->tries = PyMem_Calloc((size_t)B, sizeof *tg->tries);
    if (!tg->tries) {
        PyErr_NoMemory();
        return -1;
    }
    if (have_trie) {
        gs_trie *t = trie_from(otrie);
        if (!t) goto fail;
        for (int b = 0; b < B; b++) tg->tries[b] = t;
        return 0;
    }
    if (!otable || otable == Py_None) {
        PyErr_SetString(PyExc_ValueError, "candidates need the id table of the whole catalogue");
        goto fail;
    }
    PyArrayObject *table = gs_check_array(otable, "id_sequences", NPY_INT32, 2, 2);
    if (!table) goto fail;
    PyArrayObject *cand = gs_check_array(ocand, "candidates", NPY_INT64, 2, 2);
    if (!cand) goto fail;
    if (PyArray_DIM(cand, 0) != B) {
        PyErr_Format(PyExc_ValueError, "candidates has %zd rows but there are %d inputs",
                     (Py_ssize_t)PyArray_DIM(cand, 0), B);
        goto fail;
    }
    if (PyArray_DIM(table, 1) > GS_TRIE_MAX_DEPTH || PyArray_DIM(cand, 1) > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "identifiers too long or too many candidates per row");
        goto fail;
    }
    tg->owned = PyMem_Calloc((size_t)B, sizeof *tg->owned);
    if (!tg->owned) {
        PyErr_NoMemory();
        goto fail;
    }
    int status;
    const int32_t *pt = PyArray_DATA(table);
    const int64_t *pc = PyArray_DATA(cand);
    npy_intp n_table = PyArray_DIM(table, 0);
    int L = (int)PyArray_DIM(table, 1), n_cand = (int)PyArray_DIM(cand, 1);
    Py_BEGIN_ALLOW_THREADS
    status = gs_beam_candidate_tries(pt, n_table, L, pc, B, n_cand, vocab_size, on_dup, tg->owned);
    Py_END_ALLOW_THREADS
    if (status) {
        gs_raise(status);
        goto fail;
    }
    for (int b = 0; b < B; b++) tg->tries[b] = tg->owned[b];
    return 0;
fail:
    target_free(tg);
    return -1;
}

/* (B, top_k) int64 items and float32 scores. */
static int new_outputs(int B, int top_k, PyArrayObject **items, PyArrayObject **scores)
{
    npy_intp dims[2] = {B, top_k};
    *items = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT64);
    *scores = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (*items && *scores) return 0;
    Py_CLEAR(*items);
    Py_CLEAR(*scores);
    return -1;
}


/* Beam search on a T5 model (Seq2Seq._model capsule). input_ids (B, T_in) or
 * (B, T_in, K) int32 (item bags, see gs_parse_encoder_input), attention_mask (B, T_in)
 * int32. Returns (items (B, top_k) int64, scores (B, top_k) float32). */
static PyObject *py_t5_beam_search(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"model",        "input_ids",  "attention_mask", "num_beams",
                             "top_k",        "decoder_start_token_id", "trie", "id_sequences",
                             "candidates",   "on_duplicate", "renormalise", "norm_trie", NULL};
    PyObject *omodel, *oids, *omask, *otrie = Py_None, *otable = Py_None, *ocand = Py_None;
    PyObject *obeams, *otopk, *ostart = NULL, *odup = NULL, *onorm = Py_None;
    int num_beams, top_k, start = 0, on_dup = GS_TRIE_DUP_ERROR, renormalise = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|OOOOOpO", kwlist, &omodel, &oids, &omask,
                                     &obeams, &otopk, &ostart, &otrie, &otable, &ocand, &odup, &renormalise,
                                     &onorm))
        return NULL;
    const gs_trie *norm_trie = NULL;
    if (onorm != Py_None) {
        if (!renormalise) {
            PyErr_SetString(PyExc_ValueError, "norm_trie normalises renormalised scores: pass renormalise=True");
            return NULL;
        }
        if (!(norm_trie = trie_from(onorm))) return NULL;
    }
    if (!PyCapsule_IsValid(omodel, GS_T5_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "expected a T5 model capsule (Seq2Seq._model)");
        return NULL;
    }
    const gs_t5 *m = PyCapsule_GetPointer(omodel, GS_T5_CAPSULE);
    /* beams are rows of a (B * num_beams, V) logits batch: 2**20 is far beyond use */
    if (gs_arg_int(obeams, "num_beams", 1, 1 << 20, &num_beams) ||
        gs_arg_int(otopk, "top_k", 1, 1 << 20, &top_k) ||
        gs_arg_int(ostart, "decoder_start_token_id", 0, gs_t5_vocab_size(m) - 1, &start) ||
        gs_arg_int(odup, "on_duplicate", 0, 1, &on_dup))
        return NULL;
    int B, T, K_in;
    const int32_t *pi, *pm;
    if (gs_parse_encoder_input(oids, omask, &B, &T, &K_in, &pi, &pm)) return NULL;
    beam_target tg;
    if (target_parse(otrie, otable, ocand, on_dup, B, gs_t5_vocab_size(m), &tg)) return NULL;
    int status = gs_beam_check(B, tg.tries, gs_t5_vocab_size(m), num_beams, top_k);
    if (status) {
        target_free(&tg);
        return gs_raise(status);
    }
    PyArrayObject *items, *scores;
    if (new_outputs(B, top_k, &items, &scores)) {
        target_free(&tg);
        return NULL;
    }
    int64_t *po = PyArray_DATA(items);
    float *ps = PyArray_DATA(scores);
    GS_READ_LOCKED(omodel, status = gs_t5_beam_search(m, pi, pm, B, T, K_in, tg.tries, num_beams, top_k,
                                                      start, renormalise, norm_trie, po, ps));
    target_free(&tg);
    if (status) {
        Py_DECREF(items);
        Py_DECREF(scores);
        return gs_raise(status);
    }
    return Py_BuildValue("(NN)", items, scores);
}

/* Row-wise log-sum-exp of the beam-search kernel, for tests. x (rows, n) -> (rows,) float64 */
static PyObject *py_log_sum_exp(PyObject *self, PyObject *arg)
{
    (void)self;
    PyArrayObject *x = gs_check_array(arg, "x", NPY_FLOAT32, 1, 8);
    if (!x) return NULL;
    npy_intp rows = (npy_intp)gs_rows(x);
    int n = gs_last_dim(x);
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, &rows, NPY_FLOAT64);
    if (!out) return NULL;
    const float *px = PyArray_DATA(x);
    double *po = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp r = 0; r < rows; r++) po[r] = gs_log_sum_exp(px + (size_t)r * n, n);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

/* The fused LM head + log-sum-exp of beam search, for tests.
 * A (n, C), W (V, C) float32 -> (n,) float64, lse of each row of A @ W.T */
static PyObject *py_linear_log_sum_exp(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *a_obj, *w_obj;
    if (!PyArg_ParseTuple(args, "OO", &a_obj, &w_obj)) return NULL;
    PyArrayObject *a = gs_check_array(a_obj, "A", NPY_FLOAT32, 2, 2);
    if (!a) return NULL;
    PyArrayObject *w = gs_check_array(w_obj, "W", NPY_FLOAT32, 2, 2);
    if (!w) return NULL;
    if (gs_last_dim(a) != gs_last_dim(w))
        return PyErr_Format(PyExc_ValueError, "A has %d columns but W has %d; both must be d_model",
                            gs_last_dim(a), gs_last_dim(w));
    npy_intp n = (npy_intp)gs_rows(a);
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    if (!out) return NULL;
    int status;
    Py_BEGIN_ALLOW_THREADS
    gs_packed_b packed = {0};
    status = gs_packed_b_new(1, gs_last_dim(w), (int)gs_rows(w), PyArray_DATA(w), gs_last_dim(w), &packed);
    if (!status) status = gs_linear_log_sum_exp((size_t)n, PyArray_DATA(a), &packed, PyArray_DATA(out));
    gs_packed_b_free(&packed);
    Py_END_ALLOW_THREADS
    if (status) {
        Py_DECREF(out);
        return gs_raise(status);
    }
    return (PyObject *)out;
}

static PyObject *py_log_sum_exp_kernel_name(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyUnicode_FromString(gs_log_sum_exp_kernel_name());
}

PyMethodDef gs_decode_methods[] = {
    {"log_sum_exp", py_log_sum_exp, METH_O,
     "log_sum_exp(x (..., n) float32) -> (rows,) float64 log-sum-exp of each row (tests)"},
    {"linear_log_sum_exp", py_linear_log_sum_exp, METH_VARARGS,
     "linear_log_sum_exp(A (n, C) float32, W (V, C) float32) -> (n,) float64 log-sum-exp of each "
     "row of A @ W.T, without storing the product (tests)"},
    {"log_sum_exp_kernel_name", py_log_sum_exp_kernel_name, METH_NOARGS,
     "log_sum_exp_kernel_name() -> 'avx2-fma' or 'generic'"},
    {"trie_build", (PyCFunction)(void (*)(void))py_trie_build, METH_VARARGS | METH_KEYWORDS,
     "trie_build(table (N, L) int32, vocab_size=0, on_duplicate=0, sort=0) -> trie handle"},
    {"trie_info", py_trie_info, METH_O, "trie_info(handle) -> dict of sizes and duplicates"},
    {"trie_children", py_trie_children, METH_VARARGS,
     "trie_children(handle, prefix (d,) int32) -> sorted child tokens (int32)"},
    {"trie_lookup", py_trie_lookup, METH_VARARGS,
     "trie_lookup(handle, seq (L,) int32) -> item index or -1"},
    {"trie_arrays", py_trie_arrays, METH_O,
     "trie_arrays(handle) -> (level_start, token, child_start, leaf_item) copies"},
    {"t5_beam_search", (PyCFunction)(void (*)(void))py_t5_beam_search, METH_VARARGS | METH_KEYWORDS,
     "t5_beam_search(model, input_ids (B, T) int32, attention_mask (B, T) int32, num_beams, top_k, "
     "decoder_start_token_id=0, trie=None, id_sequences=None, candidates=None, on_duplicate=0, "
     "renormalise=False, norm_trie=None) -> (items (B, top_k) int64, scores (B, top_k) float32); "
     "renormalise: each token's log-probability over its trie siblings, not the vocabulary; norm_trie: "
     "the trie whose siblings normalise (default the searched one)"},
    {NULL, NULL, 0, NULL}};
