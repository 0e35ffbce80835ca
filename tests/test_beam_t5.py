"""Trie-constrained beam search on random tiny T5 models (gensar.Seq2Seq), against
a brute force that scores every item by the teacher-forced full forward pass
(Seq2Seq.logits, not the decoding cache) with a float64 log-softmax over the
full vocabulary in NumPy."""
import numpy as np
import pytest

import gensar
from gensar.decode import CandidateSets, Trie, beam_search
from gensar.seq2seq import Seq2Seq

TOL = 2e-4


def tiny_model(seed, vocab, **over):
    cfg = dict(vocab_size=vocab, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_decoder_layers=2,
               num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
               dropout_rate=0.0)
    cfg.update(over)
    model = Seq2Seq(cfg, seed=seed)
    # HF's initialisation gives nearly uniform logits at this size: spread them so
    # the ranking is decided by the model, not by float rounding.
    rng = np.random.default_rng(seed)
    model.params[...] = rng.normal(size=model.params.shape).astype(np.float32) * 0.5
    return model


def random_inputs(rng, B, T, vocab):
    ids = rng.integers(2, vocab, size=(B, T)).astype(np.int32)
    mask = np.ones((B, T), np.int32)
    for b in range(B):
        pad = int(rng.integers(0, T))  # right padding, at least one real token
        mask[b, T - pad:] = 0
        ids[b, T - pad:] = 0
    return ids, mask


def distinct_table(rng, n, L, lo, hi, behaviour=None):
    seen, rows = set(), []
    while len(rows) < n:
        row = tuple(rng.integers(lo, hi, size=L).tolist())
        if row not in seen:
            seen.add(row)
            rows.append(row)
    table = np.array(rows, dtype=np.int32)
    if behaviour is not None:
        table = np.concatenate([np.full((n, 1), behaviour, np.int32), table], axis=1)
    return table


def teacher_forced_logits(model, ids, mask, b, paths):
    """(n, L) paths -> (n, L, V) float64 logits of input b, each path teacher-forced."""
    n, L = paths.shape
    dec = np.zeros((n, L), np.int32)
    dec[:, 0] = model.config.decoder_start_token_id
    dec[:, 1:] = paths[:, :-1]
    return model.logits(np.repeat(ids[b:b + 1], n, 0), np.repeat(mask[b:b + 1], n, 0), dec).astype(np.float64)


def teacher_forced_scores(model, ids, mask, b, paths):
    """(n, L) paths -> (n,) float64 log-probabilities for input b."""
    n, L = paths.shape
    x = teacher_forced_logits(model, ids, mask, b, paths)
    m = x.max(axis=2, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(axis=2, keepdims=True))
    return logp[np.arange(n)[:, None], np.arange(L)[None, :], paths].sum(axis=1)


def brute_force(model, ids, mask, b, table, items):
    items = np.asarray(items)
    paths = table[items]
    s = teacher_forced_scores(model, ids, mask, b, paths)
    order = np.lexsort(tuple(paths.T[::-1]) + (-s,))
    return items[order], s[order]


def assert_ranking(items, scores, ref_items, ref_scores):
    score_of = dict(zip(ref_items.tolist(), ref_scores))
    k = len(items)
    assert len(set(items.tolist())) == k
    np.testing.assert_allclose(scores, ref_scores[:k], atol=TOL, rtol=0)
    np.testing.assert_allclose(scores, [score_of[i] for i in items], atol=TOL, rtol=0)
    for j in range(k):
        if items[j] != ref_items[j]:
            assert abs(score_of[items[j]] - score_of[ref_items[j]]) < TOL


