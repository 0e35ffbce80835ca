/* Prefix trie of item identifiers: build by a stable sort of the paths, then one
 * pass that opens a node wherever a path leaves its predecessor's prefix. */
#include "trie.h"

#include <stdio.h>
#include <string.h>

#include "../common.h"

/* Rows below this count are sorted by merge sort: a radix pass costs a
 * histogram of up to 65536 buckets per column, which dominates tiny tries
 * (the per-example candidate sets of 100 items). */
#define RADIX_MIN_ROWS 2048

typedef struct {
    const int32_t *table;
    const int64_t *rows; /* NULL: identity */
    int depth;
} path_source;

static inline const int32_t *path_of(const path_source *s, int64_t i)
{
    int64_t r = s->rows ? s->rows[i] : i;
    return s->table + r * (int64_t)s->depth;
}

static inline int64_t item_of(const path_source *s, int64_t i) { return s->rows ? s->rows[i] : i; }

/* -1, 0, 1 as path a <, ==, > path b lexicographically. */
static inline int compare_paths(const int32_t *a, const int32_t *b, int depth)
{
    for (int c = 0; c < depth; c++)
        if (a[c] != b[c]) return a[c] < b[c] ? -1 : 1;
    return 0;
}

/* Stable bottom-up merge sort of order[0..n) (positions into the source) by path.
 * tmp (n) scratch. Leaves the result in order. */
static void merge_sort(const path_source *s, int64_t *order, int64_t *tmp, int64_t n)
{
    int64_t *src = order, *dst = tmp;
    /* Insertion-sort runs of 16 first: fewer passes, and cheap on sorted input. */
    const int64_t run = 16;
    for (int64_t lo = 0; lo < n; lo += run) {
        int64_t hi = lo + run < n ? lo + run : n;
        for (int64_t i = lo + 1; i < hi; i++) {
            int64_t v = src[i];
            const int32_t *pv = path_of(s, v);
            int64_t j = i;
            while (j > lo && compare_paths(path_of(s, src[j - 1]), pv, s->depth) > 0) {
                src[j] = src[j - 1];
                j--;
            }
            src[j] = v;
        }
    }
    for (int64_t width = run; width < n; width *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * width) {
            int64_t mid = lo + width < n ? lo + width : n;
            int64_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            int64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) /* <= keeps equal paths in input order (stable) */
                dst[k++] = compare_paths(path_of(s, src[i]), path_of(s, src[j]), s->depth) <= 0
                               ? src[i++]
                               : src[j++];
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        int64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != order) memcpy(order, src, (size_t)n * sizeof *order);
}

/* Stable LSD radix sort of order[0..n) by path: columns from last to first,
 * 16-bit digits (one pass per column when every token < 65536).
 * tmp (n) and count (65536) scratch. */
static void radix_sort(const path_source *s, int64_t *order, int64_t *tmp, int64_t *count,
                       int64_t n, int32_t max_token)
{
    int64_t *src = order, *dst = tmp;
    int digits = max_token >= 65536 ? 2 : 1;
    int64_t buckets = max_token >= 65536 ? 65536 : (int64_t)max_token + 1;
    for (int c = s->depth - 1; c >= 0; c--) {
        for (int dg = 0; dg < digits; dg++) {
            int shift = 16 * dg;
            memset(count, 0, (size_t)buckets * sizeof *count);
            for (int64_t i = 0; i < n; i++) count[(path_of(s, src[i])[c] >> shift) & 0xFFFF]++;
            int64_t sum = 0;
            for (int64_t b = 0; b < buckets; b++) {
                int64_t k = count[b];
                count[b] = sum;
                sum += k;
            }
            for (int64_t i = 0; i < n; i++)
                dst[count[(path_of(s, src[i])[c] >> shift) & 0xFFFF]++] = src[i];
            int64_t *t = src;
            src = dst;
            dst = t;
        }
    }
    if (src != order) memcpy(order, src, (size_t)n * sizeof *order);
}

void gs_trie_free(gs_trie *t)
{
    if (!t) return;
    gs_free(t->token);
    gs_free(t->child_start);
    gs_free(t->leaf_item);
    gs_free(t);
}

