"""Export to HuggingFace: Seq2Seq.to_hf_t5(path) / GenSAR.to_hf_t5(path) write a directory
that transformers' T5ForConditionalGeneration.from_pretrained loads and that computes
gensar's logits (max abs difference <= 1e-4, float32 on both sides), and that
Seq2Seq.from_hf_t5(path) reads back bit for bit. The transformers checks skip when
torch or transformers is absent; the round trip and the errors run everywhere."""
import json

import numpy as np
import pytest

import gensar
from gensar import datasets
from gensar.seq2seq import Seq2Seq

from test_model import TINY as GENSAR_TINY
from test_model import unique_ids

CFG = dict(vocab_size=29, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=3, num_heads=4,
           relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0)
# (feed_forward_proj, tie_word_embeddings, scale_decoder_outputs); the last two are the
# pairings only transformers >= 5 can express (it reads scale_decoder_outputs).
VARIANTS = [("relu", True, None), ("gated-gelu", True, None), ("relu", False, None),
            ("gated-gelu", False, None), ("relu", True, False), ("gated-gelu", False, True)]
TOL = 1e-4  # max abs logit difference: float32 kernels summing in different orders


def random_model(proj, tied, scale, seed=0):
    m = Seq2Seq(dict(CFG, feed_forward_proj=proj, tie_word_embeddings=tied, scale_decoder_outputs=scale),
                seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name, v in m.named_params().items():  # non-trivial norms: a misplaced one would show
        if "layer_norm" in name:
            v[...] = 1.0 + 0.3 * rng.standard_normal(v.shape)
    return m


def trained_model(proj, tied, scale, steps=30):
    """A model moved away from its initialisation by training on a copy task."""
    m = random_model(proj, tied, scale, seed=3)
    rng = np.random.default_rng(4)
    for _ in range(steps):
        ids = rng.integers(3, CFG["vocab_size"], (8, 6)).astype(np.int32)
        m.train_step({"input_ids": ids, "labels": ids}, lr=3e-3)
    return m


def random_inputs(seed, V=CFG["vocab_size"], B=3, T_in=19, T_dec=17):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (B, T_in)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 11:] = 0
    dec = rng.integers(0, V, (B, T_dec)).astype(np.int32)  # past the exact position buckets
    dec[:, 0] = 0
    return ids, mask, dec


def hf_logits(hf, ids, mask, dec):
    import torch

    with torch.no_grad():
        return hf(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                  decoder_input_ids=torch.from_numpy(dec).long()).logits.numpy()


def transformers_or_skip(need_v5=False):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if need_v5 and int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("scale_decoder_outputs != tie_word_embeddings needs transformers >= 5")
    transformers.logging.set_verbosity_error()
    return transformers


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{'tied' if v[1] else 'untied'}-{v[2]}")
@pytest.mark.parametrize("make", [random_model, trained_model], ids=["random", "trained"])
def test_exported_seq2seq_loads_in_transformers_with_the_same_logits(tmp_path, make, variant):
    transformers = transformers_or_skip(need_v5=variant[2] is not None)
    m = make(*variant)
    out = m.to_hf_t5(tmp_path / "t5")
    assert out == tmp_path / "t5"
    hf = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    for seed in (1, 2):
        ids, mask, dec = random_inputs(seed)
        diff = np.abs(hf_logits(hf, ids, mask, dec) - m.logits(ids, mask, dec)).max()
        assert diff <= TOL, diff
    # the head HF built is the one exported: tied shares the embedding, untied does not
    tied_in_hf = hf.lm_head.weight.data_ptr() == hf.shared.weight.data_ptr()
    assert tied_in_hf == variant[1]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{'tied' if v[1] else 'untied'}-{v[2]}")
def test_export_then_from_hf_t5_gives_identical_state(tmp_path, variant):
    m = trained_model(*variant, steps=3)
    m.to_hf_t5(tmp_path / "t5")
    back = Seq2Seq.from_hf_t5(tmp_path / "t5")
    assert back.config == m.config
    a, b = m.named_params(), back.named_params()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ids, mask, dec = random_inputs(5)
    np.testing.assert_array_equal(back.logits(ids, mask, dec), m.logits(ids, mask, dec))
    files = json.loads((tmp_path / "t5" / "config.json").read_text())
    assert files["architectures"] == ["T5ForConditionalGeneration"] and files["model_type"] == "t5"


