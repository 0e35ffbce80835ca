/* Plain C entry point of the beam-search tests: beam search on the test decoder
 * (testdec.h), over one shared trie or per-input candidate sets. Called from
 * tests/_testdec.py through ctypes; everything else it uses (gs_beam_*, tries,
 * gs_fail, allocation) comes from the gensar._core extension itself, so the
 * tests exercise the shipped beam search, not a second copy of it. */
#include <stdint.h>
#include <stdlib.h>

#include "common.h"
#include "decode/beam.h"
#include "testdec.h"

/* shared: a trie built by _core (Trie._handle), or NULL for candidate sets:
 * table (n_table, L) int32, cand (B, n_cand) int64, -1 = padding.
 * A (D,D), E (V,D), O (D,V), U (B,V). Returns a GS_* status; gs_last_error() has
 * the message. */
int gs_testdec_search(const gs_trie *shared, const int32_t *table, int64_t n_table, int L,
                      const int64_t *cand, int n_cand, int on_dup, int B, int V, int D,
                      const float *A, const float *E, const float *O, const float *U,
                      int num_beams, int top_k, int64_t *items, float *scores)
{
    const gs_trie **tries = calloc((size_t)B, sizeof *tries);
    gs_trie **owned = shared ? NULL : calloc((size_t)B, sizeof *owned);
    int status = GS_OK;
    if (!tries || (!shared && !owned)) {
        status = gs_fail(GS_ENOMEM, "out of memory");
        goto done;
    }
    if (shared) {
        for (int b = 0; b < B; b++) tries[b] = shared;
    } else {
        status = gs_beam_candidate_tries(table, n_table, L, cand, B, n_cand, V, on_dup, owned);
        if (status) goto done;
        for (int b = 0; b < B; b++) tries[b] = owned[b];
    }
    status = gs_beam_check(B, tries, V, num_beams, top_k);
    if (status) goto done;
    gs_testdec *td = NULL;
    status = gs_testdec_new(V, D, B, gs_beam_width(B, tries, num_beams), A, E, O, U, &td);
    if (!status) {
        gs_decoder dec = gs_testdec_decoder(td);
        status = gs_beam_search(&dec, tries, top_k, 0, items, scores);
    }
    gs_testdec_free(td);
done:
    if (owned)
        for (int b = 0; b < B; b++) gs_trie_free(owned[b]);
    free(owned);
    free(tries);
    return status;
}
