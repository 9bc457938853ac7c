/* Top-k of a BM25 query over impact-ordered postings, in one call.
 *
 * The NumPy path of search/bm25.py (`BM25Index._one_term`, `_many_terms`) makes up to ten NumPy
 * calls per query; on a small catalog their fixed cost is most of the query. This does the same work
 * in one pass with no allocation: look the tokens up, count repeats; one term: the head of its
 * postings; several: add each term's impacts (times its count in the query) into a dense
 * scratch array, in term order as NumPy's bincount does, so that the sums are the same floats;
 * then keep the k best of the touched documents that the masks allow (a heap), ties to the lower
 * document id; then clear the scratch entries it touched. Only the buffer protocol is used, so it
 * builds without NumPy headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int get(PyObject *obj, Py_buffer *view, const char *format, Py_ssize_t itemsize, int writable,
               const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->itemsize != itemsize || view->format == NULL || strcmp(view->format, format) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous array of format '%s'", name, format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* an optional per-document flag array (numpy bool or uint8), or None */
static int get_flags(PyObject *obj, Py_buffer *view, Py_ssize_t min_len, const char *name) {
    if (obj == Py_None) return 0;
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    int flag_format = view->format != NULL && (strcmp(view->format, "?") == 0 || strcmp(view->format, "B") == 0);
    if (view->itemsize != 1 || !flag_format) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous bool or uint8 array", name);
        PyBuffer_Release(view);
        return -1;
    }
    if (view->len < min_len) {
        PyErr_Format(PyExc_ValueError, "%s: %zd entries, fewer than the %zd documents", name, view->len, min_len);
        PyBuffer_Release(view);
        return -1;
    }
    return 1;
}

/* a is better than b: higher score, then lower id */
static inline int better(double sa, int32_t ia, double sb, int32_t ib) {
    return sa > sb || (sa == sb && ia < ib);
}

/* not dropped by `drop` (live removals) and kept by `keep` (the caller's filter); either may be NULL */
static inline int allowed(const uint8_t *drop, const uint8_t *keep, int32_t d) {
    return !(drop && drop[d]) && !(keep && !keep[d]);
}

#define MAX_TERMS 64

/* Place (s, d) at the root of the heap of n entries and sift it down: the worse child comes up. */
static void sift_down(double *hs, int32_t *hi, Py_ssize_t n, double s, int32_t d) {
    Py_ssize_t at = 0;
    for (;;) {
        Py_ssize_t child = 2 * at + 1;
        if (child >= n) break;
        if (child + 1 < n && better(hs[child], hi[child], hs[child + 1], hi[child + 1])) child++;
        if (!better(s, d, hs[child], hi[child])) break;
        hs[at] = hs[child];
        hi[at] = hi[child];
        at = child;
    }
    hs[at] = s;
    hi[at] = d;
}

/* The k best (score, id) pairs seen so far: a binary heap with the worst at the root. */
static void heap_offer(double *hs, int32_t *hi, Py_ssize_t *n, Py_ssize_t k, double s, int32_t d) {
    if (*n == k) {  /* full: replace the worst, if this one is better */
        if (k > 0 && better(s, d, hs[0], hi[0])) sift_down(hs, hi, k, s, d);
        return;
    }
    Py_ssize_t at = (*n)++;
    while (at > 0) {  /* sift up: the worse goes up */
        Py_ssize_t parent = (at - 1) / 2;
        if (!better(hs[parent], hi[parent], s, d)) break;
        hs[at] = hs[parent];
        hi[at] = hi[parent];
        at = parent;
    }
    hs[at] = s;
    hi[at] = d;
}

/* Turn the heap into a list, best first (repeatedly move the worst to the end). */
static void heap_sort(double *hs, int32_t *hi, Py_ssize_t n) {
    for (Py_ssize_t end = n - 1; end > 0; end--) {
        double s = hs[end];
        int32_t d = hi[end];
        hs[end] = hs[0];
        hi[end] = hi[0];
        sift_down(hs, hi, end, s, d);
    }
}

/* search(tokens, spans, postings int32, impacts float64, k, masked, keep,
 *        dense float64 scratch (zeros), marks uint8 scratch (zeros), touched int32 scratch,
 *        out_ids int32[k], out_scores float64[k])
 *   -> number of results written, or -1 if the query has more than MAX_TERMS distinct terms
 *      (the caller then takes the NumPy path).
 * `spans` maps a term to (lo, hi), its postings; tokens missing from it add nothing; a token repeated
 * c times counts c times, as in rank-bm25. `masked` (documents to drop) and `keep` (documents allowed)
 * are bool arrays over the documents, or None. */
