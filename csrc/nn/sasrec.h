/* SASRec-style sequential recommender (Kang & McAuley 2018), trained in C with full
 * softmax cross-entropy over the catalogue at every position.
 *
 * Input: B item sequences, each LEFT-padded to T = max_len slots; slot value 0 is padding,
 * item i of the catalogue (0-based) is written i + 1. Slot t has the learned position
 * embedding P[t] (so the newest item always sits at slot T-1).
 *
 *   x = Dropout(E[s] + P[t])                                           (B,T,d)
 *   per block (pre-LayerNorm, as the original SASRec):
 *     x = x + Dropout(W_o Attn_causal(LN1(x)))      heads, key padding mask, prob. dropout
 *     x = x + Dropout(W_2 Dropout(ReLU(W_1 LN2(x))))                    inner width I
 *   h = LN_f(x);  logits = h @ E[1:]^T  (output layer tied to the item table)  (B,T,n_items)
 *   loss = mean over the non-ignored slots of cross-entropy(logits, next item)
 *
 * Parameters, gradients and AdamW moments are four buffers of n_params floats with one
 * layout (gs_sasrec_tensor_spec). Dropout is counter-based (layers.h): a step with the
 * same seed drops the same units whatever the thread count. */
#ifndef GENSAR_SASREC_H
#define GENSAR_SASREC_H

#include <stddef.h>
#include <stdint.h>

#include "optim.h"

typedef struct {
    int n_items;   /* catalogue size; the item table has n_items + 1 rows (row 0 = padding) */
    int max_len;   /* T: slots per sequence */
    int hidden;    /* d */
    int layers;
    int heads;     /* d % heads == 0 */
    int inner;     /* I: feed-forward width (SASRec: d) */
    float dropout; /* in [0, 1): embeddings, attention probabilities, block outputs */
} gs_sasrec_config;

typedef struct {
    float *ln1_g, *ln1_b;  /* (d) */
    float *qkv_w, *qkv_b;  /* (3d,d), (3d) */
    float *o_w, *o_b;      /* (d,d), (d) */
    float *ln2_g, *ln2_b;  /* (d) */
    float *w1, *b1;        /* (I,d), (I) */
    float *w2, *b2;        /* (d,I), (d) */
} gs_sasrec_block;

typedef struct {
    char name[48];
    size_t offset;
    int rows, cols;  /* cols == 1 for vectors */
    int decay;       /* 1 for weight matrices (AdamW decay), 0 for embeddings, norms, biases */
} gs_sasrec_tensor;

typedef struct {
    gs_sasrec_config cfg;
    size_t n_params;
    float *params, *grads, *m, *v;  /* n_params each */
    unsigned char *decay_mask;      /* n_params */
    long step;                      /* AdamW steps taken */
    float *item_emb, *pos_emb, *lnf_g, *lnf_b;  /* (n_items+1,d), (T,d), (d), (d) */
    gs_sasrec_block *block;
} gs_sasrec;

int gs_sasrec_check_config(const gs_sasrec_config *cfg);
int gs_sasrec_num_tensors(const gs_sasrec_config *cfg);
int gs_sasrec_tensor_spec(const gs_sasrec_config *cfg, int i, gs_sasrec_tensor *spec);

/* Allocates a model; parameters, gradients and moments zeroed (the caller initialises). */
int gs_sasrec_create(const gs_sasrec_config *cfg, gs_sasrec **out);
void gs_sasrec_free(gs_sasrec *m);

/* Forward + backward on one batch; grads are OVERWRITTEN with d(mean loss)/d(params).
 *   seqs (B,T) int32 in [0, n_items] (0 = padding), targets (B,T) int32 in [0, n_items) or
 *   -100 (ignored: padding slots, or slots whose next item is unknown)
 *   train: 1 applies dropout with (seed) — 0 is the deterministic evaluation forward
 *   n_negatives 0: the loss is the full softmax over every item (cost slots x n_items);
 *   n_negatives K > 0: a sampled softmax over each slot's target and the K items of
 *   negatives (int32 in [0, n_items), shared by every slot of the batch, repeats allowed;
 *   a negative equal to a slot's own target is left out of that slot's softmax), cost
 *   slots x K: what makes catalogues of 10^5 items affordable. log_q (n_items) or NULL: the
 *   log of each item's sampling probability, subtracted from its logit in the sampled
 *   softmax (the correction for negatives drawn by popularity; constant, so needless, for
 *   uniform ones).
 *   -> *loss (mean over counted slots), *count (counted slots; 0 gives loss 0, grads 0) */
int gs_sasrec_forward_backward(gs_sasrec *m, int B, const int32_t *seqs, const int32_t *targets,
                               int n_negatives, const int32_t *negatives, const float *log_q, int train,
                               uint64_t seed, double *loss, size_t *count);

/* One AdamW update from the current grads (after clipping them to max_grad_norm if > 0).
 * Returns the gradient norm before clipping in *grad_norm. */
int gs_sasrec_adamw(gs_sasrec *m, const gs_adamw_config *cfg, double max_grad_norm,
                    double *grad_norm);

/* Evaluation forward (no dropout): scores of every item after the LAST slot.
 *   seqs (B,T) -> scores (B, n_items) = h_{T-1} @ E[1:]^T; and, if hidden is not NULL,
 *   hidden (B,d) = h_{T-1}. */
int gs_sasrec_score(const gs_sasrec *m, int B, const int32_t *seqs, float *scores, float *hidden);

#endif
