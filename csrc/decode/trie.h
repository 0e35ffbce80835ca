/* Compact prefix trie over fixed-length item identifiers (token-id paths), the
 * structure that constrains beam search so every decoded answer is a real item.
 *
 * Layout (CSR, breadth-first): node 0 is the root; the nodes of depth d are the
 * ids [level_start[d], level_start[d+1]), one per distinct length-d prefix, in
 * lexicographic order of their prefix. Because parents are numbered in order and
 * their children are numbered in the same order, the children of node n are the
 * contiguous ids [child_start[n], child_start[n+1]), sorted by token. Nodes of
 * depth `depth` are the leaves (one per distinct full path); leaf
 * level_start[depth] + i maps to item leaf_item[i].
 *
 * Consequence used by beam search: at equal depth, a smaller node id means a
 * lexicographically smaller prefix, so "smaller node id first" is a deterministic
 * tie-break that does not depend on item numbering or thread count. */
#ifndef GENSAR_TRIE_H
#define GENSAR_TRIE_H

#include <stdint.h>

/* What to do when several items have the same path (an identifier collision). */
enum {
    GS_TRIE_DUP_ERROR = 0, /* refuse to build; the message names two colliding items */
    GS_TRIE_DUP_FIRST = 1  /* keep the first item in input order, record the others */
};

/* Sorting algorithm of the build (both give identical tries; exposed for tests). */
enum {
    GS_TRIE_SORT_AUTO = 0,  /* radix for large inputs, merge sort for small ones */
    GS_TRIE_SORT_RADIX = 1, /* LSD radix sort, 16-bit digits, column by column */
    GS_TRIE_SORT_MERGE = 2  /* stable merge sort with a row comparator */
};

#define GS_TRIE_MAX_DEPTH 64
#define GS_TRIE_MAX_DUP_EXAMPLES 8

typedef struct gs_trie {
    int depth;           /* L: tokens per path (behaviour token included if present) */
    int64_t n_items;     /* rows given to the build */
    int64_t n_nodes;     /* all nodes, root included */
    int64_t n_leaves;    /* distinct full paths = items reachable by decoding */
    int32_t max_token;   /* largest token id in the trie */
    int64_t n_duplicates; /* rows whose path equals an earlier row's path (dropped) */
    int n_dup_examples;  /* pairs stored below, <= GS_TRIE_MAX_DUP_EXAMPLES */
    int64_t dup_examples[GS_TRIE_MAX_DUP_EXAMPLES][2]; /* (kept item, dropped item) */
    int64_t level_start[GS_TRIE_MAX_DEPTH + 2]; /* (depth+2) first node id of each depth */
    int32_t *token;       /* (n_nodes) token on the edge into the node; -1 at the root */
    int32_t *child_start; /* (n_nodes+1) children of n: [child_start[n], child_start[n+1]) */
    int64_t *leaf_item;   /* (n_leaves) item of leaf level_start[depth] + i */
} gs_trie;

/* Builds a trie from `n_rows` paths of length `depth`.
 *   table (n_table, depth) int32 token ids, row-major.
 *   rows  (n_rows) int64 indices into table, or NULL to take every row
 *         (then n_rows must equal n_table). Item index of a path = the table row.
 *   vocab_size > 0: every token must lie in [0, vocab_size); <= 0: only >= 0.
 * Paths are validated, sorted (stable), deduplicated per `dup_policy`.
 * Returns GS_OK and *out (free with gs_trie_free), or an error status. */
int gs_trie_build(const int32_t *table, int64_t n_table, int depth, const int64_t *rows,
                  int64_t n_rows, int32_t vocab_size, int dup_policy, int sort_algorithm,
                  gs_trie **out);
void gs_trie_free(gs_trie *t);

/* Children of `node`: count and first id (ids are contiguous, sorted by token). */
static inline int32_t gs_trie_num_children(const gs_trie *t, int32_t node)
{
    return t->child_start[node + 1] - t->child_start[node];
}
/* The child of `node` reached by `token`, or -1 (binary search). */
int32_t gs_trie_child(const gs_trie *t, int32_t node, int32_t token);
/* Node reached by `prefix` (len tokens, len <= depth), or -1 if it is not a prefix. */
int32_t gs_trie_walk(const gs_trie *t, const int32_t *prefix, int len);
/* Item of a complete path, or -1 if the path is not in the trie. */
int64_t gs_trie_lookup(const gs_trie *t, const int32_t *path, int len);
/* Depth of a node (0 for the root). */
int gs_trie_node_depth(const gs_trie *t, int32_t node);

#endif
