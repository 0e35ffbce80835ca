"""Free-text generation with a Seq2Seq model: greedy decoding and sampling
(used for doc2query pseudo-queries and next-query prediction). Identifier
generation uses the constrained beam search of gensar.decode instead."""
from __future__ import annotations

import numpy as np


def generate(model, input_ids, attention_mask, max_new_tokens: int = 16, eos_id: int = 1,
             num_return: int = 1, do_sample: bool = False, temperature: float = 1.0,
             top_k: int = 0, seed: int = 0, banned_ids=None) -> list:
    """Generates token sequences for a batch of inputs.

    input_ids, attention_mask : int32 (B, T)
    num_return : sequences per input (rows of the decoder cache)
    do_sample : sample from softmax(logits / temperature), restricted to the top_k
        most likely tokens when top_k > 0; otherwise greedy (argmax)
    banned_ids : token ids never generated (e.g. identifier tokens in a query)
    returns : list of B * num_return token-id lists (without the final </s>),
        input-major: sequences of input b are rows b*num_return ... b*num_return+num_return-1
    """
    from ._validate import check_float, check_int

    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    num_return = check_int("num_return", num_return, minimum=1)
    eos_id = check_int("eos_id", eos_id, minimum=0)
    top_k = check_int("top_k", top_k, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    if do_sample:
        check_float("temperature", temperature, minimum=0.0, strict_min=True)
    vocab = model.config.vocab_size
    if banned_ids is not None:
        banned = np.asarray(banned_ids)
        if banned.size and (banned.dtype == np.bool_ or not np.issubdtype(banned.dtype, np.integer)):
            raise TypeError(f"banned_ids must be integer token ids, got dtype {banned.dtype}")
        if banned.ndim > 1:
            raise ValueError(f"banned_ids must be a 1-D list of token ids, got shape {banned.shape}")
        if banned.size and (banned.min() < 0 or banned.max() >= vocab):
            bad = int(banned.min()) if banned.min() < 0 else int(banned.max())
            raise ValueError(f"banned_ids holds {bad}, not a token id of this model: ids are in [0, {vocab})")
        banned_ids = banned.astype(np.int64)
    rng = np.random.default_rng(seed)
    cache = model.decode_cache(input_ids, attention_mask, rows_per_input=num_return,
                               max_steps=max_new_tokens)
    rows = len(input_ids) * num_return
    tokens = np.zeros(rows, np.int32)  # decoder start token (= pad = 0, as in T5)
    out = [[] for _ in range(rows)]
    done = np.zeros(rows, bool)
    for _ in range(max_new_tokens):
        logits = model.decode_step(cache, tokens).astype(np.float64)
        logits[:, 0] = -np.inf  # never emit padding
        if banned_ids is not None:
            logits[:, banned_ids] = -np.inf
        if do_sample:
            logits /= temperature
            if top_k and top_k < logits.shape[1]:
                kth = np.partition(logits, -top_k, axis=1)[:, -top_k][:, None]
                logits[logits < kth] = -np.inf
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            u = rng.random(rows)[:, None]
            nxt = np.minimum((p.cumsum(1) < u).sum(1), p.shape[1] - 1)
        else:
            nxt = logits.argmax(1)
        for r in np.flatnonzero(~done):
            if nxt[r] == eos_id:
                done[r] = True
            else:
                out[r].append(int(nxt[r]))
        if done.all():
            break
        tokens = nxt.astype(np.int32)
    return out
