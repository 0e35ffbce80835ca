/* Bindings of csrc/quant: k-means, the residual quantiser, collision
 * resolution and the RQ-VAE (a PyCapsule owning the C model; its parameter,
 * gradient and AdamW buffers are exposed as zero-copy NumPy views that keep
 * the capsule alive). Compute runs with the GIL released. */
#include "binding.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common.h"
#include "../quant/kmeans.h"
#include "../quant/rq.h"
#include "../quant/rqvae.h"

#define RQVAE_CAPSULE "gensar.RQVAE"

/* tuple/list of ints -> out[0..*n), at most max entries */
static int parse_ints(PyObject *obj, const char *name, int *out, int *n, int max)
{
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of ints, got %s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "expected a sequence of ints");
    if (!seq) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of ints, got %s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    if (len > max) {
        PyErr_Format(PyExc_ValueError, "%s has %zd entries, at most %d supported", name, len, max);
        Py_DECREF(seq);
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        char item[80];
        snprintf(item, sizeof item, "%s[%zd]", name, i);
        if (gs_arg_int(PySequence_Fast_GET_ITEM(seq, i), item, 1, 1 << 30, &out[i])) {
            Py_DECREF(seq);
            return -1;
        }
    }
    *n = (int)len;
    Py_DECREF(seq);
    return 0;
}

static int parse_rq(PyObject *dims, PyObject *shared, PyObject *specific, gs_rq_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    if (parse_ints(dims, "dims", cfg->dim, &cfg->n_towers, 2) < 0) return -1;
    if (cfg->n_towers < 1) {
        PyErr_SetString(PyExc_ValueError, "dims must have 1 or 2 entries");
        return -1;
    }
    if (parse_ints(shared, "shared_levels", cfg->shared_k, &cfg->n_shared, GS_RQ_MAX_LEVELS) < 0)
        return -1;
    if (parse_ints(specific, "specific_levels", cfg->specific_k, &cfg->n_specific,
                   GS_RQ_MAX_LEVELS) < 0)
        return -1;
    return 0;
}

/* The quantiser's settings, its levels, and its input z (N, sum of dims) checked
 * against them: z (borrowed), or NULL with the exception set. */
static PyArrayObject *parse_rq_input(PyObject *oz, PyObject *dims, PyObject *shared,
                                     PyObject *specific, gs_rq_config *cfg, gs_rq_level *lv,
                                     int *nL, size_t *cbn)
{
    if (parse_rq(dims, shared, specific, cfg) < 0) return NULL;
    int st = gs_rq_levels(cfg, lv, nL, cbn);
    if (st != GS_OK) {
        gs_raise(st);
        return NULL;
    }
    PyArrayObject *z = gs_check_array(oz, "z", NPY_FLOAT32, 2, 2);
    if (!z) return NULL;
    int D = cfg->dim[0] + (cfg->n_towers == 2 ? cfg->dim[1] : 0);
    if (gs_last_dim(z) != D) {
        PyErr_Format(PyExc_ValueError, "z must have %d columns (sum of dims), got %d", D, gs_last_dim(z));
        return NULL;
    }
    return z;
}

