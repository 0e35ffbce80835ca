/* Trie-constrained beam search (see beam.h for the contract). */
#include "beam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"

/* trie children whose logits are fetched from the decoder in one call */
#define CHILD_BATCH 256

int gs_beam_check(int B, const gs_trie *const *tries, int vocab_size, int num_beams, int top_k)
{
    if (B < 1) return gs_fail(GS_EINVAL, "beam search needs at least one input, got %d", B);
    if (num_beams < 1) return gs_fail(GS_EINVAL, "num_beams must be >= 1, got %d", num_beams);
    if (top_k < 1) return gs_fail(GS_EINVAL, "top_k must be >= 1, got %d", top_k);
    if (top_k > num_beams)
        return gs_fail(GS_EINVAL,
                       "top_k (%d) > num_beams (%d): beam search returns at most num_beams "
                       "items; raise num_beams or lower top_k",
                       top_k, num_beams);
    if (vocab_size < 1) return gs_fail(GS_EINVAL, "decoder vocabulary size must be >= 1, got %d",
                                       vocab_size);
    int depth = tries[0]->depth;
    for (int b = 0; b < B; b++) {
        const gs_trie *t = tries[b];
        if (b > 0 && t == tries[b - 1]) continue; /* shared trie: checked already */
        if (t->depth != depth)
            return gs_fail(GS_EINVAL, "all tries of a batch must have the same depth, got %d and %d",
                           depth, t->depth);
        if (t->max_token >= vocab_size)
            return gs_fail(GS_EINVAL,
                           "the trie (input %d) contains token id %d but the decoder vocabulary "
                           "has %d tokens; identifiers must be token ids of this model",
                           b, (int)t->max_token, vocab_size);
        if (t->n_leaves < top_k)
            return gs_fail(GS_EINVAL,
                           "top_k (%d) exceeds the items reachable for input %d (%lld distinct "
                           "identifiers); lower top_k",
                           top_k, b, (long long)t->n_leaves);
    }
    return GS_OK;
}

int gs_beam_width(int B, const gs_trie *const *tries, int num_beams)
{
    int64_t most = 1;
    for (int b = 0; b < B; b++)
        if (tries[b]->n_leaves > most) most = tries[b]->n_leaves;
    return most < num_beams ? (int)most : num_beams;
}

/* A proposal: extend beam row `parent` (index within its input) by trie node `node`. */
typedef struct {
    double score;
    int32_t node;
    int32_t parent;
} proposal;

/* The strict total order of proposals: higher score, then smaller node id
 * (nodes are distinct, so no two proposals compare equal). */
static inline int better(const proposal *a, const proposal *b)
{
    return a->score > b->score || (a->score == b->score && a->node < b->node);
}

/* Bounded heap keeping the best `cap` proposals; heap[0] is the worst kept. */
static void heap_offer(proposal *heap, int *size, int cap, proposal p)
{
    int i;
    if (*size < cap) {
        i = (*size)++;
        while (i > 0) { /* sift up while p is worse than its parent */
            int up = (i - 1) / 2;
            if (!better(&heap[up], &p)) break;
            heap[i] = heap[up];
            i = up;
        }
        heap[i] = p;
        return;
    }
    if (!better(&p, &heap[0])) return;
    i = 0;
    for (;;) { /* sift down: move the worse child up */
        int l = 2 * i + 1, r = l + 1, w = i;
        const proposal *cur = &p;
        if (l < *size && better(cur, &heap[l])) w = l, cur = &heap[l];
        if (r < *size && better(cur, &heap[r])) w = r;
        if (w == i) break;
        heap[i] = heap[w];
        i = w;
    }
    heap[i] = p;
}

