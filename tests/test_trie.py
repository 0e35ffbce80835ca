"""The identifier trie (csrc/decode/trie.c) against a plain-Python reference."""
import numpy as np
import pytest

import gensar
from gensar import Trie


def random_table(rng, n, L, vocab, behaviour=None):
    table = rng.integers(0, vocab, size=(n, L))
    if behaviour is not None:
        table = np.concatenate([np.full((n, 1), behaviour), table], axis=1)
    return table


def reference(table):
    """Prefix -> set of next tokens, and full path -> first item index."""
    nxt, first = {}, {}
    for i, row in enumerate(map(tuple, table)):
        for d in range(len(row)):
            nxt.setdefault(row[:d], set()).add(row[d])
        first.setdefault(row, i)
    return nxt, first


def check_against_reference(trie, table):
    nxt, first = reference(table)
    L = table.shape[1]
    assert trie.depth == L
    assert trie.n_items == table.shape[0]
    assert trie.n_paths == len(first)
    assert trie.n_nodes == 1 + sum(len(s) for s in nxt.values())
    assert trie.n_duplicates == table.shape[0] - len(first)
    assert trie.max_token == table.max()
    for prefix, tokens in nxt.items():
        np.testing.assert_array_equal(trie.children(list(prefix)), sorted(tokens))
    for path, item in first.items():
        assert trie.lookup(list(path)) == item
        assert trie.children(list(path)).size == 0  # leaves have no children


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    L = int(rng.integers(1, 6))
    vocab = int(rng.integers(1, 9))  # small vocabularies force shared prefixes and duplicates
    table = random_table(rng, n, L, vocab, behaviour=7 if seed % 3 == 0 else None)
    trie = Trie(table, on_duplicate="first")
    check_against_reference(trie, table)


def test_csr_layout_invariants():
    rng = np.random.default_rng(3)
    table = random_table(rng, 500, 4, 6)
    trie = Trie(table, on_duplicate="first")
    level_start, token, child_start, leaf_item = trie.arrays()
    L = trie.depth
    assert level_start[0] == 0 and level_start[1] == 1 and level_start[-1] == trie.n_nodes
    assert token[0] == -1 and child_start[0] == 1 and child_start[-1] == trie.n_nodes
    assert np.all(np.diff(child_start) >= 0)
    for d in range(L):  # nodes of depth d: children contiguous, sorted, of depth d+1
        for n in range(level_start[d], level_start[d + 1]):
            kids = token[child_start[n]:child_start[n + 1]]
            assert kids.size >= 1
            assert np.all(np.diff(kids) > 0)
            assert level_start[d + 1] <= child_start[n] and child_start[n + 1] <= level_start[d + 2]
    # leaves in lexicographic order of their paths
    paths = table[leaf_item]
    order = np.lexsort(paths.T[::-1])
    np.testing.assert_array_equal(order, np.arange(len(order)))


def test_radix_and_merge_sort_build_identical_tries():
    rng = np.random.default_rng(5)
    for vocab in (3, 300, 70000, 2**31 - 1):  # one- and two-digit radix passes
        table = random_table(rng, 5000, 3, vocab)
        table[100] = table[7]  # a duplicate: the first one must be kept by both sorts
        a = Trie(table, on_duplicate="first", _sort=1).arrays()
        b = Trie(table, on_duplicate="first", _sort=2).arrays()
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        assert Trie(table, on_duplicate="first").lookup(table[7]) == 7


def test_behaviour_token_is_just_a_column():
    table = np.array([[100, 1, 2], [101, 1, 2], [100, 3, 4]])
    trie = Trie(table)
    np.testing.assert_array_equal(trie.children([]), [100, 101])
    np.testing.assert_array_equal(trie.children([100]), [1, 3])
    assert trie.lookup([101, 1, 2]) == 1
    assert trie.lookup([101, 3, 4]) == -1


def test_lookup_and_children_of_non_paths():
    trie = Trie(np.array([[1, 2], [1, 3]]))
    assert trie.lookup([2, 2]) == -1
    assert trie.lookup([-5, 2]) == -1
    assert trie.children([9]).size == 0
    assert trie.children([-1]).size == 0
    assert trie.children([1, 2, 3]).size == 0
    with pytest.raises(ValueError, match="2 tokens"):
        trie.lookup([1])


def test_duplicates_error_by_default_and_name_the_items():
    table = np.array([[1, 2], [3, 4], [1, 2], [3, 4], [3, 4]])
    with pytest.raises(ValueError, match=r"3 item\(s\) share.*items 0 and 2"):
        Trie(table)
    trie = Trie(table, on_duplicate="first")
    assert trie.n_duplicates == 3 and trie.n_paths == 2
    assert sorted(trie.duplicate_examples) == [(0, 2), (1, 3), (1, 4)]
    assert trie.lookup([3, 4]) == 1
    with pytest.warns(UserWarning, match="3 item"):
        Trie(table, on_duplicate="warn")
    with pytest.raises(ValueError, match="on_duplicate"):
        Trie(table, on_duplicate="ignore")


def test_vocabulary_and_input_validation():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Trie(np.array([[1, 2], [3, 10]]), vocab_size=10)
    Trie(np.array([[1, 2], [3, 9]]), vocab_size=10)
    with pytest.raises(ValueError, match="token id -1"):
        Trie(np.array([[1, -1]]))
    with pytest.raises(ValueError, match="2\\*\\*31"):
        Trie(np.array([[1, 2**31]]))
    with pytest.raises(TypeError, match="integer"):
        Trie(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="2-D"):
        Trie(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="empty"):
        Trie(np.zeros((0, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="at most 64"):
        Trie(np.zeros((2, 65), dtype=np.int32))
    with pytest.raises(ValueError, match="vocab_size"):
        Trie(np.array([[1]]), vocab_size=0)


def test_exported_at_top_level():
    assert gensar.Trie is Trie


@pytest.mark.slow
def test_one_million_items():
    rng = np.random.default_rng(0)
    table = random_table(rng, 1_000_000, 4, 256, behaviour=1000)
    table[:, 1:] += np.arange(4) * 256 + 1  # one token range per level
    trie = Trie(table, on_duplicate="first")
    assert trie.n_paths == len(np.unique(table, axis=0))
    for i in rng.integers(0, len(table), 100):
        assert (table[trie.lookup(table[i])] == table[i]).all()