static PyObject *py_kmeans(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"x", "k", "n_init", "max_iter", "tol", "seed", "init", NULL};
    PyObject *ox, *oinit = Py_None, *ok, *oninit = NULL, *oiter = NULL, *otol = NULL, *oseed = NULL;
    int k, n_init = 1, max_iter = 300;
    double tol = 1e-4;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OOOOO", kwlist, &ox, &ok, &oninit, &oiter, &otol,
                                     &oseed, &oinit))
        return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 2, 2);
    if (!x || gs_arg_int(ok, "k", 1, INT32_MAX, &k) ||
        gs_arg_int(oninit, "n_init", 1, 1 << 20, &n_init) ||
        gs_arg_int(oiter, "max_iter", 1, INT32_MAX, &max_iter) ||
        gs_arg_double(otol, "tol", 0.0, INFINITY, 0, &tol) || gs_arg_u64(oseed, "seed", &seed))
        return NULL;
    size_t N = gs_rows(x);
    int d = gs_last_dim(x);
    if ((size_t)k > N) {
        PyErr_Format(PyExc_ValueError, "k must be between 1 and the number of points (%zu), got %d",
                     N, k);
        return NULL;
    }
    const float *pinit = NULL;
    if (oinit != Py_None) {
        PyArrayObject *ia = gs_check_array(oinit, "init", NPY_FLOAT32, 2, 2);
        if (!ia) return NULL;
        if (PyArray_DIM(ia, 0) != k || PyArray_DIM(ia, 1) != d) {
            PyErr_Format(PyExc_ValueError, "init must have shape (%d, %d)", k, d);
            return NULL;
        }
        pinit = PyArray_DATA(ia);
    }
    npy_intp cd[2] = {k, d}, ld[1] = {(npy_intp)N};
    PyArrayObject *C = gs_new_f32(2, cd);
    PyArrayObject *lab = (PyArrayObject *)PyArray_SimpleNew(1, ld, NPY_INT32);
    if (!C || !lab) {
        Py_XDECREF(C), Py_XDECREF(lab);
        return NULL;
    }
    double inertia = 0.0;
    int st;
    const float *px = PyArray_DATA(x);
    float *pc = PyArray_DATA(C);
    int32_t *pl = PyArray_DATA(lab);
    Py_BEGIN_ALLOW_THREADS
    st = gs_kmeans(N, d, px, k, n_init, max_iter, tol, (uint64_t)seed, pinit, pc, pl, &inertia);
    Py_END_ALLOW_THREADS
    if (st != GS_OK) {
        Py_DECREF(C), Py_DECREF(lab);
        return gs_raise(st);
    }
    return Py_BuildValue("NNd", C, lab, inertia);
}

static PyObject *py_nearest_centroid(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *oc;
    if (!PyArg_ParseTuple(args, "OO", &ox, &oc)) return NULL;
    PyArrayObject *x = gs_check_array(ox, "x", NPY_FLOAT32, 2, 2);
    if (!x) return NULL;
    PyArrayObject *C = gs_check_array(oc, "centroids", NPY_FLOAT32, 2, 2);
    if (!C) return NULL;
    if (gs_last_dim(x) != gs_last_dim(C)) {
        PyErr_Format(PyExc_ValueError, "x has %d columns but centroids have %d", gs_last_dim(x),
                     gs_last_dim(C));
        return NULL;
    }
    size_t N = gs_rows(x);
    npy_intp nd[1] = {(npy_intp)N};
    PyArrayObject *lab = (PyArrayObject *)PyArray_SimpleNew(1, nd, NPY_INT32);
    PyArrayObject *d2 = gs_new_f32(1, nd);
    if (!lab || !d2) {
        Py_XDECREF(lab), Py_XDECREF(d2);
        return NULL;
    }
    int st, d = gs_last_dim(x), K = (int)gs_rows(C);
    const float *px = PyArray_DATA(x), *pc = PyArray_DATA(C);
    int32_t *pl = PyArray_DATA(lab);
    float *pd = PyArray_DATA(d2);
    Py_BEGIN_ALLOW_THREADS
    st = gs_nearest_centroid(N, d, px, K, pc, pl, pd);
    Py_END_ALLOW_THREADS
    if (st != GS_OK) {
        Py_DECREF(lab), Py_DECREF(d2);
        return gs_raise(st);
    }
    return Py_BuildValue("NN", lab, d2);
}

