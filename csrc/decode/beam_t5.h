/* Trie-constrained beam search on the T5 encoder-decoder (csrc/nn/t5.h): the
 * gs_decoder adapter over a T5 decoding cache (step = gs_t5_decode_step, reorder
 * = gs_t5_cache_reorder) and the one-call search used by the binding. */
#ifndef GENSAR_BEAM_T5_H
#define GENSAR_BEAM_T5_H

#include <stdint.h>

#include "../nn/t5.h"
#include "beam.h"

/* Encodes B inputs once, then decodes under tries[b] (B pointers, may repeat).
 *   input_ids (B, T_in, K_in) int32 (K_in token slots per position, see gs_t5_check_batch),
 *   attention_mask (B, T_in) int32
 *   out_items (B, top_k) int64, out_scores (B, top_k) float32 (see beam.h)
 * renormalise, norm_trie: gs_decoder's (scores over each node's children, in norm_trie if
 * not NULL, not over the vocabulary).
 * The cache holds min(num_beams, most paths in a trie) rows per input. The model
 * is only read (it may be shared by concurrent searches). */
int gs_t5_beam_search(const gs_t5 *m, const int32_t *input_ids, const int32_t *attention_mask,
                      int B, int T_in, int K_in, const gs_trie *const *tries, int num_beams, int top_k,
                      int32_t decoder_start_token, int renormalise, const gs_trie *norm_trie,
                      int64_t *out_items, float *out_scores);

#endif
