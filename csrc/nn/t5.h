/* T5-style encoder-decoder (the generative backbone of GenSAR), matching
 * HuggingFace's T5ForConditionalGeneration numerically:
 *   - pre-norm blocks with T5 RMSNorm (no mean, no bias), no biases anywhere;
 *   - bucketed relative position bias, one table (num_buckets, H) per stack owned by
 *     its first block (bidirectional in the encoder, unidirectional in the decoder);
 *   - attention WITHOUT 1/sqrt(d_kv) scaling (T5 folds it into the init);
 *   - feed-forward "relu" (wi, wo) or "gated-gelu" (gelu_tanh(wi_0 x) * wi_1 x, wo);
 *   - final RMSNorm per stack; LM head tied to the shared embedding or untied
 *     (lm_head.weight); decoder output scaled by d_model^-0.5 when
 *     scale_decoder_outputs (HF < 5: exactly when tied);
 *   - dropout at HF's places (embeddings, attention probabilities, sublayer outputs,
 *     feed-forward hidden, after the final norms), counter-based (layers.h).
 *
 * Parameters, gradients and the AdamW moments are each ONE contiguous float32
 * buffer of gs_t5_num_params() floats with the same layout; gs_t5_tensor_at()
 * lists every tensor with its HF name, offset and shape. Activations live in a
 * workspace owned by the model, grown to the largest batch seen (so a model is
 * not safe to use from two threads at once for training/logits; decoding caches
 * own their memory and may run concurrently on a const model).
 *
 * Batches: input_ids, attention_mask (B,T_in) int32 (mask 0/1, each row needs a
 * 1); decoder_input_ids (B,T_dec) int32; labels (B,T_dec) int32 in [0,V) or -100
 * (ignored). The loss is the mean token cross-entropy over non-ignored labels. */
#ifndef GENSAR_T5_H
#define GENSAR_T5_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int vocab_size, d_model, d_kv, d_ff, num_layers, num_decoder_layers, num_heads;
    int relative_attention_num_buckets, relative_attention_max_distance;
    int gated_gelu;          /* 0: feed_forward_proj "relu"; 1: "gated-gelu" */
    int tie_word_embeddings; /* 1: lm head = shared.weight; 0: its own lm_head.weight */
    int scale_decoder_outputs; /* 1: decoder output * d_model^-0.5 before the head (T5 when
                                  tied; transformers >= 5 names this flag separately) */
    float layer_norm_epsilon;
    float dropout_rate;      /* used by training steps only */
} gs_t5_config;

typedef struct {
    char name[96];   /* HF name, e.g. "decoder.block.0.layer.1.EncDecAttention.k.weight" */
    size_t offset;   /* in floats, into the params / grads / m / v buffers */
    int ndim;        /* 1 or 2 */
    int shape[2];    /* HF shape; Linear weights are (out_features, in_features) */
    int decay;       /* 1 if AdamW weight decay applies (not norms, not position bias tables) */
} gs_t5_tensor;

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float max_grad_norm;   /* >= 0; 0: no clipping (negative or NaN: GS_EINVAL) */
    uint64_t dropout_seed; /* with the step number, fixes every dropout mask */
} gs_t5_train_config;

/* Name of the PyCapsule in which the Python binding (csrc/python/py_t5.c) holds a gs_t5*;
 * Seq2Seq._model is that capsule: PyCapsule_GetPointer(obj, GS_T5_CAPSULE). */
#define GS_T5_CAPSULE "gensar._core.t5"

typedef struct gs_t5 gs_t5;              /* a model */
typedef struct gs_t5_cache gs_t5_cache;  /* decoding state of `rows` decoder rows */

/* Validates cfg and allocates a model with ZERO parameters (Python initialises
 * them through the parameter views, as HF's _init_weights). */
int gs_t5_new(const gs_t5_config *cfg, gs_t5 **out);
void gs_t5_free(gs_t5 *m);
const gs_t5_config *gs_t5_get_config(const gs_t5 *m);

size_t gs_t5_num_params(const gs_t5 *m);
float *gs_t5_params(gs_t5 *m);
float *gs_t5_grads(gs_t5 *m);
float *gs_t5_adam_m(gs_t5 *m);
float *gs_t5_adam_v(gs_t5 *m);
int gs_t5_num_tensors(const gs_t5 *m);
const gs_t5_tensor *gs_t5_tensor_at(const gs_t5 *m, int i);
/* AdamW steps taken so far (bias correction uses step + 1 next). */
long gs_t5_step(const gs_t5 *m);
void gs_t5_set_step(gs_t5 *m, long step);
/* Bytes of the activation workspace currently allocated. */
size_t gs_t5_workspace_bytes(const gs_t5 *m);

/* Encoder inputs: input_ids (B, T_in, K_in), K_in token slots per position, whose embeddings
 * are summed (gs_embedding_bag_forward: slot 0 a token, the others a token or -1 = empty).
 * K_in = 1 is a plain (B, T_in) token sequence. An item bag (its behaviour and identifier
 * tokens) lets a history item take one encoder position instead of L + 1.
 *
 * Checks a batch (shapes given as ints, values scanned): ids in [0,V) (-1 in bag slots > 0),
 * masks 0/1 with a 1 per row, labels in [0,V) or -100 with at least one target. labels /
 * dec_ids may be NULL. */
int gs_t5_check_batch(const gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                      const int32_t *attention_mask, const int32_t *decoder_input_ids,
                      const int32_t *labels);

