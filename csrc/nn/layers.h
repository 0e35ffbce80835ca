/* Layer kernels shared by the transformer models of the core (T5 encoder-decoder,
 * SASRec, the BERT-style sentence encoder): token embedding, multi-head attention
 * with masks and an additive position bias, T5 relative position buckets,
 * counter-based dropout and token cross-entropy.
 *
 * Conventions (as csrc/tensor/ops.h): backward functions ACCUMULATE into
 * parameter gradients and OVERWRITE input gradients. Every kernel is
 * deterministic for a fixed thread count (static schedules, fixed-order sums),
 * and none allocates memory except where noted. Token ids are int32. */
#ifndef GENSAR_LAYERS_H
#define GENSAR_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- embedding */

/* Returns GS_OK if every ids[i] is in [0, V), else GS_EINVAL with a message
 * naming `what` (e.g. "input_ids"), the position and the value. */
int gs_check_ids(size_t N, const int32_t *ids, int V, const char *what);

// ids (N) in [0,V), table (V,C) -> out (N,C): out[n] = table[ids[n]]
void gs_embedding_forward(size_t N, int C, const int32_t *ids, const float *table, float *out);
// dout (N,C) -> dtable (V,C) ACCUMULATED: dtable[ids[n]] += dout[n], rows in order n = 0..N-1
// (columns are split among threads, so the sum order never depends on the thread count)
void gs_embedding_backward(size_t N, int C, const int32_t *ids, const float *dout, float *dtable);

/* Bags of K tokens per position (an item's behaviour and identifier tokens read as one
 * encoder position): ids (N, K), slot 0 a token in [0,V), slots 1..K-1 a token or -1
 * (empty). out[n] = sum of table[ids[n, k]] over the non-empty slots, summed in slot order.
 * K == 1 is gs_embedding_forward. */
int gs_check_bag_ids(size_t N, int K, const int32_t *ids, int V, const char *what);
void gs_embedding_bag_forward(size_t N, int K, int C, const int32_t *ids, const float *table,
                              float *out);
// dtable[ids[n, k]] += dout[n] for every non-empty slot, in order (n, k): deterministic
void gs_embedding_bag_backward(size_t N, int K, int C, const int32_t *ids, const float *dout,
                               float *dtable);

/* ------------------------------------------------------------------ dropout */

/* Counter-based dropout: element i of the stream (seed, stream) is kept iff a
 * 16-bit uniform hashed from (seed, stream, i) is >= p * 2^16; kept elements are scaled by 1/(1-p). The
 * mask is never stored: the backward pass is the SAME call on the gradient
 * (same seed, stream, length), and two runs with one seed drop the same
 * elements whatever the thread count. p <= 0 copies; p >= 1 is refused by the
 * callers' validation (gs_dropout treats it as p = 0.999999). */
// x (n) -> y (n); y may alias x. Backward: gs_dropout(n, p, seed, stream, dy, dx).
void gs_dropout(size_t n, float p, uint64_t seed, uint64_t stream, const float *x, float *y);
/* The multiplier (0 or 1/(1-p)) of element i of a stream, for kernels that
 * apply dropout inline (attention probabilities). */
float gs_dropout_factor(float p, uint64_t seed, uint64_t stream, uint64_t i);
// y (n) = x + dropout(r) with gs_dropout's masks for (seed, stream), in one pass; y may alias x.
void gs_dropout_add(size_t n, float p, uint64_t seed, uint64_t stream, const float *x, const float *r, float *y);
// y (n) = dropout(relu(x)) with gs_dropout's masks for (seed, stream), in one pass; y may alias x.
void gs_relu_dropout_forward(size_t n, float p, uint64_t seed, uint64_t stream, const float *x, float *y);
// its backward: dx (n) = relu'(x) * dropout(dy); x is the pre-activation; dx may alias dy.
void gs_relu_dropout_backward(size_t n, float p, uint64_t seed, uint64_t stream, const float *x,
                              const float *dy, float *dx);

/* ---------------------------------------------------------------- attention */

/* Multi-head scaled dot-product attention, one (batch, head) pair at a time,
 * (batch, head) pairs spread over threads:
 *
 *   S[b,h,i,j] = scale * q[b,i,h,:] . k[b,j,h,:] + pos_bias[h,i,j]     (bias optional)
 *   S = -inf where key_mask[b,j] == 0, or (causal) where j > i + (Tk - Tq)
 *   P = softmax_j(S)           (a row with every key masked gets P = 0, output 0)
 *   out[b,i,h,:] = sum_j dropout(P)[b,h,i,j] * v[b,j,h,:]
 *
 * q is (B,Tq,H*dh) and k, v are (B,Tk,H*dh) with head h in columns
 * [h*dh, (h+1)*dh) of each row; rows may be wider than H*dh (row strides ldq,
 * ldk, ldv, ldo in floats) so q, k, v can be column blocks of one fused QKV
 * projection output (N, 3*H*dh). T5 uses scale = 1 (folded into its init); BERT
 * / SASRec use 1/sqrt(dh). The causal offset Tk - Tq makes query i of a
 * cached decoding step (Tq = 1) see every key up to the newest. */
