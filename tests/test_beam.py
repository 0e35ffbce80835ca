"""Trie-constrained beam search (csrc/decode/beam.c) on the test decoder of
csrc/decode/testdec.h, against an independent NumPy brute force.

Test decoder, per input b and row state h (starts at 0), start token 0:
    h <- tanh(E[prev_token] + h @ A);  logits = h @ O + U[b]
Score of an item = sum over its L tokens of log-softmax(logits) over the full
vocabulary. Ranking: score descending, ties -> lexicographically smaller path.
"""
import numpy as np
import pytest

import gensar
from gensar.decode import CandidateSets, Trie, beam_search_test_decoder

TOL = 1e-4  # C sums float32 logits in double; NumPy works in float64 throughout


def make_decoder(rng, V, D, B, scale=1.0):
    f = lambda *s: (rng.normal(size=s) * scale).astype(np.float32)  # noqa: E731
    return f(D, D), f(V, D), f(D, V), f(B, V)


def teacher_forced_scores(dec, b, paths):
    """(n, L) paths -> (n,) log-probabilities of every path for input b, float64."""
    A, E, O, U = (x.astype(np.float64) for x in dec)
    n, L = paths.shape
    h = np.zeros((n, A.shape[0]))
    prev = np.zeros(n, dtype=np.int64)
    total = np.zeros(n)
    for t in range(L):
        h = np.tanh(E[prev] + h @ A)
        logits = h @ O + U[b]
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        total += logits[np.arange(n), paths[:, t]] - lse
        prev = paths[:, t]
    return total


def brute_force_ranking(dec, b, table, items):
    """Items (distinct paths) ranked by teacher-forced score, ties by path."""
    items = np.asarray(items)
    paths = table[items]
    scores = teacher_forced_scores(dec, b, paths)
    order = np.lexsort(tuple(paths.T[::-1]) + (-scores,))
    return items[order], scores[order]


def assert_ranking(items, scores, ref_items, ref_scores, score_of):
    """Beam output == brute force: same scores position by position, returned
    scores are the items' true scores, and the items equal the reference except
    where two reference scores are closer than the float tolerance."""
    k = len(items)
    assert len(set(items.tolist())) == k
    np.testing.assert_allclose(scores, ref_scores[:k], atol=TOL, rtol=0)
    np.testing.assert_allclose(scores, [score_of[i] for i in items], atol=TOL, rtol=0)
    for j in range(k):
        if items[j] != ref_items[j]:
            assert abs(score_of[items[j]] - score_of[ref_items[j]]) < TOL


def distinct_table(rng, n, L, V, behaviour=None):
    """n distinct random paths of L tokens in [1, V) (optionally a behaviour column)."""
    seen, rows = set(), []
    while len(rows) < n:
        row = tuple(rng.integers(1, V, size=L).tolist())
        if row not in seen:
            seen.add(row)
            rows.append(row)
    table = np.array(rows, dtype=np.int32)
    if behaviour is not None:
        table = np.concatenate([np.full((n, 1), behaviour, dtype=np.int32), table], axis=1)
    return table


@pytest.mark.parametrize("seed", range(25))
def test_full_catalogue_wide_beam_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    V = int(rng.integers(4, 30))
    L = int(rng.integers(1, 5))
    n = int(min(rng.integers(1, 60), (V - 1) ** L))
    B = int(rng.integers(1, 4))
    table = distinct_table(rng, n, L, V, behaviour=V - 1 if seed % 4 == 0 else None)
    dec = make_decoder(rng, V, int(rng.integers(1, 6)), B, scale=float(rng.uniform(0.3, 2.0)))
    trie = Trie(table, vocab_size=V)
    num_beams = n + int(rng.integers(0, 4))
    items, scores = beam_search_test_decoder(*dec, trie, num_beams=num_beams, top_k=n)
    assert items.shape == (B, n) and items.dtype == np.int64 and scores.dtype == np.float32
    for b in range(B):
        ref_items, ref_scores = brute_force_ranking(dec, b, table, np.arange(n))
        score_of = dict(zip(ref_items.tolist(), ref_scores))
        assert_ranking(items[b], scores[b], ref_items, ref_scores, score_of)


