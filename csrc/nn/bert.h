/* BERT-family sentence encoder, inference only (all-MiniLM-L6-v2, bge-base-en-v1.5, ...).
 *
 * Architecture (HuggingFace BertModel): word + learned absolute position + token-type
 * embeddings, LayerNorm; then `layers` post-norm blocks
 *     x1 = LN(x + Attn(x) W_o^T + b_o);  x = LN(x1 + GELU_erf(x1 W_1^T + b_1) W_2^T + b_2)
 * with biases everywhere; then pooling (mean over the real tokens, or the [CLS] token) and
 * optional L2 normalisation.
 *
 * Sequences are packed without padding: the tokens of sequence b are
 * ids[offsets[b] .. offsets[b+1]), so the dense layers never touch a pad token and each
 * sequence attends only to its own tokens (exactly what a key padding mask gives).
 *
 * All parameters live in one float32 buffer (`params`, n_params floats) whose layout
 * gs_bert_tensor_spec() describes; the caller fills it (from a safetensors file). */
#ifndef GENSAR_BERT_H
#define GENSAR_BERT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int vocab_size;        /* V: rows of the word-embedding table */
    int hidden;            /* H */
    int layers;            /* number of transformer blocks */
    int heads;             /* attention heads; H % heads == 0 */
    int intermediate;      /* I: feed-forward width */
    int max_positions;     /* P: rows of the position table = longest sequence */
    int type_vocab_size;   /* rows of the token-type table (>= 1) */
    float layer_norm_eps;  /* 1e-12 for BERT */
} gs_bert_config;

/* Pooling of the last hidden states into one vector per sequence. */
enum { GS_BERT_POOL_MEAN = 0, GS_BERT_POOL_CLS = 1 };

typedef struct {
    float *qkv_w, *qkv_b;  /* (3H,H), (3H): query, key, value projections stacked */
    float *ao_w, *ao_b;    /* (H,H), (H): attention output projection */
    float *ln1_g, *ln1_b;  /* (H): LayerNorm after attention */
    float *ff1_w, *ff1_b;  /* (I,H), (I) */
    float *ff2_w, *ff2_b;  /* (H,I), (H) */
    float *ln2_g, *ln2_b;  /* (H): LayerNorm after the feed-forward */
} gs_bert_layer;

typedef struct {
    gs_bert_config cfg;
    size_t n_params;
    float *params; /* one buffer; every pointer below points into it */
    float *word_emb, *pos_emb, *type_emb, *emb_ln_g, *emb_ln_b;
    gs_bert_layer *layer; /* cfg.layers entries */
} gs_bert;

/* One named tensor of the parameter buffer: HuggingFace name (with the q/k/v projections
 * fused under "attention.self.qkv"), offset in floats, shape (rows, cols; cols == 1 for
 * vectors). */
typedef struct {
    char name[96];
    size_t offset;
    int rows, cols;
} gs_bert_tensor;

/* Checks the configuration; GS_EINVAL with a message naming the bad field. */
int gs_bert_check_config(const gs_bert_config *cfg);
/* Number of tensors in the layout: 5 + 12 * layers. */
int gs_bert_num_tensors(const gs_bert_config *cfg);
/* Fills spec for tensor index i in [0, gs_bert_num_tensors). */
int gs_bert_tensor_spec(const gs_bert_config *cfg, int i, gs_bert_tensor *spec);

/* Allocates a model with uninitialised (zeroed) parameters. *out is NULL on failure. */
int gs_bert_create(const gs_bert_config *cfg, gs_bert **out);
void gs_bert_free(gs_bert *m);

/* Encodes n_seq packed sequences.
 *   offsets (n_seq+1): offsets[0] == 0, strictly increasing, each length <= max_positions
 *   ids (offsets[n_seq]): token ids in [0, V)
 *   type_ids (offsets[n_seq]) or NULL (all 0): in [0, type_vocab_size)
 *   pooling: GS_BERT_POOL_MEAN or GS_BERT_POOL_CLS; normalize: L2-normalise each row
 *   -> out (n_seq, H)
 * Threads: gs_num_threads(); the result does not depend on it beyond the SGEMM's blocking. */
int gs_bert_encode(const gs_bert *m, int n_seq, const int64_t *offsets, const int32_t *ids,
                   const int32_t *type_ids, int pooling, int normalize, float *out);

#endif