static PyObject *search(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "search takes 12 arguments");
        return NULL;
    }
    Py_buffer post, imp, dense, marks, touched, out_ids, out_scores, masked_view, keep_view;
    struct { Py_buffer *view; int arg; const char *format; Py_ssize_t itemsize; int writable; const char *name; }
    wanted[7] = {
        {&post, 2, "i", 4, 0, "postings"}, {&imp, 3, "d", 8, 0, "impacts"}, {&dense, 7, "d", 8, 1, "dense"},
        {&marks, 8, "B", 1, 1, "marks"}, {&touched, 9, "i", 4, 1, "touched"}, {&out_ids, 10, "i", 4, 1, "out_ids"},
        {&out_scores, 11, "d", 8, 1, "out_scores"},
    };
    int held = 0, has_masked = 0, has_keep = 0;
    PyObject *result = NULL, *tokens = NULL;
    PyObject *spans = args[1];
    Py_ssize_t k = PyLong_AsSsize_t(args[4]);
    if (k < 0 && PyErr_Occurred()) return NULL;
    if (!PyDict_Check(spans)) {
        PyErr_SetString(PyExc_TypeError, "spans: expected a dict term -> (lo, hi)");
        return NULL;
    }
    for (; held < 7; held++) {
        if (get(args[wanted[held].arg], wanted[held].view, wanted[held].format, wanted[held].itemsize,
                wanted[held].writable, wanted[held].name) < 0)
            goto done;
    }
    Py_ssize_t n_docs = dense.len / 8;
    int rc = get_flags(args[5], &masked_view, n_docs, "masked");
    if (rc < 0) goto done;
    has_masked = rc;
    rc = get_flags(args[6], &keep_view, n_docs, "keep");
    if (rc < 0) goto done;
    has_keep = rc;
    tokens = PySequence_Fast(args[0], "tokens: expected a sequence of str");
    if (tokens == NULL) goto done;

    const int32_t *P = post.buf;
    const double *I = imp.buf;
    double *D = dense.buf;
    uint8_t *M = marks.buf;
    int32_t *T = touched.buf;
    int32_t *OI = out_ids.buf;
    double *OS = out_scores.buf;
    const uint8_t *DROP = has_masked ? masked_view.buf : NULL;
    const uint8_t *KEEP = has_keep ? keep_view.buf : NULL;
    Py_ssize_t n_post = post.len / 4, n_touched = 0;
    if (imp.len / 8 != n_post || marks.len != n_docs || touched.len / 4 != n_docs ||
        out_ids.len / 4 < k || out_scores.len / 8 < k) {
        PyErr_SetString(PyExc_ValueError, "search: array lengths do not fit together");
        goto done;
    }

    /* distinct known terms in order of first appearance, with their counts */
    Py_ssize_t lo[MAX_TERMS], hi[MAX_TERMS], n_terms = 0;
    double count[MAX_TERMS];
    Py_ssize_t n_tokens = PySequence_Fast_GET_SIZE(tokens);
    PyObject **items = PySequence_Fast_ITEMS(tokens);
    for (Py_ssize_t i = 0; i < n_tokens; i++) {
        PyObject *span = PyDict_GetItemWithError(spans, items[i]);
        if (span == NULL) {
            if (PyErr_Occurred()) goto done;
            continue;
        }
        if (!PyTuple_Check(span) || PyTuple_GET_SIZE(span) != 2) {
            PyErr_SetString(PyExc_TypeError, "spans: expected (lo, hi) tuples");
            goto done;
        }
        Py_ssize_t a = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 0)), b = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 1));
        if (PyErr_Occurred()) goto done;
        if (a < 0 || b > n_post || a > b) {
            PyErr_SetString(PyExc_ValueError, "search: a span lies outside the postings");
            goto done;
        }
        Py_ssize_t t = 0;
        while (t < n_terms && lo[t] != a) t++;  /* each term has its own postings: the start names it */
        if (t < n_terms) {
            count[t] += 1.0;
            continue;
        }
        if (n_terms == MAX_TERMS) {
            result = PyLong_FromLong(-1);
            goto done;
        }
        lo[n_terms] = a;
        hi[n_terms] = b;
        count[n_terms++] = 1.0;
    }

    Py_ssize_t n_out = 0;
    if (n_terms == 1) {
        /* postings are stored best first (ties: lower id): the answer is their allowed head */
        for (Py_ssize_t j = lo[0]; j < hi[0] && n_out < k; j++) {
            int32_t d = P[j];
            if (d < 0 || d >= n_docs) {
                PyErr_SetString(PyExc_ValueError, "search: a posting names a document outside the scratch");
                goto done;
            }
            if (!allowed(DROP, KEEP, d)) continue;
            OI[n_out] = d;
            OS[n_out++] = I[j] * count[0];
        }
        result = PyLong_FromSsize_t(n_out);
        goto done;
    }
    for (Py_ssize_t t = 0; t < n_terms; t++) {
        for (Py_ssize_t j = lo[t]; j < hi[t]; j++) {
            int32_t d = P[j];
            if (d < 0 || d >= n_docs) {
                PyErr_SetString(PyExc_ValueError, "search: a posting names a document outside the scratch");
                goto clear;
            }
            /* a count of 1 adds the impact itself, as the NumPy path does (no multiplication) */
            double add = count[t] == 1.0 ? I[j] : I[j] * count[t];
            if (M[d]) {
                D[d] += add;
            } else {
                M[d] = 1;
                D[d] = add;
                T[n_touched++] = d;
            }
        }
    }
    for (Py_ssize_t i = 0; i < n_touched; i++) {
        int32_t d = T[i];
        if (!allowed(DROP, KEEP, d)) continue;
        heap_offer(OS, OI, &n_out, k, D[d], d);
    }
    heap_sort(OS, OI, n_out);
    result = PyLong_FromSsize_t(n_out);
clear:
    for (Py_ssize_t i = 0; i < n_touched; i++) {
        M[T[i]] = 0;
        D[T[i]] = 0.0;
    }
done:
    Py_XDECREF(tokens);
    if (has_masked) PyBuffer_Release(&masked_view);
    if (has_keep) PyBuffer_Release(&keep_view);
    for (int i = 0; i < held; i++) PyBuffer_Release(wanted[i].view);
    return result;
}

static PyMethodDef methods[] = {
    {"search", (PyCFunction)(void (*)(void))search, METH_FASTCALL,
     "search(tokens, spans, postings, impacts, k, masked, keep, dense, marks, touched, out_ids, out_scores)"
     " -> n or -1"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bm25_kernel", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__bm25_kernel(void) { return PyModule_Create(&module); }
