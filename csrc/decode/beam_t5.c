/* T5 adapter of the beam search (see beam_t5.h). */
#include "beam_t5.h"

#include "../common.h"

typedef struct {
    const gs_t5 *model;
    gs_t5_cache *cache;
} t5_decoder;

// tokens (rows) -> log-normaliser of each live row's next-token distribution
static int t5_step(void *ctx, const int32_t *tokens, const uint8_t *live, double *lse)
{
    t5_decoder *d = ctx;
    return gs_t5_decode_step_lse(d->model, d->cache, tokens, live, lse);
}

static void t5_logits(void *ctx, size_t row, int n, const int32_t *token_ids, float *out)
{
    t5_decoder *d = ctx;
    gs_t5_decode_logits(d->model, d->cache, row, n, token_ids, out);
}

static int t5_reorder(void *ctx, const int32_t *src_rows)
{
    t5_decoder *d = ctx;
    return gs_t5_cache_reorder(d->cache, src_rows);
}

int gs_t5_beam_search(const gs_t5 *m, const int32_t *input_ids, const int32_t *attention_mask,
                      int B, int T_in, int K_in, const gs_trie *const *tries, int num_beams, int top_k,
                      int32_t decoder_start_token, int renormalise, const gs_trie *norm_trie,
                      int64_t *out_items, float *out_scores)
{
    const int V = gs_t5_vocab_size(m);
    int status = gs_beam_check(B, tries, V, num_beams, top_k);
    if (status) return status;
    if (norm_trie && norm_trie->depth != tries[0]->depth)
        return gs_fail(GS_EINVAL, "the normalising trie has paths of %d tokens, the searched ones %d",
                       norm_trie->depth, tries[0]->depth);
    const int K = gs_beam_width(B, tries, num_beams);
    t5_decoder d = {m, NULL};
    status = gs_t5_cache_new_in_call(m, input_ids, attention_mask, B, T_in, K_in, K, tries[0]->depth,
                                     &d.cache);
    if (status) return status;
    gs_decoder dec = {&d, V, B, K, t5_step, t5_logits, t5_reorder, renormalise, norm_trie};
    status = gs_beam_search(&dec, tries, top_k, decoder_start_token, out_items, out_scores);
    gs_t5_cache_free(d.cache);
    return status;
}