/* Forward (dropout off) -> logits (B,T_dec,V). */
int gs_t5_logits(gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                 const int32_t *attention_mask, const int32_t *decoder_input_ids, float *logits);

/* Forward + backward: grads OVERWRITTEN with d(mean token loss)/d(params); *loss = that loss.
 * dropout: 0 = off (gradient checks), 1 = config dropout_rate with dropout_seed.
 * allowed (B,T_dec,V) uint8 or NULL: each position's softmax covers only the tokens marked 1
 * there (the trie-constrained loss: an identifier code against the codes valid after its
 * prefix, as constrained beam search scores it); every counted label must be allowed. */
int gs_t5_forward_backward(gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                           const int32_t *attention_mask, const int32_t *decoder_input_ids,
                           const int32_t *labels, const uint8_t *allowed, int dropout,
                           uint64_t dropout_seed, float *loss);

/* One training step: forward + backward (dropout on, masks from tc->dropout_seed and the step
 * number) + global grad-norm clipping + AdamW (no decay where tensor.decay == 0).
 * *loss = mean token loss before the update, *grad_norm = norm before clipping (may be NULL). */
int gs_t5_train_step(gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                     const int32_t *attention_mask, const int32_t *decoder_input_ids,
                     const int32_t *labels, const uint8_t *allowed, const gs_t5_train_config *tc,
                     float *loss, float *grad_norm);

/* The two halves of gs_t5_train_step, for data-parallel training (gensar/distributed.py):
 * gs_t5_train_grads = its forward + backward (same dropout masks), grads overwritten;
 * gs_t5_apply_grads = its clipping + AdamW on whatever the grads buffer holds then (e.g. the
 * sum of every process's gradients). train_grads then apply_grads == train_step, bit for bit. */
int gs_t5_train_grads(gs_t5 *m, int B, int T_in, int K_in, int T_dec, const int32_t *input_ids,
                      const int32_t *attention_mask, const int32_t *decoder_input_ids,
                      const int32_t *labels, const uint8_t *allowed, uint64_t dropout_seed, float *loss);
int gs_t5_apply_grads(gs_t5 *m, const gs_t5_train_config *tc, float *grad_norm);

/* The grads buffer holds gs_t5_num_params() + GS_T5_GRAD_EXTRA floats. The C core never
 * reads or writes the extra ones: a data-parallel step stores its share of the loss there,
 * so a single allreduce of the whole buffer sums gradients and loss together. */
#define GS_T5_GRAD_EXTRA 1

/* ---- cached incremental decoding (dropout off) ---- */

/* Encodes B inputs (input_ids (B,T_in,K_in) int32, attention_mask (B,T_in) int32 0/1) once and makes a
 * cache of B*rows_per_input decoder rows: row r belongs to input r / rows_per_input and shares its
 * encoder output / cross-attention K,V. max_steps bounds the number of decode steps. */
int gs_t5_cache_new(const gs_t5 *m, const int32_t *input_ids, const int32_t *attention_mask,
                    int B, int T_in, int K_in, int rows_per_input, int max_steps, gs_t5_cache **out);
/* The same for a cache made and freed inside one C call on one thread (a beam
 * search): its states and packed weights then live in the calling thread's scratch
 * block, reused between calls instead of fresh pages per request. A cache that may
 * be freed on another thread (one held by Python) must come from gs_t5_cache_new:
 * freeing a thread's scratch block from another thread would free it twice. */
int gs_t5_cache_new_in_call(const gs_t5 *m, const int32_t *input_ids, const int32_t *attention_mask,
                            int B, int T_in, int K_in, int rows_per_input, int max_steps, gs_t5_cache **out);
/* Feeds one token per row (tokens (rows,) int32; the first call gets the decoder start token)
 * and writes next-token logits (rows, vocab) float32. Appends to each row's self-attention KV cache. */
int gs_t5_decode_step(const gs_t5 *m, gs_t5_cache *c, const int32_t *tokens, float *logits);
/* Same step for beam search: the LM head runs on live rows only (early steps have
 * 1 live beam per input) and fused with its normaliser, so the (rows, vocab)
 * logits are never stored: lse[r] = log sum_v exp(logit[r, v]) for rows with
 * live[r] != 0 (others left unspecified). live (rows) uint8, lse (rows) double, or NULL
 * to skip the LM head (a search that renormalises over a few tokens needs no normaliser). */
int gs_t5_decode_step_lse(const gs_t5 *m, gs_t5_cache *c, const int32_t *tokens,
                          const uint8_t *live, double *lse);
/* After a step: out[i] = logit of token_ids[i] (n of them) at row `row`. Read-only,
 * safe from several threads at once. */
void gs_t5_decode_logits(const gs_t5 *m, const gs_t5_cache *c, size_t row, int n,
                         const int32_t *token_ids, float *out);
/* Beam reordering: afterwards row r holds the self-attention history of old row src_rows[r]
 * (src_rows (rows,) int32; a row may only take the history of a row of the same input). */
int gs_t5_cache_reorder(gs_t5_cache *c, const int32_t *src_rows);
int gs_t5_cache_rows(const gs_t5_cache *c);
/* Decode steps taken so far (tokens fed per row). */
int gs_t5_cache_steps(const gs_t5_cache *c);
void gs_t5_cache_free(gs_t5_cache *c);
int gs_t5_vocab_size(const gs_t5 *m);

#endif