@pytest.mark.parametrize("seed", range(8))
def test_full_catalogue_wide_beam_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    V = int(rng.integers(20, 60))
    over = {}
    if seed % 2:
        over.update(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    if seed % 3 == 2:
        over.update(num_layers=1, num_decoder_layers=3)
    model = tiny_model(seed, V, **over)
    L = int(rng.integers(1, 4))
    n = int(min(rng.integers(1, 40), (V - 4) ** L))
    table = distinct_table(rng, n, L, 3, V - 1, behaviour=V - 1 if seed % 2 == 0 else None)
    B, T = int(rng.integers(1, 4)), int(rng.integers(1, 9))
    ids, mask = random_inputs(rng, B, T, V)
    items, scores = beam_search(model, ids, mask, Trie(table), num_beams=n + 2, top_k=n)
    for b in range(B):
        assert_ranking(items[b], scores[b], *brute_force(model, ids, mask, b, table, np.arange(n)))


@pytest.mark.parametrize("seed", range(4))
def test_candidate_sets_wide_beam_equals_brute_force(seed):
    rng = np.random.default_rng(50 + seed)
    V = 40
    model = tiny_model(seed, V)
    table = distinct_table(rng, 200, 3, 3, V, behaviour=1)
    B, n_cand = 3, 25
    cand = np.stack([rng.choice(200, n_cand, replace=False) for _ in range(B)])
    cand[2, 10:] = -1
    ids, mask = random_inputs(rng, B, 6, V)
    items, scores = beam_search(model, ids, mask, CandidateSets(table, cand), num_beams=n_cand,
                                top_k=10)
    for b in range(B):
        assert_ranking(items[b], scores[b],
                       *brute_force(model, ids, mask, b, table, cand[b][cand[b] >= 0]))


def renormalised_scores(model, ids, mask, b, table, items, over=None):
    """Brute force of renormalise=True: each token's log-probability over the tokens
    that follow its prefix among the given items' paths (or among the paths of the
    items `over`) -> (items, scores) ranked."""
    items = np.asarray(items)
    paths = table[items]
    norm = paths if over is None else table[np.asarray(over)]
    n, L = paths.shape
    x = teacher_forced_logits(model, ids, mask, b, paths)
    s = np.zeros(n)
    for i in range(n):
        for t in range(L):
            siblings = np.unique(norm[(norm[:, :t] == paths[i, :t]).all(1), t])
            z = x[i, t, siblings]
            s[i] += x[i, t, paths[i, t]] - (z.max() + np.log(np.exp(z - z.max()).sum()))
    order = np.lexsort(tuple(paths.T[::-1]) + (-s,))
    return items[order], s[order]


@pytest.mark.parametrize("seed", range(3))
def test_renormalised_wide_beam_equals_brute_force(seed):
    rng = np.random.default_rng(80 + seed)
    V = 40
    model = tiny_model(seed, V)
    table = distinct_table(rng, 60, 3, 3, V, behaviour=1)
    B = 2
    ids, mask = random_inputs(rng, B, 6, V)
    items, scores = beam_search(model, ids, mask, Trie(table), num_beams=60, top_k=60, renormalise=True)
    plain, _ = beam_search(model, ids, mask, Trie(table), num_beams=60, top_k=60)
    for b in range(B):
        assert_ranking(items[b], scores[b], *renormalised_scores(model, ids, mask, b, table, np.arange(60)))
    assert np.exp(scores.astype(np.float64)).sum(1) == pytest.approx(1.0, rel=1e-4)  # a distribution over items
    assert not np.array_equal(items, plain)  # the normaliser changes the ranking
    cand = np.stack([rng.choice(60, 15, replace=False) for _ in range(B)])
    items, scores = beam_search(model, ids, mask, CandidateSets(table, cand), num_beams=15, top_k=15,
                                renormalise=True)
    for b in range(B):
        assert_ranking(items[b], scores[b], *renormalised_scores(model, ids, mask, b, table, cand[b]))
    # normalised over the whole catalogue's siblings, not the candidates'
    items, scores = beam_search(model, ids, mask, CandidateSets(table, cand), num_beams=15, top_k=15,
                                renormalise=Trie(table))
    for b in range(B):
        assert_ranking(items[b], scores[b],
                       *renormalised_scores(model, ids, mask, b, table, cand[b], over=np.arange(60)))
    with pytest.raises(ValueError, match="not in the trie that normalises"):
        beam_search(model, ids, mask, CandidateSets(table, cand), num_beams=15, renormalise=Trie(table[:30]))
    with pytest.raises(TypeError, match="renormalise must be True, False or a Trie"):
        beam_search(model, ids, mask, Trie(table), renormalise="yes")


def test_narrow_beam_matches_reference_beam_search():
    """Pruned search (num_beams < items) keeps exactly the beams a plain
    reference beam search keeps, scoring prefixes by teacher forcing."""
    rng = np.random.default_rng(9)
    V = 30
    model = tiny_model(3, V)
    table = distinct_table(rng, 120, 3, 3, V)
    ids, mask = random_inputs(rng, 2, 5, V)
    num_beams, top_k = 6, 4
    items, scores = beam_search(model, ids, mask, Trie(table), num_beams=num_beams, top_k=top_k)
    paths = {tuple(r.tolist()): i for i, r in enumerate(table)}
    for b in range(2):
        beams = [()]
        for d in range(1, table.shape[1] + 1):
            props = sorted({p[:d] for p in paths if p[:d - 1] in set(beams)})
            arr = np.array(props, np.int32).reshape(len(props), d)
            s = teacher_forced_scores(model, ids, mask, b, arr)
            order = np.lexsort(tuple(arr.T[::-1]) + (-s,))[:num_beams]
            beams = [props[i] for i in order]
            kept = s[order]
        np.testing.assert_array_equal(items[b], [paths[p] for p in beams[:top_k]])
        np.testing.assert_allclose(scores[b], kept[:top_k], atol=TOL)


def test_threads_batching_and_method_agree():
    rng = np.random.default_rng(11)
    V = 50
    model = tiny_model(5, V)
    table = distinct_table(rng, 300, 4, 3, V, behaviour=2)
    cand = np.stack([rng.choice(300, 30, replace=False) for _ in range(5)])
    ids, mask = random_inputs(rng, 5, 7, V)
    before = gensar.get_num_threads()
    runs = []
    try:
        for threads, bs in ((1, None), (2, None), (2, 1), (1, 2)):
            gensar.set_num_threads(threads)
            runs.append(beam_search(model, ids, mask, Trie(table), 8, 8, batch_size=bs)
                        + beam_search(model, ids, mask, CandidateSets(table, cand), 8, 5, batch_size=bs))
    finally:
        gensar.set_num_threads(before)
    for run in runs[1:]:
        for x, y in zip(runs[0], run):
            np.testing.assert_array_equal(x, y)
    got = model.beam_search(ids, mask, Trie(table), num_beams=8, top_k=8)
    np.testing.assert_array_equal(got[0], runs[0][0])
    np.testing.assert_array_equal(got[1], runs[0][1])


def test_invalid_arguments():
    rng = np.random.default_rng(12)
    V = 20
    model = tiny_model(0, V)
    table = distinct_table(rng, 10, 2, 3, V)
    ids, mask = random_inputs(rng, 2, 4, V)
    trie = Trie(table)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(model, ids, mask, trie, num_beams=0, top_k=1)
    with pytest.raises(ValueError, match="top_k"):
        beam_search(model, ids, mask, trie, num_beams=3, top_k=4)
    with pytest.raises(ValueError, match="exceeds the items reachable"):
        beam_search(model, ids, mask, trie, num_beams=11, top_k=11)
    with pytest.raises(ValueError, match=f"token id {V}.*vocabulary has {V} tokens"):
        beam_search(model, ids, mask, Trie(np.array([[3, V]])), num_beams=1, top_k=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        beam_search(model, ids, mask, CandidateSets(np.array([[3, V], [3, 4]]), [[0, 1], [1, 0]]), 1, 1)
    with pytest.raises(TypeError, match="integer"):
        beam_search(model, ids.astype(np.float32), mask, trie, 2, 1)
    with pytest.raises(ValueError, match="does not match"):
        beam_search(model, ids, mask[:, :2], trie, 2, 1)
    with pytest.raises(ValueError, match="candidates has 3 rows"):
        beam_search(model, ids, mask, CandidateSets(table, [[0], [1], [2]]), 1, 1)
    with pytest.raises(TypeError, match="gensar.Trie"):
        beam_search(model, ids, mask, table, 2, 1)
    with pytest.raises(ValueError, match="batch_size"):
        beam_search(model, ids, mask, trie, 2, 1, batch_size=0)
    bad = ids.copy()
    bad[0, 0] = V
    with pytest.raises(ValueError):
        beam_search(model, bad, mask, trie, 2, 1)


def test_concurrent_searches_from_python_threads():
    """The search releases the GIL and only reads the model: two Python threads
    searching at once get exactly the serial results."""
    import threading

    rng = np.random.default_rng(13)
    V = 40
    model = tiny_model(7, V)
    table = distinct_table(rng, 200, 3, 3, V, behaviour=1)
    trie = Trie(table)
    inputs = [random_inputs(rng, 3, 6, V) for _ in range(4)]
    serial = [beam_search(model, i, m, trie, 10, 10) for i, m in inputs]
    results = [None] * len(inputs)

    def work(k):
        results[k] = beam_search(model, *inputs[k], trie, 10, 10)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
