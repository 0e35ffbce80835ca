import numpy as np
import pytest

from gensar.tokenizer import IDLayout, Tokenizer

TEXTS = ["toy story (1995) animation children comedy", "golden eye action adventure thriller",
         "four rooms thriller", "get shorty action comedy drama"] * 5


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS, IDLayout((4, 3), (5, 2), (6, 2)), vocab_size=120, min_frequency=1)


def test_identifier_tokens_are_atomic_and_per_level(tok):
    codes = np.array([[1, 2, 3, 1], [3, 0, 4, 0]])
    sem = tok.id_token_ids("semantic", codes, behaviour="<src_item>")
    col = tok.id_token_ids("collaborative", codes)
    assert sem.shape == (2, 5) and col.shape == (2, 4)
    assert sem[0, 0] == tok.behaviour_ids["<src_item>"]
    assert np.array_equal(sem[:, 1:3], col[:, :2])  # the shared prefix is the same tokens
    assert not np.intersect1d(sem[:, 3:], col[:, 2:]).size  # the tails are different tokens
    s = tok.id_strings("semantic", codes)[0]
    assert s == "<a_1><b_2><c_3><d_1>"
    ids, mask = tok.encode([f"<src_item>{s}; next"], max_length=32, eos=False)
    assert ids[0, :5].tolist() == sem[0].tolist()


def test_encode_pads_truncates_from_the_left_and_decodes(tok):
    ids, mask = tok.encode(["toy story", "four rooms thriller comedy drama"], max_length=4)
    assert ids.shape == (2, 4) and ids.dtype == np.int32
    assert mask[0].tolist()[-1] == 0 and ids[1, -1] == tok.eos_id
    assert tok.decode(ids[0]) == "toy story"
    assert tok.decode(ids[1]).endswith("drama")  # newest end kept


# Texts whose pieces could split differently in context than alone: identifiers glued
# to words and punctuation, runs of spaces, other whitespace, accents, case, CJK,
# an over-long word, a lone surrogate, an identifier-like word with a space inside.
TRICKY = ["<src_item><a_1><b_2><c_3><d_1>; <rec_item><a_0><b_0>toy;story", "  four   rooms ",
          "Toy\tStory\n(1995)", "Ünïcödé ΣΑΣ café e \u0301x 中文字", "\u00a0golden\u3000eye",
          "x" * 150 + " thriller", "get\ud800shorty", "< a_1> <a_1 > <a_9>", "", " ", ";;(){}"]


def test_chunk_cache_encodes_exactly_as_the_backend(tok):
    # encode() and token_counts() go through a cache of space-separated chunks; a
    # text's ids must be exactly what the backend makes of the whole text.
    texts = TRICKY + [f"<rec_item>{a} {b}; {c}" for a, b, c in zip(TEXTS, TEXTS[1:], TEXTS[2:])]
    whole = [e.ids for e in tok._encode_whole(texts)]
    tok._chunk_ids.clear()
    assert tok._token_ids(texts) == whole  # cold cache
    assert tok._token_ids(texts[::-1]) == whole[::-1]  # warm cache
    assert tok.token_counts(texts).tolist() == [len(w) for w in whole]
    ids, mask = tok.encode(texts, max_length=64)
    for row, m, w in zip(ids, mask, whole):
        assert row[:m.sum()].tolist() == w + [tok.eos_id] and not row[m.sum():].any()


def test_chunk_cache_falls_back_and_stays_bounded(tok, monkeypatch):
    from tokenizers import pre_tokenizers

    monkeypatch.setattr(Tokenizer, "_CHUNK_CACHE_LIMIT", 8)
    tok._chunk_ids.clear()
    tok._token_ids(TRICKY[:2])
    # Past the limit the cache starts over with the chunks of the texts at hand.
    texts = TRICKY[2:4]
    assert tok._token_ids(texts) == [e.ids for e in tok._encode_whole(texts)]
    assert set(tok._chunk_ids) == {c for t in texts for c in t.split(" ")}
    # A backend whose pre-tokenizer does not split at spaces is encoded whole.
    other = Tokenizer(tok.backend.__class__.from_str(tok.backend.to_str()), tok.layout)
    other.backend.pre_tokenizer = pre_tokenizers.Metaspace()
    assert Tokenizer(other.backend, tok.layout)._chunk_ids is None
    with pytest.raises(TypeError, match="list of strings"):
        tok.token_counts("one string")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        tok.token_counts(["a", 3])


def test_save_load_roundtrip(tok, tmp_path):
    tok.save(tmp_path)
    back = Tokenizer.load(tmp_path)
    assert back.layout == tok.layout and back.vocab_size == tok.vocab_size
    assert np.array_equal(back.encode(TEXTS[:3], 16)[0], tok.encode(TEXTS[:3], 16)[0])