static PyObject *py_rq_encode(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"z", "codebooks", "dims", "shared_levels", "specific_levels",
                             "levels", NULL};
    PyObject *oz, *ocb, *odims, *osh, *osp, *olevels = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|O", kwlist, &oz, &ocb, &odims, &osh, &osp,
                                     &olevels))
        return NULL;
    gs_rq_config cfg;
    gs_rq_level lv[GS_RQ_MAX_TOTAL];
    int nL, st;
    size_t cbn;
    PyArrayObject *z = parse_rq_input(oz, odims, osh, osp, &cfg, lv, &nL, &cbn);
    if (!z) return NULL;
    PyArrayObject *cb = gs_check_array(ocb, "codebooks", NPY_FLOAT32, 1, 1);
    if (!cb) return NULL;
    const int D = gs_last_dim(z);
    if ((size_t)PyArray_DIM(cb, 0) != cbn) {
        PyErr_Format(PyExc_ValueError, "codebooks must hold %zu floats, got %zd", cbn,
                     (Py_ssize_t)PyArray_DIM(cb, 0));
        return NULL;
    }
    int nw = 0, wl[GS_RQ_MAX_TOTAL];
    if (olevels && olevels != Py_None) {
        PyObject *seq = PySequence_Fast(olevels, "levels must be a sequence of level indices");
        if (!seq) return NULL;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq) && nw < GS_RQ_MAX_TOTAL; i++) {
            long l = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
            if ((l == -1 && PyErr_Occurred()) || l < 0 || l >= nL) {
                Py_DECREF(seq);
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_ValueError, "level %ld out of range [0, %d)", l, nL);
                return NULL;
            }
            wl[nw++] = (int)l;
        }
        Py_DECREF(seq);
    }
    size_t N = gs_rows(z);
    npy_intp cd[2] = {(npy_intp)N, nL}, zd[2] = {(npy_intp)N, D};
    PyArrayObject *codes = (PyArrayObject *)PyArray_SimpleNew(2, cd, NPY_INT32);
    PyArrayObject *zq = gs_new_f32(2, zd);
    PyObject *ins = PyList_New(nw);
    float *lin[GS_RQ_MAX_TOTAL] = {0};
    if (!codes || !zq || !ins) goto fail;
    for (int i = 0; i < nw; i++) {
        npy_intp dd[2] = {(npy_intp)N, lv[wl[i]].width};
        PyArrayObject *a = gs_new_f32(2, dd);
        if (!a) goto fail;
        PyList_SET_ITEM(ins, i, (PyObject *)a);
        lin[wl[i]] = PyArray_DATA(a);
    }
    {
        const float *pz = PyArray_DATA(z), *pcb = PyArray_DATA(cb);
        int32_t *pcodes = PyArray_DATA(codes);
        float *pzq = PyArray_DATA(zq);
        Py_BEGIN_ALLOW_THREADS
        st = gs_rq_encode(&cfg, pcb, N, pz, pcodes, pzq, lin);
        Py_END_ALLOW_THREADS
    }
    if (st != GS_OK) {
        Py_DECREF(codes), Py_DECREF(zq), Py_DECREF(ins);
        return gs_raise(st);
    }
    return Py_BuildValue("NNN", codes, zq, ins);
fail:
    Py_XDECREF(codes), Py_XDECREF(zq), Py_XDECREF(ins);
    return NULL;
}

static PyObject *py_rq_fit_kmeans(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"z", "dims", "shared_levels", "specific_levels", "n_init",
                             "max_iter", "seed", NULL};
    PyObject *oz, *odims, *osh, *osp, *oninit = NULL, *oiter = NULL, *oseed = NULL;
    int n_init = 1, max_iter = 100;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|OOO", kwlist, &oz, &odims, &osh, &osp,
                                     &oninit, &oiter, &oseed))
        return NULL;
    if (gs_arg_int(oninit, "n_init", 1, 1 << 20, &n_init) ||
        gs_arg_int(oiter, "max_iter", 0, INT32_MAX, &max_iter) || gs_arg_u64(oseed, "seed", &seed))
        return NULL;
    gs_rq_config cfg;
    gs_rq_level lv[GS_RQ_MAX_TOTAL];
    int nL, st;
    size_t cbn;
    PyArrayObject *z = parse_rq_input(oz, odims, osh, osp, &cfg, lv, &nL, &cbn);
    if (!z) return NULL;
    npy_intp n[1] = {(npy_intp)cbn};
    PyArrayObject *cb = gs_new_f32(1, n);
    if (!cb) return NULL;
    size_t N = gs_rows(z);
    const float *pz = PyArray_DATA(z);
    float *pcb = PyArray_DATA(cb);
    Py_BEGIN_ALLOW_THREADS
    st = gs_rq_fit_kmeans(&cfg, N, pz, n_init, max_iter, (uint64_t)seed, pcb);
    Py_END_ALLOW_THREADS
    if (st != GS_OK) {
        Py_DECREF(cb);
        return gs_raise(st);
    }
    return (PyObject *)cb;
}