@pytest.mark.parametrize("seed", range(10))
def test_candidate_sets_wide_beam_equals_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    V, L, n_items, B = 12, 3, 300, 4
    n_cand = int(rng.integers(2, 40))
    table = distinct_table(rng, n_items, L, V, behaviour=0)
    dec = make_decoder(rng, V, 4, B)
    cand = np.stack([rng.choice(n_items, n_cand, replace=False) for _ in range(B)])
    cand[1, n_cand // 2:] = -1  # a ragged row: padding
    items, scores = beam_search_test_decoder(*dec, CandidateSets(table, cand),
                                             num_beams=n_cand, top_k=max(1, n_cand // 2))
    for b in range(B):
        ref_items, ref_scores = brute_force_ranking(dec, b, table, cand[b][cand[b] >= 0])
        score_of = dict(zip(ref_items.tolist(), ref_scores))
        assert_ranking(items[b], scores[b], ref_items, ref_scores, score_of)


def reference_beam(dec, b, table, items, num_beams, top_k):
    """Plain-Python constrained beam search: at each depth keep the num_beams best
    prefixes by (score desc, prefix asc); prefix scores by teacher forcing."""
    paths = {tuple(table[i].tolist()): int(i) for i in items}
    L = table.shape[1]
    beams = [()]
    for d in range(1, L + 1):
        proposals = sorted({p[:d] for p in paths if p[:d - 1] in set(beams)})
        arr = np.array(proposals, dtype=np.int64).reshape(len(proposals), d)
        s = teacher_forced_scores(dec, b, arr)
        order = np.lexsort(tuple(arr.T[::-1]) + (-s,))[:num_beams]
        beams = [proposals[i] for i in order]
        final_scores = s[order]
    return np.array([paths[p] for p in beams[:top_k]]), final_scores[:top_k]


@pytest.mark.parametrize("seed", range(15))
def test_narrow_beam_equals_reference_beam_search(seed):
    """With pruning (num_beams < items), the C search keeps exactly the beams of a
    straightforward reference implementation."""
    rng = np.random.default_rng(200 + seed)
    V, L, n, B = 9, 4, 150, 3
    table = distinct_table(rng, n, L, V)
    dec = make_decoder(rng, V, 5, B, scale=1.5)
    num_beams = int(rng.integers(1, 12))
    top_k = int(rng.integers(1, num_beams + 1))
    items, scores = beam_search_test_decoder(*dec, Trie(table), num_beams=num_beams, top_k=top_k)
    for b in range(B):
        ref_items, ref_scores = reference_beam(dec, b, table, np.arange(n), num_beams, top_k)
        np.testing.assert_array_equal(items[b], ref_items)
        np.testing.assert_allclose(scores[b], ref_scores, atol=TOL, rtol=0)


def test_equal_scores_rank_lexicographically():
    """All-zero weights give every path the same score -L log V: the ranking is
    the lexicographic order of the paths, also under pruning."""
    V, L = 7, 3
    rng = np.random.default_rng(0)
    table = distinct_table(rng, 40, L, V)
    dec = tuple(np.zeros_like(x) for x in make_decoder(rng, V, 3, 2))
    lex = np.lexsort(table.T[::-1])
    for num_beams in (40, 5, 1):
        items, scores = beam_search_test_decoder(*dec, Trie(table), num_beams=num_beams,
                                                 top_k=num_beams)
        np.testing.assert_array_equal(items[0], lex[:num_beams])
        np.testing.assert_array_equal(items[1], lex[:num_beams])
        np.testing.assert_allclose(scores, -L * np.log(V), rtol=1e-6)


def run_both_modes(dec, table, cand, num_beams, top_k):
    full = beam_search_test_decoder(*dec, Trie(table), num_beams=num_beams, top_k=top_k)
    sampled = beam_search_test_decoder(*dec, CandidateSets(table, cand), num_beams=num_beams,
                                       top_k=top_k)
    return full + sampled


def test_one_and_two_threads_identical():
    rng = np.random.default_rng(7)
    V, B = 20, 9
    table = distinct_table(rng, 400, 4, V, behaviour=0)
    cand = np.stack([rng.choice(400, 100, replace=False) for _ in range(B)])
    dec = make_decoder(rng, V, 6, B)
    before = gensar.get_num_threads()
    try:
        gensar.set_num_threads(1)
        one = run_both_modes(dec, table, cand, 10, 10)
        gensar.set_num_threads(2)
        two = run_both_modes(dec, table, cand, 10, 10)
    finally:
        gensar.set_num_threads(before)
    for x, y in zip(one, two):
        np.testing.assert_array_equal(x, y)


def test_batched_equals_one_at_a_time():
    rng = np.random.default_rng(8)
    V, B = 15, 6
    table = distinct_table(rng, 300, 3, V)
    cand = np.stack([rng.choice(300, 50, replace=False) for _ in range(B)])
    A, E, O, U = make_decoder(rng, V, 4, B)
    batched = run_both_modes((A, E, O, U), table, cand, 8, 5)
    for b in range(B):
        single = run_both_modes((A, E, O, np.ascontiguousarray(U[b:b + 1])), table,
                                cand[b:b + 1], 8, 5)
        for x, y in zip(batched, single):
            np.testing.assert_array_equal(x[b:b + 1], y)


def test_fewer_continuations_than_beams():
    """Three items, one root child, 10 beams: idle rows are ignored, all three
    items come back; asking for a fourth is an error."""
    rng = np.random.default_rng(9)
    table = np.array([[1, 2, 3], [1, 2, 4], [1, 5, 3]], dtype=np.int32)
    dec = make_decoder(rng, 6, 3, 2)
    items, scores = beam_search_test_decoder(*dec, Trie(table), num_beams=10, top_k=3)
    for b in range(2):
        ref_items, ref_scores = brute_force_ranking(dec, b, table, np.arange(3))
        np.testing.assert_array_equal(items[b], ref_items)
        np.testing.assert_allclose(scores[b], ref_scores, atol=TOL)
    with pytest.raises(ValueError, match=r"top_k \(4\) exceeds the items reachable.*3 distinct"):
        beam_search_test_decoder(*dec, Trie(table), num_beams=10, top_k=4)


def test_single_item_and_single_token_paths():
    rng = np.random.default_rng(10)
    dec = make_decoder(rng, 5, 2, 1)
    items, scores = beam_search_test_decoder(*dec, Trie(np.array([[3, 1]])), num_beams=1, top_k=1)
    assert items.tolist() == [[0]]
    np.testing.assert_allclose(scores[0, 0], teacher_forced_scores(dec, 0, np.array([[3, 1]]))[0],
                               atol=TOL)
    table = np.array([[4], [1], [2]])
    items, _ = beam_search_test_decoder(*dec, Trie(table), num_beams=3, top_k=3)
    np.testing.assert_array_equal(items[0], brute_force_ranking(dec, 0, table, np.arange(3))[0])


def test_candidate_duplicates():
    rng = np.random.default_rng(11)
    table = np.array([[1, 2], [1, 3], [1, 2], [2, 2]], dtype=np.int32)  # items 0 and 2 collide
    dec = make_decoder(rng, 4, 2, 2)
    with pytest.raises(ValueError, match="candidate row 1: .*items 0 and 2"):
        beam_search_test_decoder(*dec, CandidateSets(table, [[0, 1], [0, 2]]), 2, 1)
    with pytest.raises(ValueError, match="candidate row 0: .*items 3 and 3"):
        beam_search_test_decoder(*dec, CandidateSets(table, [[3, 3], [0, 1]]), 2, 1)
    items, _ = beam_search_test_decoder(
        *dec, CandidateSets(table, [[2, 0, 1], [3, 3, -1]], on_duplicate="first"), 3, 1)
    assert items[0, 0] in (2, 1) and items[1, 0] == 3  # item 0 is shadowed by item 2
    with pytest.raises(ValueError, match="top_k.*exceeds.*input 1.*1 distinct"):
        beam_search_test_decoder(
            *dec, CandidateSets(table, [[2, 0, 1], [3, 3, -1]], on_duplicate="first"), 2, 2)
    items, _ = beam_search_test_decoder(
        *dec, CandidateSets(table, [[2, 0, 1], [3, 1, -1]], on_duplicate="first"), 2, 2)
    assert set(items[0].tolist()) == {2, 1} and set(items[1].tolist()) == {3, 1}
    with pytest.raises(ValueError, match="top_k.*exceeds.*input 1.*1 distinct"):
        beam_search_test_decoder(
            *dec, CandidateSets(table, [[2, 0, 1], [3, 3, 3]], on_duplicate="first"), 2, 2)


def test_invalid_arguments():
    rng = np.random.default_rng(12)
    V = 6
    table = np.array([[1, 2], [1, 3], [2, 5]], dtype=np.int32)
    dec = make_decoder(rng, V, 3, 2)
    trie = Trie(table)
    with pytest.raises(ValueError, match="num_beams must be an integer >= 1"):
        beam_search_test_decoder(*dec, trie, num_beams=0, top_k=1)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        beam_search_test_decoder(*dec, trie, num_beams=2, top_k=0)
    with pytest.raises(ValueError, match=r"top_k \(3\) > num_beams \(2\)"):
        beam_search_test_decoder(*dec, trie, num_beams=2, top_k=3)
    # token ids outside the decoder vocabulary: at search time
    big = Trie(np.array([[1, 2], [1, V]]))
    with pytest.raises(ValueError, match=f"token id {V}.*vocabulary has {V} tokens"):
        beam_search_test_decoder(*dec, big, num_beams=2, top_k=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        beam_search_test_decoder(*dec, CandidateSets(np.array([[1, 2], [1, V]]), [[0, 1], [0, 1]]),
                                 num_beams=2, top_k=1)
    with pytest.raises(TypeError, match="gensar.Trie"):
        beam_search_test_decoder(*dec, table, num_beams=2, top_k=1)
    with pytest.raises(ValueError, match="candidates has 3 rows but there are 2 inputs"):
        beam_search_test_decoder(*dec, CandidateSets(table, [[0], [1], [2]]), num_beams=1, top_k=1)
    with pytest.raises(ValueError, match="item index 3"):
        CandidateSets(table, [[0, 3]])
    with pytest.raises(ValueError, match="item index -2"):
        CandidateSets(table, [[0, -2]])
    with pytest.raises(TypeError, match="integer item indices"):
        CandidateSets(table, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="2-D"):
        CandidateSets(table, [0, 1])
    with pytest.raises(ValueError, match="candidate row 1 has no candidate"):
        beam_search_test_decoder(*dec, CandidateSets(table, [[0, 1], [-1, -1]]), 1, 1)
    A, E, O, U = dec
    with pytest.raises(ValueError, match=r"U must have shape"):
        beam_search_test_decoder(A, E, O, np.zeros((2, V + 1), np.float32), trie, 2, 1)
    with pytest.raises(TypeError, match="float32"):
        beam_search_test_decoder(A.astype(np.float64), E, O, U, trie, 2, 1)
    bad = O.copy()
    bad[0, 0] = np.nan
    with pytest.raises(RuntimeError, match="non-finite logits"):
        beam_search_test_decoder(A, E, bad, U, trie, 2, 1)


@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 17, 1000, 33001])
def test_log_sum_exp_kernel(n):
    """The normaliser of every score, against float64 NumPy, on odd lengths and
    a wide dynamic range (terms far below the maximum underflow harmlessly)."""
    rng = np.random.default_rng(n)
    x = (rng.normal(size=(4, n)) * 30).astype(np.float32)
    if n > 1:  # (a row of one -inf has no finite log-sum-exp)
        x[1, ::3] = -1e30
        x[2, 0] = -np.inf
    x64 = x.astype(np.float64)
    m = x64.max(axis=1, keepdims=True)
    ref = m[:, 0] + np.log(np.exp(x64 - m).sum(axis=1))
    np.testing.assert_allclose(gensar._core.log_sum_exp(x), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n,C,V", [(1, 1, 1), (3, 17, 1023), (70, 128, 1025), (130, 33, 5000), (5, 500, 2050)])
def test_linear_log_sum_exp_matches_numpy(n, C, V):
    """The fused LM head + normaliser (tiles of rows x vocabulary chunks, partial
    maxima and sums combined per row) against float64 NumPy, on shapes that leave
    ragged tiles in both directions; and the same bits at 1 and 2 threads and for a
    row computed alone (batching must not change a beam's score)."""
    rng = np.random.default_rng(n * 1000 + V)
    A = rng.normal(size=(n, C)).astype(np.float32)
    W = (rng.normal(size=(V, C)) * 0.5).astype(np.float32)
    logits = A.astype(np.float64) @ W.astype(np.float64).T
    m = logits.max(axis=1, keepdims=True)
    ref = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    f = gensar._core.linear_log_sum_exp
    try:
        gensar.set_num_threads(1)
        one = f(A, W)
        gensar.set_num_threads(2)
        two = f(A, W)
    finally:
        gensar.set_num_threads(0)
    np.testing.assert_allclose(one, ref, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(f(A[-1:], W), one[-1:])


def test_linear_log_sum_exp_rejects_bad_input():
    f = gensar._core.linear_log_sum_exp
    with pytest.raises(ValueError, match="columns"):
        f(np.zeros((2, 3), np.float32), np.zeros((5, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        f(np.zeros((2, 3)), np.zeros((5, 3), np.float32))
    W = np.zeros((5, 3), np.float32)
    W[4, 0] = np.nan
    assert np.isnan(f(np.ones((2, 3), np.float32), W)).all()


def test_log_sum_exp_special_values():
    lse = gensar._core.log_sum_exp
    x = np.zeros((4, 19), np.float32)
    x[0, 17] = np.nan
    x[1, 3] = np.nan
    x[2, 5] = np.inf
    x[3, :] = -np.inf
    out = lse(x)
    assert np.isnan(out[0]) and np.isnan(out[1])
    assert out[2] == np.inf and out[3] == -np.inf
    assert gensar._core.log_sum_exp_kernel_name() in gensar.cpu.ISAS