def test_transformers_save_pretrained_reads_back(tmp_path):
    """A checkpoint transformers itself saves (tied embeddings stored once) loads too."""
    transformers = transformers_or_skip()
    m = random_model("gated-gelu", True, None)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(m.to_hf_t5(tmp_path / "a")).eval()
    hf.save_pretrained(tmp_path / "b")
    back = Seq2Seq.from_hf_t5(tmp_path / "b")
    np.testing.assert_array_equal(back.params, m.params)


def test_to_hf_t5_without_path_is_the_state_dict():
    m = random_model("relu", True, None)
    sd = m.to_hf_t5()
    assert sd.keys() == m.hf_state_dict().keys()
    assert {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"} <= sd.keys()


def test_export_and_import_errors(tmp_path):
    m = random_model("relu", True, None)
    with pytest.raises(TypeError, match="path"):
        m.to_hf_t5(3)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        m.to_hf_t5(f)
    broken = random_model("relu", True, None)
    broken.named_params()["decoder.final_layer_norm.weight"][2] = np.nan
    with pytest.raises(ValueError, match="decoder.final_layer_norm.weight.*NaN"):
        broken.to_hf_t5(tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
    with pytest.raises(TypeError, match="config is required"):
        Seq2Seq.from_hf_t5(m.hf_state_dict())
    with pytest.raises(FileNotFoundError, match="it is a file"):
        Seq2Seq.from_hf_t5(f)
    d = m.to_hf_t5(tmp_path / "t5")
    (d / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config\.json is not a valid config"):
        Seq2Seq.from_hf_t5(d)
    (d / "config.json").write_text(json.dumps(dict(m.hf_config(), model_type="bert")))
    with pytest.raises(ValueError, match="not T5"):
        Seq2Seq.from_hf_t5(d)
    (d / "config.json").write_text(json.dumps(dict(m.hf_config(), d_ff=25)))
    with pytest.raises(ValueError, match=r"t5: .*wi.weight has shape"):
        Seq2Seq.from_hf_t5(d)
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[:100])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable"):
        Seq2Seq.from_hf_t5(d)
    (d / "model.safetensors").unlink()
    (d / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="sharded"):
        Seq2Seq.from_hf_t5(d)


# ------------------------------------------------------------------ GenSAR
@pytest.fixture(scope="module")
def fitted():
    ds = datasets.toy(n_users=24, n_items=30, events_per_user=8, seed=1)
    # HF T5 reads one token per position: identifiers as tokens (item bags refuse to export)
    model = gensar.GenSAR(**dict(GENSAR_TINY, item_bags=False)).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    return ds, model


def test_gensar_export_is_self_describing(tmp_path, fitted):
    from gensar.tokenizer import Tokenizer

    ds, model = fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        gensar.GenSAR(**GENSAR_TINY).to_hf_t5(tmp_path / "x")
    d = model.to_hf_t5(tmp_path / "hf")
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "id_layout.json"} <= names
    back = Seq2Seq.from_hf_t5(d)
    np.testing.assert_array_equal(back.params, model.seq2seq_.params)
    tok = Tokenizer.load(d)  # gensar reads the exported tokenizer and encodes as before
    prompts = model._rec_inputs([[ds.items["item_id"][0], ds.items["item_id"][3]], []])
    for a, b in zip(tok.encode(prompts, model._input_len()), model.tokenizer_.encode(prompts, model._input_len())):
        np.testing.assert_array_equal(a, b)


def test_gensar_export_in_transformers_gives_gensar_inputs_and_logits(tmp_path, fitted):
    transformers = transformers_or_skip()
    ds, model = fitted
    d = model.to_hf_t5(tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(d)
    hf = transformers.T5ForConditionalGeneration.from_pretrained(d).eval()
    ids_ = ds.items["item_id"]
    long_history = [ids_[i] for i in range(25)]  # longer than the input length: left truncation
    prompts = (model._rec_inputs([[ids_[0], ids_[3]], long_history]) +
               model._search_inputs(["some <pad> query </s>"], [[ids_[5]]]))
    ids, mask = model.tokenizer_.encode(prompts, model._input_len())
    enc = hf_tok(prompts, padding=True, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(enc["input_ids"], ids)
    np.testing.assert_array_equal(enc["attention_mask"], mask)
    # teacher-forced on the identifier of an item, as gensar's decoder reads it
    table = model._id_table("rec")
    dec = np.concatenate([np.zeros((len(prompts), 1), np.int32), table[[1, 2, 3]]], 1)
    diff = np.abs(hf_logits(hf, ids, mask, dec) - model.seq2seq_.logits(ids, mask, dec)).max()
    assert diff <= TOL, diff