def test_tokenizer_bad_input(tok, tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        tok.id_token_ids("semantic", np.array([[4, 0, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        tok.id_token_ids("semantic", np.array([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="kind"):
        tok.id_token_ids("textual", np.zeros((1, 4), int))
    with pytest.raises(TypeError, match="integers"):
        tok.id_token_ids("semantic", np.zeros((1, 4)))
    with pytest.raises(TypeError, match="list of strings"):
        tok.encode("one string", 8)
    with pytest.raises(ValueError, match="at least one"):
        Tokenizer.train([], vocab_size=200)
    with pytest.raises(FileNotFoundError, match="Tokenizer.save"):
        Tokenizer.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="same number of levels"):
        IDLayout((2,), (2, 2), (2,))


def test_history_separator_survives_tokenisation():
    """";" is in no training text here, yet it must tokenise to itself, not <unk>."""
    from gensar.tokenizer import HISTORY_SEPARATOR

    assert ";" not in "".join(TEXTS)
    t = Tokenizer.train(TEXTS, IDLayout((2,), (2,), (2,)), vocab_size=120, min_frequency=1)
    text = HISTORY_SEPARATOR.join(["<rec_item><a_1><b_0>", "<src_query> four rooms <src_item><a_0><c_1>",
                                   "(no history yet)"])
    enc = t.backend.encode(text, add_special_tokens=False)
    assert t.unk_id not in enc.ids
    assert enc.tokens.count(";") == 2
    assert t.decode(t.encode([text], 64, eos=False)[0][0]).count(";") == 2


def test_bag_identifiers_fold_each_identifier_into_one_position(tok):
    codes = np.array([[1, 2, 3, 1], [3, 0, 4, 0]])
    col = tok.id_token_ids("collaborative", codes, behaviour="<rec_item>")
    sem = tok.id_token_ids("semantic", codes[1:], behaviour="<src_item>")[0]
    rec, src = tok.id_strings("collaborative", codes), tok.id_strings("semantic", codes[1:])[0]
    texts = [f"history: <rec_item>{rec[0]}; <src_query> toy story <src_item>{src}; <rec_item>{rec[1]}. next",
             "four rooms"]
    ids, mask = tok.encode(texts, max_length=64)
    bags, bmask = tok.bag_identifiers(ids, mask)
    assert bags.shape[2] == tok.bag_width == 5 and bags.dtype == np.int32 and bmask.dtype == np.int32
    L = tok.layout.length
    # three identifiers of L + 1 tokens became three positions
    assert bmask[0].sum() == mask[0].sum() - 3 * L and bmask[1].sum() == mask[1].sum()
    rows = bags[0][bmask[0] == 1]
    full = [r for r in rows if (r >= 0).all()]
    assert [r.tolist() for r in full] == [col[0].tolist(), sem.tolist(), col[1].tolist()]
    # every other position is one token, the same tokens in the same order
    flat = [t for r in rows for t in r.tolist() if t >= 0]
    assert flat == ids[0][mask[0] == 1].tolist()
    assert (bags[1][bmask[1] == 1][:, 1:] == -1).all()
    assert (bags[bmask == 0][:, 0] == tok.pad_id).all() and (bags[bmask == 0][:, 1:] == -1).all()


def test_bag_identifiers_recency_slot_counts_identifiers_from_the_newest(tok):
    codes = np.array([[1, 2, 3, 1], [3, 0, 4, 0]])
    rec, src = tok.id_strings("collaborative", codes), tok.id_strings("semantic", codes[1:])[0]
    texts = [f"history: <rec_item>{rec[0]}; <src_query> toy story <src_item>{src}; <rec_item>{rec[1]}. next",
             f"<rec_item>{rec[1]} only", "no identifier"]
    ids, mask = tok.encode(texts, max_length=64)
    plain, pmask = tok.bag_identifiers(ids, mask)
    bags, bmask = tok.bag_identifiers(ids, mask, recency=2)
    assert bags.shape[2] == tok.bag_width + 1
    np.testing.assert_array_equal(bags[:, :, :-1], plain)  # the other slots are unchanged
    np.testing.assert_array_equal(bmask, pmask)
    V = tok.vocab_size
    is_id = plain[:, :, 1] >= 0
    # row 0: three identifiers, newest last: ranks 2, 1, 0, with 2 clipped to R - 1 = 1
    assert bags[0, is_id[0], -1].tolist() == [V + 1, V + 1, V + 0]
    assert bags[1, is_id[1], -1].tolist() == [V + 0]
    assert (bags[~is_id][:, -1] == -1).all() and not is_id[2].any()
    wide = tok.bag_identifiers(ids, mask, recency=10)[0]
    assert wide[0, is_id[0], -1].tolist() == [V + 2, V + 1, V + 0]
    with pytest.raises(ValueError, match="recency"):
        tok.bag_identifiers(ids, mask, recency=-1)


def test_bag_identifiers_cut_code_runs_longer_than_a_bag(tok):
    codes = np.array([[1, 2, 3, 1]])
    two = "".join(tok.id_strings("collaborative", codes)) * 2  # 8 codes after one behaviour token
    ids, mask = tok.encode([f"<rec_item>{two}"], max_length=64, eos=False)
    bags, bmask = tok.bag_identifiers(ids, mask)
    assert bmask.sum() == 2 and (bags[0, 0] >= 0).all() and (bags[0, 1, :4] >= 0).all()
    assert [t for t in bags[0].ravel().tolist() if t >= 0] == ids[0].tolist()
    with pytest.raises(ValueError, match="same shape|one shape"):
        tok.bag_identifiers(ids, mask[:, :2])