typedef struct {
    int B, H, Tq, Tk, dh;
    int ldq, ldk, ldv, ldo;   /* row strides in floats (>= H*dh) */
    float scale;              /* multiplies q.k */
    int causal;               /* 1: mask keys j > i + (Tk - Tq) */
    const int32_t *key_mask;  /* (B,Tk), 0 = padding key; NULL = every key valid */
    const float *pos_bias;    /* (H,Tq,Tk) added to every batch row; NULL = none */
    float dropout_p;          /* dropout on the probabilities; 0 = off */
    uint64_t dropout_seed, dropout_stream; /* stream index = ((b*H+h)*Tq+i)*Tk+j */
    /* Optional, for cached decoding (0 keeps the plain layout above): */
    size_t kv_batch_stride;   /* floats between consecutive batches of k and of v; 0 = Tk*ldk
                                 for k and Tk*ldv for v (a KV cache has max_steps*ldk) */
    int kv_group;             /* query batch b reads k, v and key_mask of batch b / kv_group
                                 (beams sharing one encoder output); 0 or 1 = batch b */
} gs_attention_args;

// q (B,Tq,H*dh), k (B,Tk,H*dh), v (B,Tk,H*dh) -> probs (B,H,Tq,Tk) softmax before dropout
// (kept for the backward pass), out (B,Tq,H*dh) [row stride ldo]
// Returns GS_OK, or GS_ENOMEM if its per-thread scratch (a few T x T tiles) cannot be allocated.
int gs_attention_forward(const gs_attention_args *a, const float *q, const float *k,
                         const float *v, float *probs, float *out);
// dout (B,Tq,H*dh) [row stride ldo] -> dq (B,Tq,H*dh) [ldq], dk, dv (B,Tk,H*dh) [ldk, ldv]
// OVERWRITTEN (only the H*dh head columns of each row are touched);
// dscores (B,H,Tq,Tk) scratch, receives dL/dS; dpos_bias (H,Tq,Tk) ACCUMULATED (sum over b in
// order b = 0..B-1) or NULL. Training layouts only: kv_batch_stride must be 0, kv_group <= 1.
// Both passes are serial per (batch, head) and spread (batch, head) pairs over threads.
// Returns GS_OK, GS_ENOMEM (scratch) or GS_EINVAL (kv_batch_stride / kv_group set).
int gs_attention_backward(const gs_attention_args *a, const float *q, const float *k,
                          const float *v, const float *probs, const float *dout, float *dscores,
                          float *dq, float *dk, float *dv, float *dpos_bias);

/* ------------------------------------------------- T5 relative position bias */

/* T5's bucket of relative_position = key_pos - query_pos, as HuggingFace's
 * T5Attention._relative_position_bucket: bidirectional (encoder) splits the
 * buckets between negative and positive offsets; unidirectional (decoder) maps
 * every future offset to bucket 0. Half of the (per-direction) buckets are
 * exact offsets, the rest grow logarithmically up to max_distance. */
int gs_t5_relative_bucket(int relative_position, int bidirectional, int num_buckets,
                          int max_distance);

// table (num_buckets,H) [HF relative_attention_bias.weight] -> bias (H,Tq,Tk):
// bias[h,i,j] = table[bucket(j - (q0 + i)), h], queries at positions q0..q0+Tq-1, keys 0..Tk-1
void gs_relative_bias_forward(int H, int Tq, int Tk, int q0, int bidirectional, int num_buckets,
                              int max_distance, const float *table, float *bias);
// dbias (H,Tq,Tk) -> dtable (num_buckets,H) ACCUMULATED
void gs_relative_bias_backward(int H, int Tq, int Tk, int q0, int bidirectional, int num_buckets,
                               int max_distance, const float *dbias, float *dtable);

/* ------------------------------------------------------------ cross-entropy */

/* Token cross-entropy with an ignore index (HF: -100).
 * logits (N,V), targets (N) in [0,V) or == ignore_index -> row_loss (N) (0 for ignored rows),
 * *loss_sum = sum of row losses (double, summed in row order), *count = rows not ignored.
 * GS_EINVAL if a target is neither ignore_index nor in [0,V). Mean loss = loss_sum / count. */
int gs_cross_entropy_forward(size_t N, int V, const float *logits, const int32_t *targets,
                             int ignore_index, float *row_loss, double *loss_sum, size_t *count);
// -> dlogits (N,V) OVERWRITTEN = scale * (softmax(logits) - onehot(target)), zero rows for ignored
// targets; dlogits may alias logits. For the mean loss, scale = 1 / count.
void gs_cross_entropy_backward(size_t N, int V, const float *logits, const int32_t *targets,
                               int ignore_index, float scale, float *dlogits);
/* Both at once, the gradient scaled by 1 / count (the mean loss): logits (N,V) ->
 * row_loss (N), loss_sum, count and dlogits (N,V), which may be logits itself
 * (in place). One pass fewer over the logits than forward + backward. */
int gs_cross_entropy_forward_backward(size_t N, int V, const float *logits, const int32_t *targets,
                                      int ignore_index, float *row_loss, double *loss_sum, size_t *count,
                                      float *dlogits);

#endif