static PyObject *py_resolve_collisions(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"ids", "level_sizes", "residual", "codebook", "fixed", "epsilon",
                             "iterations", NULL};
    PyObject *oids, *ok, *ores, *ocb, *ofixed = Py_None, *oeps = NULL, *oiters = NULL;
    double eps = 0.003;
    int iters = 50;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|OOO", kwlist, &oids, &ok, &ores, &ocb,
                                     &ofixed, &oeps, &oiters))
        return NULL;
    if (gs_arg_double(oeps, "epsilon", 0.0, INFINITY, GS_LO_OPEN, &eps) ||
        gs_arg_int(oiters, "iterations", 0, INT32_MAX, &iters))
        return NULL;
    PyArrayObject *ids = gs_check_out_array(oids, "ids", NPY_INT32, 2, 2);
    if (!ids) return NULL;
    int L = gs_last_dim(ids), K[GS_RQ_MAX_TOTAL + 1], nk;
    if (parse_ints(ok, "level_sizes", K, &nk, GS_RQ_MAX_TOTAL + 1) < 0) return NULL;
    if (nk != L) {
        PyErr_Format(PyExc_ValueError, "level_sizes has %d entries but ids have %d levels", nk, L);
        return NULL;
    }
    PyArrayObject *res = gs_check_array(ores, "residual", NPY_FLOAT32, 2, 2);
    if (!res) return NULL;
    PyArrayObject *cb = gs_check_array(ocb, "codebook", NPY_FLOAT32, 2, 2);
    if (!cb) return NULL;
    size_t N = gs_rows(ids);
    int d = gs_last_dim(res);
    if (gs_rows(res) != N || gs_last_dim(cb) != d || (int)gs_rows(cb) != K[L - 1]) {
        PyErr_Format(PyExc_ValueError,
                     "residual must be (%zu, d) and codebook (%d, d) with the same d", N, K[L - 1]);
        return NULL;
    }
    const unsigned char *pf = NULL;
    if (ofixed != Py_None) {
        PyArrayObject *fx = gs_check_array(ofixed, "fixed", NPY_BOOL, 1, 1);
        if (!fx) return NULL;
        if ((size_t)PyArray_DIM(fx, 0) != N) {
            PyErr_Format(PyExc_ValueError, "fixed must have %zu entries", N);
            return NULL;
        }
        pf = PyArray_DATA(fx);
    }
    /* ids is rewritten in place while residual, codebook and fixed are read */
    if (gs_no_overlap(res, "residual", ids, "ids") || gs_no_overlap(cb, "codebook", ids, "ids"))
        return NULL;
    if (ofixed != Py_None && gs_no_overlap((PyArrayObject *)ofixed, "fixed", ids, "ids")) return NULL;
    gs_resolve_stats s;
    int st;
    int32_t *pid = PyArray_DATA(ids);
    const float *pr = PyArray_DATA(res), *pc = PyArray_DATA(cb);
    Py_BEGIN_ALLOW_THREADS
    st = gs_resolve_collisions(N, L, pid, K, d, pr, pc, pf, eps, iters, &s);
    Py_END_ALLOW_THREADS
    if (st != GS_OK) return gs_raise(st);
    return Py_BuildValue("{s:n,s:n,s:n,s:n}", "collided_before", (Py_ssize_t)s.collided_before,
                         "moved", (Py_ssize_t)s.moved, "unresolved", (Py_ssize_t)s.unresolved,
                         "largest_group", (Py_ssize_t)s.largest_group);
}

static PyObject *py_sinkhorn_scores(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *od, *oeps, *oiters;
    double eps;
    int iters;
    if (!PyArg_ParseTuple(args, "OOO", &od, &oeps, &oiters)) return NULL;
    PyArrayObject *dist = gs_check_array(od, "distances", NPY_FLOAT64, 2, 2);
    if (!dist || gs_arg_double(oeps, "epsilon", 0.0, INFINITY, GS_LO_OPEN, &eps) ||
        gs_arg_int(oiters, "iterations", 0, INT32_MAX, &iters))
        return NULL;
    if (PyArray_DIM(dist, 0) > INT32_MAX || PyArray_DIM(dist, 1) > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "distances is too large");
        return NULL;
    }
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(dist), NPY_FLOAT64);
    if (!out) return NULL;
    int m = (int)PyArray_DIM(dist, 0), F = (int)PyArray_DIM(dist, 1);
    const double *pd = PyArray_DATA(dist);
    double *po = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    gs_sinkhorn_scores(m, F, pd, eps, iters, po);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

