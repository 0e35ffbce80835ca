/* Trie-constrained beam search over any step-wise decoder.
 *
 * The decoder is seen through gs_decoder: a batch of B inputs, each owning
 * `rows_per_input` consecutive decoder rows (row = b * rows_per_input + j), one
 * token in and one row of logits out per row and step, plus a reorder that copies
 * a row's history (KV cache, state) onto another row of the same input. The T5
 * adapter (beam_t5.c) and the test decoder (tests/csrc/testdec.c) implement it.
 *
 * Scores. A beam's score is the sum over its tokens of log p(token), with p the
 * softmax over the FULL vocabulary (what a masked log-softmax gives: the trie
 * restricts which tokens may be chosen, not how probability is normalised). At
 * each step every live beam proposes each of its trie children; the best
 * num_beams proposals survive. All paths have the trie's depth L, so all beams
 * finish together after L steps; no length penalty, no end-of-sequence token.
 *
 * Ties. Proposals are ordered by (score descending, node id ascending); node ids
 * of equal depth follow the lexicographic order of their token prefix (see
 * trie.h), so equal scores rank the lexicographically smaller identifier first.
 * This order is total, so results do not depend on thread count or batching.
 *
 * With num_beams >= the number of items in a trie, nothing is ever pruned and the
 * result is the exact ranking of every item by its teacher-forced log-probability. */
#ifndef GENSAR_BEAM_H
#define GENSAR_BEAM_H

#include <stddef.h>
#include <stdint.h>

#include "trie.h"

typedef struct gs_decoder {
    void *ctx;
    int vocab_size;     /* V: logits per row */
    int n_inputs;       /* B */
    int rows_per_input; /* beam rows per input (the effective beam width) */
    /* tokens (B * rows_per_input) int32 -> lse (B * rows_per_input) double: for
     * each live row, log sum_v exp(logit_v) of its next-token logits over the
     * whole vocabulary (the normaliser; the decoder may fuse it with its output
     * layer and never store the logits).
     * lse is NULL when the search renormalises (then only the decoder state is
     * needed, for the logits calls below).
     * live (B * rows_per_input) uint8: only rows with live[r] = 1 need an answer.
     * A decoder may skip the others (leave their lse and the history of this
     * position stale): an idle row is always overwritten by reorder from a live
     * row before it becomes live. Early steps have few live beams (1 at the root,
     * 1 after a single behaviour token), so skipping saves much of the work. */
    int (*step)(void *ctx, const int32_t *tokens, const uint8_t *live, double *lse);
    /* After a step: out[i] = logit of token_ids[i] (n of them) for live row
     * `row`. Called concurrently from several threads for different rows. */
    void (*logits)(void *ctx, size_t row, int n, const int32_t *token_ids, float *out);
    /* afterwards row r holds the history of old row src_rows[r] (same input) */
    int (*reorder)(void *ctx, const int32_t *src_rows);
    /* 0 (default): log p over the full vocabulary (as above); 1: renormalised over
     * the node's trie children, log p(c) = logit_c - log sum over children: the
     * scores of a model trained with the constrained softmax (GenSARConfig). */
    int renormalise;
    /* With renormalise: NULL normalises over the children in the search's own trie;
     * a trie (the whole catalogue's) normalises over the children of the same prefix
     * there instead, so that a search restricted to a few candidates ranks them by the
     * model's catalogue-normalised probabilities. Every path searched must be in it. */
    const gs_trie *norm_trie;
} gs_decoder;

/* Validates a search before any decoder work: num_beams >= 1, 1 <= top_k <=
 * num_beams, every trie's tokens < vocab_size, top_k <= items reachable in each
 * trie, equal depths. tries: (B) pointers (may repeat one shared trie). */
int gs_beam_check(int B, const gs_trie *const *tries, int vocab_size, int num_beams, int top_k);

/* Beam rows per input actually needed: min(num_beams, most paths in any trie).
 * Wider beams could never be filled, so the decoder need not compute them; the
 * results are identical. */
int gs_beam_width(int B, const gs_trie *const *tries, int num_beams);

/* Runs the search. dec->n_inputs == B and dec->rows_per_input == the width K the
 * decoder was built with (>= top_k, normally gs_beam_width()); the decoder must be
 * fresh (no step taken). The first step feeds `start_token` on every row.
 *   out_items  (B, top_k) int64   item indices (trie leaf -> item), best first
 *   out_scores (B, top_k) float32 summed log-probabilities (natural log)
 * Parallel over the batch for the beam bookkeeping; the decoder step is called
 * once per token position for the whole batch (its own parallelism inside). */
int gs_beam_search(const gs_decoder *dec, const gs_trie *const *tries, int top_k,
                   int32_t start_token, int64_t *out_items, float *out_scores);

/* Sampled-protocol helper: builds one small trie per input from its candidate
 * items. table (n_table, L) int32 identifier paths of the whole catalogue;
 * candidates (B, n_cand) int64 item indices into table, -1 = padding (ragged
 * sets). Each row needs one real candidate. dup_policy as in gs_trie_build (a
 * candidate listed twice counts as a duplicate path). On success tries[b] are
 * owned by the caller (free each with gs_trie_free). */
int gs_beam_candidate_tries(const int32_t *table, int64_t n_table, int L,
                            const int64_t *candidates, int B, int n_cand, int32_t vocab_size,
                            int dup_policy, gs_trie **tries);

#endif