static int proposal_cmp(const void *pa, const void *pb)
{
    const proposal *a = pa, *b = pb;
    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

int gs_beam_search(const gs_decoder *dec, const gs_trie *const *tries, int top_k,
                   int32_t start_token, int64_t *out_items, float *out_scores)
{
    const int B = dec->n_inputs, K = dec->rows_per_input, V = dec->vocab_size;
    if (K < top_k)
        return gs_fail(GS_EINVAL, "internal: decoder has %d rows per input, fewer than top_k %d", K,
                       top_k);
    int status = gs_beam_check(B, tries, V, K, top_k);
    if (status) return status;
    if (start_token < 0 || start_token >= V)
        return gs_fail(GS_EINVAL, "decoder start token %d is outside the vocabulary [0, %d)",
                       (int)start_token, V);
    const int L = tries[0]->depth;
    const size_t rows = (size_t)B * K;

    int32_t *tokens = gs_alloc(rows * sizeof *tokens);
    int32_t *src = gs_alloc(rows * sizeof *src);
    int32_t *node = gs_alloc(rows * sizeof *node), *new_node = gs_alloc(rows * sizeof *node);
    /* with dec->norm_trie: each row's node there (same prefix), and the next step's */
    const gs_trie *nt = dec->renormalise ? dec->norm_trie : NULL;
    int32_t *nnode = gs_alloc(rows * sizeof *nnode), *new_nnode = gs_alloc(rows * sizeof *nnode);
    double *score = gs_alloc(rows * sizeof *score), *new_score = gs_alloc(rows * sizeof *score);
    double *lse = gs_alloc(rows * sizeof *lse); /* log-sum-exp of each row's logits */
    uint8_t *live = gs_alloc(rows);             /* rows holding a beam this step */
    proposal *heaps = gs_alloc(rows * sizeof *heaps);
    uint8_t *bad = gs_calloc((size_t)B);
    if (!tokens || !src || !node || !new_node || !score || !new_score || !lse || !live || !heaps ||
        !bad || !nnode || !new_nnode) {
        status = gs_fail(GS_ENOMEM, "out of memory for beam search (%d inputs x %d beams x %d vocab)",
                         B, K, V);
        goto done;
    }
    /* Step 0: every row holds the start token; only row 0 of each input is a live
     * beam (the root), the others are idle until there are enough proposals. */
    for (size_t r = 0; r < rows; r++) {
        tokens[r] = start_token;
        node[r] = r % (size_t)K == 0 ? 0 : -1;
        nnode[r] = 0;
        score[r] = 0.0;
    }

    for (int t = 0; t < L; t++) {
        for (size_t r = 0; r < rows; r++) live[r] = node[r] >= 0;
        /* renormalised scores need no full-vocabulary normaliser: the decoder may skip it */
        if ((status = dec->step(dec->ctx, tokens, live, dec->renormalise ? NULL : lse))) goto done;
        /* Each input's bookkeeping is independent and serial inside, so the
         * result does not depend on the thread count. */
#pragma omp parallel num_threads(gs_num_threads())
        {
            float child_logits[CHILD_BATCH];
#pragma omp for schedule(static)
            for (int b = 0; b < B; b++) {
                const gs_trie *tr = tries[b];
                proposal *heap = heaps + (size_t)b * K;
                int kept = 0;
                for (int j = 0; j < K; j++) {
                    size_t r = (size_t)b * K + j;
                    if (node[r] < 0) continue;
                    if (!dec->renormalise && !isfinite(lse[r])) {
                        bad[b] = 1;
                        break;
                    }
                    const int32_t end = tr->child_start[node[r] + 1];
                    double norm = lse[r];
                    if (dec->renormalise) { /* a first pass: log-sum-exp over the children only */
                        double mx = -INFINITY, sum = 0.0;
                        const gs_trie *ntr = nt ? nt : tr; /* whose children normalise */
                        const int32_t nn = nt ? nnode[r] : node[r], nend = ntr->child_start[nn + 1];
                        for (int32_t c0 = ntr->child_start[nn]; c0 < nend; c0 += CHILD_BATCH) {
                            int n = nend - c0 < CHILD_BATCH ? nend - c0 : CHILD_BATCH;
                            dec->logits(dec->ctx, r, n, ntr->token + c0, child_logits);
                            for (int i = 0; i < n; i++) {
                                double z = child_logits[i];
                                if (z > mx) {
                                    sum = sum * exp(mx - z) + 1.0;
                                    mx = z;
                                } else {
                                    sum += exp(z - mx);
                                }
                            }
                        }
                        norm = mx + log(sum);
                        if (!isfinite(norm)) {
                            bad[b] = 1;
                            break;
                        }
                    }
                    for (int32_t c0 = tr->child_start[node[r]]; c0 < end; c0 += CHILD_BATCH) {
                        int n = end - c0 < CHILD_BATCH ? end - c0 : CHILD_BATCH;
                        dec->logits(dec->ctx, r, n, tr->token + c0, child_logits);
                        for (int i = 0; i < n; i++) {
                            proposal p = {score[r] + ((double)child_logits[i] - norm), c0 + i, j};
                            heap_offer(heap, &kept, K, p);
                        }
                    }
                }
                qsort(heap, (size_t)kept, sizeof *heap, proposal_cmp);
                for (int j = 0; j < K; j++) {
                    size_t r = (size_t)b * K + j;
                    new_nnode[r] = -1;
                    if (j < kept && nt) { /* the chosen child's node in the normalising trie */
                        const int32_t p = nnode[(size_t)b * K + heap[j].parent], tok = tr->token[heap[j].node];
                        int32_t lo = nt->child_start[p], hi = nt->child_start[p + 1];
                        while (lo < hi) { /* children are sorted by token */
                            int32_t mid = lo + (hi - lo) / 2;
                            if (nt->token[mid] < tok) lo = mid + 1;
                            else hi = mid;
                        }
                        if (lo == nt->child_start[p + 1] || nt->token[lo] != tok) {
                            bad[b] = 2;
                            break;
                        }
                        new_nnode[r] = lo;
                    }
                    if (j < kept) {
                        new_node[r] = heap[j].node;
                        new_score[r] = heap[j].score;
                        src[r] = (int32_t)((size_t)b * K + heap[j].parent);
                        tokens[r] = tr->token[heap[j].node];
                    } else { /* idle row: any valid history and token will do */
                        new_node[r] = -1;
                        new_score[r] = -INFINITY;
                        src[r] = (int32_t)((size_t)b * K);
                        tokens[r] = start_token;
                    }
                }
            }
        } /* omp parallel */
        for (int b = 0; b < B; b++)
            if (bad[b] == 2) {
                status = gs_fail(GS_EINVAL, "input %d: a searched identifier path is not in the trie "
                                 "that normalises the scores (every candidate must be a catalogue item)", b);
                goto done;
            } else if (bad[b]) {
                status = gs_fail(GS_ERUNTIME,
                                 "the decoder produced non-finite logits (NaN or inf) for input %d "
                                 "at step %d; check the model weights",
                                 b, t);
                goto done;
            }
        int32_t *ti = node;
        node = new_node, new_node = ti;
        ti = nnode;
        nnode = new_nnode, new_nnode = ti;
        double *ts = score;
        score = new_score, new_score = ts;
        if (t + 1 < L && (status = dec->reorder(dec->ctx, src))) goto done;
    }

    /* Rows are sorted best first; gs_beam_check guaranteed >= top_k live leaves
     * (a level of <= K nodes is kept entirely, every node has a child). */
    for (int b = 0; b < B; b++) {
        const gs_trie *tr = tries[b];
        int64_t leaf0 = tr->level_start[L];
        for (int j = 0; j < top_k; j++) {
            size_t r = (size_t)b * K + j;
            if (node[r] < 0) {
                status = gs_fail(GS_ERUNTIME, "internal: input %d ended with fewer than %d beams", b,
                                 top_k);
                goto done;
            }
            out_items[(size_t)b * top_k + j] = tr->leaf_item[node[r] - leaf0];
            out_scores[(size_t)b * top_k + j] = (float)score[r];
        }
    }
    status = GS_OK;

done:
    gs_free(tokens);
    gs_free(src);
    gs_free(node);
    gs_free(new_node);
    gs_free(nnode);
    gs_free(new_nnode);
    gs_free(score);
    gs_free(new_score);
    gs_free(heaps);
    gs_free(bad);
    gs_free(lse);
    gs_free(live);
    return status;
}

int gs_beam_candidate_tries(const int32_t *table, int64_t n_table, int L,
                            const int64_t *candidates, int B, int n_cand, int32_t vocab_size,
                            int dup_policy, gs_trie **tries)
{
    for (int b = 0; b < B; b++) tries[b] = NULL;
    int64_t *compact = gs_alloc((size_t)B * n_cand * sizeof *compact);
    int64_t *count = gs_alloc((size_t)B * sizeof *count);
    int *status = gs_calloc((size_t)B * sizeof *status);
    int result = GS_OK;
    if (!compact || !count || !status) {
        result = gs_fail(GS_ENOMEM, "out of memory for %d candidate sets", B);
        goto done;
    }
    /* Drop the -1 padding; range errors are reported by the serial pass below. */
    for (int b = 0; b < B; b++) {
        int64_t n = 0;
        for (int i = 0; i < n_cand; i++) {
            int64_t c = candidates[(size_t)b * n_cand + i];
            if (c != -1) compact[(size_t)b * n_cand + n++] = c;
        }
        if (n == 0) {
            result = gs_fail(GS_EINVAL, "candidate row %d has no candidate (all entries are -1)", b);
            goto done;
        }
        count[b] = n;
    }
    /* Tiny independent builds, in parallel. Error messages are per thread, so a
     * failed build is repeated below on this thread to report its message. */
#pragma omp parallel for schedule(static) num_threads(gs_num_threads())
    for (int b = 0; b < B; b++)
        status[b] = gs_trie_build(table, n_table, L, compact + (size_t)b * n_cand, count[b],
                                  vocab_size, dup_policy, GS_TRIE_SORT_AUTO, &tries[b]);
    for (int b = 0; b < B; b++) {
        if (status[b] == GS_OK) continue;
        gs_trie *again = NULL;
        result = gs_trie_build(table, n_table, L, compact + (size_t)b * n_cand, count[b],
                               vocab_size, dup_policy, GS_TRIE_SORT_AUTO, &again);
        gs_trie_free(again);
        if (result == GS_OK) result = status[b]; /* cannot happen: builds are deterministic */
        char msg[512];
        strncpy(msg, gs_last_error(), sizeof msg - 1);
        msg[sizeof msg - 1] = 0;
        gs_fail(result, "candidate row %d: %s", b, msg);
        goto done;
    }

done:
    if (result != GS_OK)
        for (int b = 0; b < B; b++) {
            gs_trie_free(tries[b]);
            tries[b] = NULL;
        }
    gs_free(compact);
    gs_free(count);
    gs_free(status);
    return result;
}