/* ---- RQ-VAE ---- */

static void rqvae_destroy(PyObject *cap)
{
    gs_rqvae_free(PyCapsule_GetPointer(cap, RQVAE_CAPSULE));
    gs_capsule_free_lock(cap);
}

static gs_rqvae *get_model(PyObject *cap)
{
    if (!PyCapsule_IsValid(cap, RQVAE_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "model must be an RQ-VAE handle made by rqvae_new()");
        return NULL;
    }
    return PyCapsule_GetPointer(cap, RQVAE_CAPSULE);
}

static PyObject *py_rqvae_new(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"in_dims", "hidden", "latent", "shared_levels", "specific_levels",
                             "beta", "max_batch", "seed", NULL};
    PyObject *oin, *ohid, *osh, *osp, *olatent, *obeta, *obatch, *oseed;
    int latent, max_batch;
    float beta;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOO", kwlist, &oin, &ohid, &olatent, &osh,
                                     &osp, &obeta, &obatch, &oseed))
        return NULL;
    if (gs_arg_int(olatent, "latent", 1, 1 << 30, &latent) ||
        gs_arg_float(obeta, "beta", 0.0, FLT_MAX, 0, &beta) ||
        gs_arg_int(obatch, "max_batch", 1, INT32_MAX, &max_batch) || gs_arg_u64(oseed, "seed", &seed))
        return NULL;
    gs_rqvae_config cfg;
    memset(&cfg, 0, sizeof cfg);
    /* parse_ints accepts an empty sequence (0 entries) and names a non-sequence */
    if (parse_ints(oin, "in_dims", cfg.in_dim, &cfg.n_towers, 2) < 0 ||
        parse_ints(ohid, "hidden", cfg.hidden, &cfg.n_hidden, GS_RQVAE_MAX_HIDDEN) < 0 ||
        parse_ints(osh, "shared_levels", cfg.shared_k, &cfg.n_shared, GS_RQ_MAX_LEVELS) < 0 ||
        parse_ints(osp, "specific_levels", cfg.specific_k, &cfg.n_specific, GS_RQ_MAX_LEVELS) < 0)
        return NULL;
    cfg.latent = latent, cfg.beta = beta;
    gs_rqvae *m;
    int st = gs_rqvae_create(&cfg, max_batch, (uint64_t)seed, &m);
    if (st != GS_OK) return gs_raise(st);
    PyObject *cap = gs_new_model_capsule(m, RQVAE_CAPSULE, rqvae_destroy);
    if (!cap) gs_rqvae_free(m);
    return cap;
}

static PyObject *py_rqvae_buffers(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_rqvae *m = get_model(cap);
    if (!m) return NULL;
    size_t n = gs_rqvae_num_params(m);
    return Py_BuildValue("NNNN", gs_f32_view(cap, gs_rqvae_params(m), n), gs_f32_view(cap, gs_rqvae_grads(m), n),
                         gs_f32_view(cap, gs_rqvae_adam_m(m), n), gs_f32_view(cap, gs_rqvae_adam_v(m), n));
}