int gs_trie_build(const int32_t *table, int64_t n_table, int depth, const int64_t *rows,
                  int64_t n_rows, int32_t vocab_size, int dup_policy, int sort_algorithm,
                  gs_trie **out)
{
    *out = NULL;
    if (depth < 1 || depth > GS_TRIE_MAX_DEPTH)
        return gs_fail(GS_EINVAL, "identifier length must be in [1, %d], got %d",
                       GS_TRIE_MAX_DEPTH, depth);
    if (n_rows < 1) return gs_fail(GS_EINVAL, "a trie needs at least one path, got %lld",
                                   (long long)n_rows);
    if (!rows && n_rows != n_table)
        return gs_fail(GS_EINVAL, "internal: n_rows (%lld) != n_table (%lld) without a row list",
                       (long long)n_rows, (long long)n_table);
    if (dup_policy != GS_TRIE_DUP_ERROR && dup_policy != GS_TRIE_DUP_FIRST)
        return gs_fail(GS_EINVAL, "unknown duplicate policy %d", dup_policy);
    if (sort_algorithm < GS_TRIE_SORT_AUTO || sort_algorithm > GS_TRIE_SORT_MERGE)
        return gs_fail(GS_EINVAL, "unknown sort algorithm %d", sort_algorithm);
    /* Node ids are int32: at most n_rows * depth + 1 nodes. */
    if (n_rows > (int64_t)(INT32_MAX - 1) / depth)
        return gs_fail(GS_EINVAL, "too many paths for one trie: %lld x %d tokens exceeds 2^31 nodes",
                       (long long)n_rows, depth);

    path_source s = {table, rows, depth};
    int32_t max_token = 0;
    for (int64_t i = 0; i < n_rows; i++) {
        if (rows && (rows[i] < 0 || rows[i] >= n_table))
            return gs_fail(GS_EINVAL, "item index %lld is outside [0, %lld)", (long long)rows[i],
                           (long long)n_table);
        const int32_t *p = path_of(&s, i);
        for (int c = 0; c < depth; c++) {
            if (p[c] < 0 || (vocab_size > 0 && p[c] >= vocab_size))
                return gs_fail(GS_EINVAL,
                               "token id %d of item %lld (position %d) is outside the vocabulary "
                               "[0, %d)",
                               (int)p[c], (long long)item_of(&s, i), c,
                               vocab_size > 0 ? (int)vocab_size : INT32_MAX);
            if (p[c] > max_token) max_token = p[c];
        }
    }

    int status = GS_ENOMEM;
    gs_trie *t = gs_calloc(sizeof *t);
    int64_t *order = gs_alloc((size_t)n_rows * sizeof *order);
    int64_t *tmp = gs_alloc((size_t)n_rows * sizeof *tmp);
    int64_t *count = NULL;
    uint8_t *lcp = gs_alloc((size_t)n_rows);
    if (!t || !order || !tmp || !lcp) goto done;

    /* 1. Stable sort of the paths: equal paths keep input order, so the first
     *    given item of a colliding group is the one kept. */
    for (int64_t i = 0; i < n_rows; i++) order[i] = i;
    int use_radix = sort_algorithm == GS_TRIE_SORT_RADIX ||
                    (sort_algorithm == GS_TRIE_SORT_AUTO && n_rows >= RADIX_MIN_ROWS);
    if (use_radix) {
        if (!(count = gs_alloc(65536 * sizeof *count))) goto done;
        radix_sort(&s, order, tmp, count, n_rows, max_token);
    } else {
        merge_sort(&s, order, tmp, n_rows);
    }

    /* 2. lcp[i] = common prefix length of sorted paths i-1 and i (0 for the
     *    first); a path opens a new node at every depth d > lcp[i]. */
    int64_t per_depth[GS_TRIE_MAX_DEPTH + 1] = {0};
    lcp[0] = 0;
    for (int64_t i = 1; i < n_rows; i++) {
        const int32_t *a = path_of(&s, order[i - 1]), *b = path_of(&s, order[i]);
        int c = 0;
        while (c < depth && a[c] == b[c]) c++;
        lcp[i] = (uint8_t)c;
    }
    for (int64_t i = 0; i < n_rows; i++) per_depth[lcp[i]]++;
    /* nodes at depth d = paths with lcp < d */
    t->depth = depth;
    t->n_items = n_rows;
    t->max_token = max_token;
    t->level_start[0] = 0;
    t->level_start[1] = 1;
    int64_t below = 0; /* paths with lcp < d */
    for (int d = 1; d <= depth; d++) {
        below += per_depth[d - 1];
        t->level_start[d + 1] = t->level_start[d] + below;
    }
    t->n_nodes = t->level_start[depth + 1];
    t->n_leaves = t->level_start[depth + 1] - t->level_start[depth];
    t->n_duplicates = per_depth[depth];
    if (t->n_duplicates > 0 && dup_policy == GS_TRIE_DUP_ERROR) {
        for (int64_t i = 1; i < n_rows; i++)
            if (lcp[i] == depth) {
                /* the kept item is the first of the run of equal paths */
                int64_t k = i - 1;
                while (k > 0 && lcp[k] == depth) k--;
                status = gs_fail(GS_EINVAL,
                                 "%lld item(s) share their identifier path with another item, "
                                 "e.g. items %lld and %lld; resolve the collisions or pass "
                                 "on_duplicate='first' (or 'warn') to keep the first item of each group",
                                 (long long)t->n_duplicates, (long long)item_of(&s, order[k]),
                                 (long long)item_of(&s, order[i]));
                goto done;
            }
    }

    t->token = gs_alloc((size_t)t->n_nodes * sizeof *t->token);
    t->child_start = gs_calloc((size_t)(t->n_nodes + 1) * sizeof *t->child_start);
    t->leaf_item = gs_alloc((size_t)t->n_leaves * sizeof *t->leaf_item);
    if (!t->token || !t->child_start || !t->leaf_item) goto done;

    /* 3. One pass over the sorted paths opens the nodes. cur[d] = the current
     *    node of depth d; next_id[d] = the next free id at depth d. Children
     *    are counted in child_start[parent + 1], prefix-summed afterwards. */
    int32_t cur[GS_TRIE_MAX_DEPTH + 1], next_id[GS_TRIE_MAX_DEPTH + 1];
    cur[0] = 0;
    t->token[0] = -1;
    for (int d = 1; d <= depth; d++) next_id[d] = (int32_t)t->level_start[d];
    int32_t leaf0 = (int32_t)t->level_start[depth];
    for (int64_t i = 0; i < n_rows; i++) {
        const int32_t *p = path_of(&s, order[i]);
        if (lcp[i] == depth) {
            if (t->n_dup_examples < GS_TRIE_MAX_DUP_EXAMPLES) {
                t->dup_examples[t->n_dup_examples][0] = t->leaf_item[cur[depth] - leaf0];
                t->dup_examples[t->n_dup_examples][1] = item_of(&s, order[i]);
                t->n_dup_examples++;
            }
            continue;
        }
        for (int d = lcp[i] + 1; d <= depth; d++) {
            int32_t id = next_id[d]++;
            t->token[id] = p[d - 1];
            t->child_start[cur[d - 1] + 1]++;
            cur[d] = id;
        }
        t->leaf_item[cur[depth] - leaf0] = item_of(&s, order[i]);
    }
    /* counts -> offsets; the first child of the root is node 1 */
    t->child_start[0] = 1;
    for (int64_t n = 1; n <= t->n_nodes; n++) t->child_start[n] += t->child_start[n - 1];
    status = GS_OK;

done:
    if (status == GS_ENOMEM)
        gs_fail(GS_ENOMEM, "out of memory building a trie of %lld paths of %d tokens",
                (long long)n_rows, depth);
    gs_free(order);
    gs_free(tmp);
    gs_free(count);
    gs_free(lcp);
    if (status != GS_OK) {
        gs_trie_free(t);
        return status;
    }
    *out = t;
    return GS_OK;
}

int32_t gs_trie_child(const gs_trie *t, int32_t node, int32_t token)
{
    int32_t lo = t->child_start[node], hi = t->child_start[node + 1];
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (t->token[mid] < token)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->child_start[node + 1] && t->token[lo] == token ? lo : -1;
}

int32_t gs_trie_walk(const gs_trie *t, const int32_t *prefix, int len)
{
    if (len < 0 || len > t->depth) return -1;
    int32_t node = 0;
    for (int i = 0; i < len && node >= 0; i++) node = gs_trie_child(t, node, prefix[i]);
    return node;
}

int64_t gs_trie_lookup(const gs_trie *t, const int32_t *path, int len)
{
    if (len != t->depth) return -1;
    int32_t node = gs_trie_walk(t, path, len);
    return node < 0 ? -1 : t->leaf_item[node - t->level_start[t->depth]];
}

int gs_trie_node_depth(const gs_trie *t, int32_t node)
{
    int d = 0;
    while (d < t->depth && node >= t->level_start[d + 1]) d++;
    return d;
}
