/* A tiny recurrent decoder behind the gs_decoder interface, independent of the
 * transformer, so beam search can be tested against a NumPy brute force.
 *
 * Per row r of input b = r / rows_per_input, with state h_r (D) starting at 0:
 *     h_r      <- tanh(E[token] + h_r @ A)        E (V, D), A (D, D)
 *     logits_r  = h_r @ O + U[b]                   O (D, V), U (B, V)
 * Rows the search marks idle are skipped (state untouched, logits set to NaN), so
 * a search that read an idle row's logits would fail the tests.
 * The state depends on the whole token history, so a wrong reorder changes the
 * scores (a plain bigram model would hide such a bug). The weights are borrowed,
 * not copied: they must outlive the decoder. */
#ifndef GENSAR_TESTDEC_H
#define GENSAR_TESTDEC_H

#include "decode/beam.h"

typedef struct gs_testdec gs_testdec;

int gs_testdec_new(int V, int D, int B, int rows_per_input, const float *A, const float *E,
                   const float *O, const float *U, gs_testdec **out);
void gs_testdec_free(gs_testdec *d);
/* The gs_decoder view of d (ctx = d). */
gs_decoder gs_testdec_decoder(gs_testdec *d);

#endif