static PyObject *py_rqvae_layout(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_rqvae *m = get_model(cap);
    if (!m) return NULL;
    int count = gs_rqvae_tensor(m, -1, NULL, 0, NULL, NULL, NULL);
    PyObject *list = PyList_New(count);
    if (!list) return NULL;
    for (int i = 0; i < count; i++) {
        char name[64];
        size_t off;
        int nd, dims[2];
        gs_rqvae_tensor(m, i, name, sizeof name, &off, &nd, dims);
        PyObject *t = nd == 1 ? Py_BuildValue("(sn(i))", name, (Py_ssize_t)off, dims[0])
                              : Py_BuildValue("(sn(ii))", name, (Py_ssize_t)off, dims[0], dims[1]);
        if (!t) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

static PyObject *py_rqvae_step_count(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *oset = NULL;
    long long set = -1;
    if (!PyArg_ParseTuple(args, "O|O", &cap, &oset)) return NULL;
    gs_rqvae *m = get_model(cap);
    if (!m || gs_arg_int64(oset, "set", -1, LONG_MAX, &set)) return NULL;
    if (set >= 0) *gs_rqvae_step_counter(m) = set;
    return PyLong_FromLong(*gs_rqvae_step_counter(m));
}

/* x0 (B, in_0) [, x1 (B, in_1)] checked against the model */
static int get_inputs(gs_rqvae *m, PyObject *o0, PyObject *o1, const float **x0, const float **x1,
                      size_t *N)
{
    (void)m;
    PyArrayObject *a = gs_check_array(o0, "x0", NPY_FLOAT32, 2, 2);
    if (!a) return -1;
    *x0 = PyArray_DATA(a), *N = gs_rows(a), *x1 = NULL;
    if (o1 && o1 != Py_None) {
        PyArrayObject *b = gs_check_array(o1, "x1", NPY_FLOAT32, 2, 2);
        if (!b) return -1;
        if (gs_rows(b) != *N) {
            PyErr_Format(PyExc_ValueError, "x0 has %zu rows but x1 has %zu", *N, gs_rows(b));
            return -1;
        }
        *x1 = PyArray_DATA(b);
    }
    return 0;
}

static int check_widths(gs_rqvae *m, PyObject *o0, PyObject *o1)
{
    const gs_rq_config *rq = gs_rqvae_rq(m);
    char name[64];
    size_t off;
    int nd, dims[2];
    /* the first layer of encoder t gives its input width */
    int nl_total = gs_rqvae_tensor(m, -1, NULL, 0, NULL, NULL, NULL);
    (void)nl_total;
    int per_tower = 0;
    for (int i = 0;; i++) {
        gs_rqvae_tensor(m, i, name, sizeof name, &off, &nd, dims);
        if (strncmp(name, "encoder0.", 9) != 0) break;
        per_tower++;
    }
    for (int t = 0; t < rq->n_towers; t++) {
        gs_rqvae_tensor(m, t * per_tower, name, sizeof name, &off, &nd, dims);
        PyObject *o = t == 0 ? o0 : o1;
        if (!o || o == Py_None) {
            PyErr_SetString(PyExc_ValueError, "this model has two towers: pass both inputs");
            return -1;
        }
        int w = (int)PyArray_DIM((PyArrayObject *)o, 1);
        if (w != dims[1]) {
            PyErr_Format(PyExc_ValueError, "input %d must have %d columns, got %d", t, dims[1], w);
            return -1;
        }
    }
    if (rq->n_towers == 1 && o1 && o1 != Py_None) {
        PyErr_SetString(PyExc_ValueError, "this model has one tower: pass one input");
        return -1;
    }
    return 0;
}

#define PARSE_MODEL_INPUTS(extra_fmt, ...)                                                         \
    PyObject *cap, *o0, *o1 = Py_None;                                                             \
    if (!PyArg_ParseTuple(args, "OO|O" extra_fmt, &cap, &o0, &o1, ##__VA_ARGS__)) return NULL;    \
    gs_rqvae *m = get_model(cap);                                                                  \
    if (!m) return NULL;                                                                           \
    const float *x0, *x1;                                                                          \
    size_t N;                                                                                      \
    if (get_inputs(m, o0, o1, &x0, &x1, &N) < 0 || check_widths(m, o0, o1) < 0) return NULL;

static PyObject *py_rqvae_latent(PyObject *self, PyObject *args)
{
    (void)self;
    PARSE_MODEL_INPUTS("")
    const gs_rq_config *rq = gs_rqvae_rq(m);
    npy_intp d[2] = {(npy_intp)N, rq->dim[0] * rq->n_towers};
    PyArrayObject *z = gs_new_f32(2, d);
    if (!z) return NULL;
    int st;
    float *pz = PyArray_DATA(z);
    GS_WRITE_LOCKED(cap, st = gs_rqvae_latent(m, N, x0, x1, pz));
    if (st != GS_OK) {
        Py_DECREF(z);
        return gs_raise(st);
    }
    return (PyObject *)z;
}

static PyObject *py_rqvae_init_codebooks(PyObject *self, PyObject *args)
{
    (void)self;
    int max_iter = 50;
    unsigned long long seed = 0;
    PyObject *oiter = NULL, *oseed = NULL;
    PARSE_MODEL_INPUTS("OO", &oiter, &oseed)
    if (gs_arg_int(oiter, "max_iter", 0, INT32_MAX, &max_iter) || gs_arg_u64(oseed, "seed", &seed))
        return NULL;
    int st;
    GS_WRITE_LOCKED(cap, st = gs_rqvae_init_codebooks(m, (int)N, x0, x1, max_iter, (uint64_t)seed));
    if (st != GS_OK) return gs_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_rqvae_forward_backward(PyObject *self, PyObject *args)
{
    (void)self;
    PARSE_MODEL_INPUTS("")
    double l[4];
    int st;
    GS_WRITE_LOCKED(cap, st = gs_rqvae_forward_backward(m, (int)N, x0, x1, l));
    if (st != GS_OK) return gs_raise(st);
    return Py_BuildValue("(dddd)", l[0], l[1], l[2], l[3]);
}

static PyObject *py_rqvae_train_step(PyObject *self, PyObject *args)
{
    (void)self;
    float lr = 1e-3f, wd = 1e-5f;
    PyObject *olr = NULL, *owd = NULL;
    PARSE_MODEL_INPUTS("OO", &olr, &owd)
    if (gs_arg_float(olr, "lr", 0.0, FLT_MAX, 0, &lr) ||
        gs_arg_float(owd, "weight_decay", 0.0, FLT_MAX, 0, &wd))
        return NULL;
    double l[4];
    int st;
    GS_WRITE_LOCKED(cap, st = gs_rqvae_train_step(m, (int)N, x0, x1, lr, wd, l));
    if (st != GS_OK) return gs_raise(st);
    return Py_BuildValue("(dddd)", l[0], l[1], l[2], l[3]);
}

static PyObject *py_rqvae_reconstruct(PyObject *self, PyObject *args)
{
    (void)self;
    PARSE_MODEL_INPUTS("")
    const gs_rq_config *rq = gs_rqvae_rq(m);
    gs_rq_level lv[GS_RQ_MAX_TOTAL];
    int nL;
    gs_rq_levels(rq, lv, &nL, NULL);
    npy_intp cd[2] = {(npy_intp)N, nL}, ed[2] = {(npy_intp)N, rq->n_towers};
    PyArrayObject *codes = (PyArrayObject *)PyArray_SimpleNew(2, cd, NPY_INT32);
    PyArrayObject *err = gs_new_f32(2, ed);
    if (!codes || !err) {
        Py_XDECREF(codes), Py_XDECREF(err);
        return NULL;
    }
    int st;
    int32_t *pc = PyArray_DATA(codes);
    float *pe = PyArray_DATA(err);
    GS_WRITE_LOCKED(cap, st = gs_rqvae_reconstruct(m, N, x0, x1, pc, pe));
    if (st != GS_OK) {
        Py_DECREF(codes), Py_DECREF(err);
        return gs_raise(st);
    }
    return Py_BuildValue("NN", codes, err);
}

static PyObject *py_rqvae_code_usage(PyObject *self, PyObject *cap)
{
    (void)self;
    gs_rqvae *m = get_model(cap);
    if (!m) return NULL;
    npy_intp n[1] = {(npy_intp)gs_rqvae_code_usage(m, NULL)};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, n, NPY_INT64);
    if (!out) return NULL;
    int64_t *po = PyArray_DATA(out);
    GS_WRITE_LOCKED(cap, gs_rqvae_code_usage(m, po)); /* counters written by training steps */
    return (PyObject *)out;
}

static PyObject *py_rqvae_restart_dead_codes(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cap, *oseed = NULL;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "O|O", &cap, &oseed)) return NULL;
    gs_rqvae *m = get_model(cap);
    if (!m || gs_arg_u64(oseed, "seed", &seed)) return NULL;
    gs_rq_level lv[GS_RQ_MAX_TOTAL];
    int nL, restarted[GS_RQ_MAX_TOTAL], st;
    gs_rq_levels(gs_rqvae_rq(m), lv, &nL, NULL);
    GS_WRITE_LOCKED(cap, st = gs_rqvae_restart_dead_codes(m, (uint64_t)seed, restarted));
    if (st != GS_OK) return gs_raise(st);
    PyObject *out = PyList_New(nL);
    if (!out) return NULL;
    for (int l = 0; l < nL; l++) {
        PyObject *v = PyLong_FromLong(restarted[l]);
        if (!v) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, l, v);
    }
    return out;
}

PyMethodDef gs_quant_methods[] = {
    {"kmeans", (PyCFunction)(void (*)(void))py_kmeans, METH_VARARGS | METH_KEYWORDS,
     "kmeans(x, k, n_init=1, max_iter=300, tol=1e-4, seed=0, init=None) -> (centroids (k,d), labels (N,) "
     "int32, inertia)\n\nx (N,d) float32; greedy k-means++ seeding, Lloyd iterations, best of "
     "n_init."},
    {"nearest_centroid", py_nearest_centroid, METH_VARARGS,
     "nearest_centroid(x (N,d), centroids (K,d)) -> (labels (N,) int32, squared distances (N,))"},
    {"rq_encode", (PyCFunction)(void (*)(void))py_rq_encode, METH_VARARGS | METH_KEYWORDS,
     "rq_encode(z, codebooks, dims, shared_levels, specific_levels, levels=()) -> (codes (N,nL) "
     "int32, zq (N,D), [residual entering each requested level])"},
    {"rq_fit_kmeans", (PyCFunction)(void (*)(void))py_rq_fit_kmeans, METH_VARARGS | METH_KEYWORDS,
     "rq_fit_kmeans(z, dims, shared_levels, specific_levels, n_init=1, max_iter=100, seed=0) -> "
     "flat codebooks (plain residual k-means)"},
    {"resolve_collisions", (PyCFunction)(void (*)(void))py_resolve_collisions,
     METH_VARARGS | METH_KEYWORDS,
     "resolve_collisions(ids (N,L) int32 [modified in place], level_sizes, residual (N,d), "
     "codebook (K,d), fixed=None (N,) bool, epsilon=0.003, iterations=50) -> stats dict"},
    {"sinkhorn_scores", py_sinkhorn_scores, METH_VARARGS,
     "sinkhorn_scores(distances (m,F) float64, epsilon, iterations) -> log-plan scores (m,F)"},
    {"rqvae_new", (PyCFunction)(void (*)(void))py_rqvae_new, METH_VARARGS | METH_KEYWORDS,
     "rqvae_new(in_dims, hidden, latent, shared_levels, specific_levels, beta, max_batch, seed) "
     "-> model capsule"},
    {"rqvae_buffers", py_rqvae_buffers, METH_O,
     "rqvae_buffers(model) -> (params, grads, adam_m, adam_v): zero-copy float32 views"},
    {"rqvae_layout", py_rqvae_layout, METH_O,
     "rqvae_layout(model) -> [(name, offset, shape)] of the parameter buffer"},
    {"rqvae_step_count", py_rqvae_step_count, METH_VARARGS,
     "rqvae_step_count(model, set=-1) -> AdamW step counter (sets it when set >= 0)"},
    {"rqvae_latent", py_rqvae_latent, METH_VARARGS, "rqvae_latent(model, x0, x1=None) -> z (N, T*h)"},
    {"rqvae_init_codebooks", py_rqvae_init_codebooks, METH_VARARGS,
     "rqvae_init_codebooks(model, x0, x1=None, max_iter=50, seed=0): k-means on this batch"},
    {"rqvae_forward_backward", py_rqvae_forward_backward, METH_VARARGS,
     "rqvae_forward_backward(model, x0, x1=None) -> (total, recon0, recon1, quant); grads "
     "overwritten"},
    {"rqvae_train_step", py_rqvae_train_step, METH_VARARGS,
     "rqvae_train_step(model, x0, x1=None, lr=1e-3, weight_decay=1e-5) -> losses"},
    {"rqvae_reconstruct", py_rqvae_reconstruct, METH_VARARGS,
     "rqvae_reconstruct(model, x0, x1=None) -> (codes (N,nL) int32, squared error (N,T))"},
    {"rqvae_code_usage", py_rqvae_code_usage, METH_O,
     "rqvae_code_usage(model) -> int64 (total codes,): training rows assigned to each code since "
     "the last restart check (levels in code order)"},
    {"rqvae_restart_dead_codes", py_rqvae_restart_dead_codes, METH_VARARGS,
     "rqvae_restart_dead_codes(model, seed=0) -> [codes restarted per level]: unused codes move to "
     "random residuals of the last batch; usage counters reset"},
    {NULL, NULL, 0, NULL}};
