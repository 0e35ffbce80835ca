"""Save formats that cannot be half-written or silently mixed (issue 15).

GenSAR.save writes every file under a temporary name and renames it into place,
then manifest.json (size + sha256 of every file) last; GenSAR.load checks the
manifest and the files against each other and names the file at fault.
Seq2Seq files carry a checksum of their tensors in the safetensors metadata.
"""
import json
import shutil
import struct

import numpy as np
import pytest

import gensar
from gensar import datasets
from gensar._io import MANIFEST, sha256_file, verify_manifest, write_manifest
from gensar.model import GenSAR, _items_doc, _load_items
from gensar.seq2seq import Seq2Seq

from test_model import TINY, unique_ids

FILES = GenSAR._FILES


@pytest.fixture(scope="module")
def fitted():
    ds = datasets.toy(n_users=24, n_items=30, events_per_user=8, seed=1)
    model = gensar.GenSAR(**TINY).fit(ds, ids=unique_ids(ds.n_items), progress=False)
    return ds, model


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    d = tmp_path_factory.mktemp("saved") / "model"
    fitted[1].save(d)
    return d


@pytest.fixture
def copy(saved, tmp_path):
    """A fresh copy of the saved model directory that a test may damage."""
    d = tmp_path / "m"
    shutil.copytree(saved, d)
    return d


def remanifest(d):
    """Rewrites the manifest after a damaging edit: tests the checks behind it."""
    write_manifest(d, FILES, GenSAR._FORMAT, GenSAR._FORMAT_VERSION)


def flip_data_byte(path, frac=0.5):
    """Flips one byte in the data region (after the JSON header) of a safetensors file."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    pos = 8 + n + int((len(raw) - 8 - n) * frac)
    raw[pos] ^= 0x5A
    path.write_bytes(bytes(raw))


def rewrite_tensors(path, change):
    """Rewrites a Seq2Seq file with change(tensors) applied, keeping its metadata."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(path), metadata=meta)


# ------------------------------------------------------------------ the format
def test_manifest_lists_every_file_with_size_and_sha256(saved):
    doc = json.loads((saved / MANIFEST).read_text())
    assert doc["format"] == "gensar.GenSAR" and doc["format_version"] == 1
    assert doc["gensar_version"] == gensar.__version__
    assert sorted(doc["files"]) == sorted(FILES)
    for rel, meta in doc["files"].items():
        assert meta["size"] == (saved / rel).stat().st_size
        assert meta["sha256"] == sha256_file(saved / rel)
    # nothing half-written left behind: no temporary files
    assert not [p for p in saved.rglob("*") if ".tmp-" in p.name]


def test_round_trip_gives_the_same_answers(fitted, saved):
    ds, model = fitted
    ids = ds.items["item_id"].tolist()
    back = GenSAR.load(saved)
    np.testing.assert_array_equal(back.seq2seq_.params, model.seq2seq_.params)
    assert back.recommend([[ids[0], ids[3]]], k=5).equals(model.recommend([[ids[0], ids[3]]], k=5))
    assert back.search(["comedy"], k=3).equals(model.search(["comedy"], k=3))


def test_items_json_keeps_ids_exact():
    import pandas as pd

    for ids in (["001", "1e3", "7", "x"], np.array([2**63 + 5, 3, 2**64 - 1], np.uint64), [-4, 0, 9]):
        items = pd.DataFrame({"item_id": pd.Series(ids), "title": [f"t{i}" for i in range(len(ids))]})
        doc = _items_doc(items)
        back = _load_items_from(doc)
        assert back["item_id"].tolist() == items["item_id"].tolist()
        assert [type(v) for v in back["item_id"].tolist()] == [type(v) for v in items["item_id"].tolist()]
        if pd.api.types.is_integer_dtype(items["item_id"]):
            assert back["item_id"].dtype == items["item_id"].dtype


def _load_items_from(doc, tmp=None):
    import os
    import tempfile
    from pathlib import Path

    fd, name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        Path(name).write_text(json.dumps(doc))
        return _load_items(Path(name))
    finally:
        os.unlink(name)


# ------------------------------------------------------------------ atomic writes
def test_interrupted_save_keeps_the_old_file_and_leaves_no_temporary(fitted, copy, monkeypatch):
    _, model = fitted
    before = (copy / "ids.npz").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save(copy)
    assert (copy / "ids.npz").read_bytes() == before
    assert not [p for p in copy.rglob("*") if ".tmp-" in p.name]
    monkeypatch.undo()
    model.save(copy)  # a complete save afterwards gives a directory that loads
    GenSAR.load(copy)


def test_save_interrupted_after_some_files_cannot_load_as_a_mix(fitted, copy, monkeypatch):
    """A second save of a changed model dies after model.safetensors was replaced:
    the old manifest no longer matches, and load names that file."""
    from gensar.tokenizer import Tokenizer

    _, model = fitted
    old = model.seq2seq_.params.copy()
    model.seq2seq_.params[:10] += 0.5

    def boom(self, directory):
        raise OSError("disk full")

    monkeypatch.setattr(Tokenizer, "save", boom)
    try:
        with pytest.raises(OSError, match="disk full"):
            model.save(copy)
    finally:
        model.seq2seq_.params[:] = old
    with pytest.raises(ValueError, match=r"model.safetensors does not match the checksum saved in manifest.json"):
        GenSAR.load(copy)


# ------------------------------------------------------------------ damaged files, via the manifest
@pytest.mark.parametrize("rel", FILES)
def test_truncated_file_is_named(copy, rel):
    p = copy / rel
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{p.name} has \d+ bytes but \d+ were saved"):
        GenSAR.load(copy)


@pytest.mark.parametrize("rel", FILES)
def test_edited_file_of_the_same_size_is_named(copy, rel):
    p = copy / rel
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{p.name} does not match the checksum"):
        GenSAR.load(copy)


def test_missing_file_and_bad_manifest(copy):
    (copy / "items.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"items.json is missing"):
        GenSAR.load(copy)


def test_corrupt_or_foreign_manifest(copy):
    (copy / MANIFEST).write_text("{broken")
    with pytest.raises(ValueError, match=r"manifest.json is corrupt"):
        GenSAR.load(copy)
    remanifest(copy)
    doc = json.loads((copy / MANIFEST).read_text())
    doc["format_version"] = 99
    (copy / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format version 99; this gensar reads versions up to 1"):
        GenSAR.load(copy)
    doc["format_version"] = 1
    del doc["files"]["ids.npz"]
    (copy / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not list ids.npz"):
        GenSAR.load(copy)


# ------------------------------------------------------------------ the checks behind the manifest
def test_truncated_config_json_is_named(copy):
    p = copy / "config.json"
    p.write_text(p.read_text()[:40])
    remanifest(copy)
    with pytest.raises(ValueError, match=r"config.json is corrupt or invalid"):
        GenSAR.load(copy)


def test_edited_config_json_is_named(copy):
    p = copy / "config.json"
    cfg = json.loads(p.read_text())
    cfg["d_model"] = 64
    p.write_text(json.dumps(cfg))
    remanifest(copy)
    with pytest.raises(ValueError, match=r"config.json says d_model=64 but .*model.safetensors holds a model with d_model=32"):
        GenSAR.load(copy)
    cfg["d_model"], cfg["max_target_len"] = 32, 4
    p.write_text(json.dumps(cfg))
    remanifest(copy)
    with pytest.raises(ValueError, match=r"config.json: max_target_len=4 is shorter"):
        GenSAR.load(copy)
    cfg["max_target_len"], cfg["epochs"] = 24, 0
    p.write_text(json.dumps(cfg))
    remanifest(copy)
    with pytest.raises(ValueError, match=r"config.json is corrupt or invalid: epochs must be >= 1"):
        GenSAR.load(copy)


def test_ids_with_fewer_rows_than_items_is_named(copy):
    with np.load(copy / "ids.npz") as f:
        sem, col = f["semantic"], f["collaborative"]
    with open(copy / "ids.npz", "wb") as f:
        np.savez(f, semantic=sem[:-2], collaborative=col[:-2])
    remanifest(copy)
    with pytest.raises(ValueError, match=r"ids.npz does not fit .*items.json \(30 items\)"):
        GenSAR.load(copy)
    with open(copy / "ids.npz", "wb") as f:
        np.savez(f, semantic=sem.astype(np.float32), collaborative=col)
    remanifest(copy)
    with pytest.raises(ValueError, match=r"ids.npz: the semantic IDs have dtype float32"):
        GenSAR.load(copy)
    (copy / "ids.npz").write_bytes(b"not a zip")
    remanifest(copy)
    with pytest.raises(ValueError, match=r"ids.npz is corrupt"):
        GenSAR.load(copy)


def test_corrupt_items_and_tokenizer_are_named(copy):
    good = (copy / "items.json").read_bytes()
    (copy / "items.json").write_text('{"format": "gensar.items", "item_id": [1], "title": []}')
    remanifest(copy)
    with pytest.raises(ValueError, match=r"items.json is corrupt or invalid"):
        GenSAR.load(copy)
    (copy / "items.json").write_bytes(good)
    p = copy / "tokenizer" / "tokenizer.json"
    p.write_text(p.read_text()[:100])
    remanifest(copy)
    with pytest.raises(ValueError, match=r"tokenizer.json is corrupt or not a tokenizers file"):
        GenSAR.load(copy)


def test_flipped_bytes_nan_and_int_tensors_are_named(copy):
    p = copy / "model.safetensors"
    good = p.read_bytes()
    flip_data_byte(p)
    remanifest(copy)
    with pytest.raises(ValueError, match=r"model.safetensors: the tensor data does not match the checksum"):
        GenSAR.load(copy)

    def nan(t):
        t["shared.weight"] = t["shared.weight"].copy()
        t["shared.weight"][3, 1] = np.nan

    p.write_bytes(good)
    rewrite_tensors(p, nan)
    remanifest(copy)
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'shared.weight' holds 1 NaN/inf"):
        GenSAR.load(copy)

    def ints(t):
        t["lm_head.weight" if "lm_head.weight" in t else "shared.weight"] = np.zeros((2, 2), np.int32)

    p.write_bytes(good)
    rewrite_tensors(p, ints)
    remanifest(copy)
    with pytest.raises(ValueError, match=r"model.safetensors: tensor '.*' has dtype int32; .* float32"):
        GenSAR.load(copy)


def test_dataset_with_another_catalogue_is_refused(saved):
    other = datasets.toy(n_users=24, n_items=31, events_per_user=8, seed=1)
    with pytest.raises(ValueError, match="does not have the catalogue this model was trained on"):
        GenSAR.load(saved, dataset=other)
    with pytest.raises(TypeError, match="dataset must be a gensar.datasets.Dataset"):
        GenSAR.load(saved, dataset="toy")


# ------------------------------------------------------------------ older saves
def test_directory_without_manifest_loads_with_a_warning(fitted, copy):
    ds, model = fitted
    (copy / MANIFEST).unlink()
    with pytest.warns(UserWarning, match="no manifest.json"):
        back = GenSAR.load(copy)
    assert back.recommend([[ds.items["item_id"][0]]], k=3).equals(model.recommend([[ds.items["item_id"][0]]], k=3))
    # an old pandas-records items.json still reads, ids exact
    (copy / "items.json").write_text(model.items_.to_json(orient="records"))
    with pytest.warns(UserWarning):
        assert GenSAR.load(copy).items_["item_id"].tolist() == model.items_["item_id"].tolist()
    # and so does a save from before fit_info.json existed
    (copy / "fit_info.json").unlink()
    with pytest.warns(UserWarning, match="no manifest.json"):
        GenSAR.load(copy)


def test_seq2seq_file_without_checksum_loads_with_a_warning(fitted, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    _, model = fitted
    p = tmp_path / "m.safetensors"
    model.seq2seq_.save(p)
    with safe_open(str(p), framework="np") as f:
        meta = {k: v for k, v in f.metadata().items() if k not in ("gensar_sha256", "gensar_format_version")}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(p), metadata=meta)  # what Seq2Seq.save wrote before checksums
    with pytest.warns(UserWarning, match="before gensar stored checksums"):
        back = Seq2Seq.load(p)
    np.testing.assert_array_equal(back.params, model.seq2seq_.params)


# ------------------------------------------------------------------ Seq2Seq and DualIDs files
def test_seq2seq_load_names_the_path(fitted, tmp_path):
    _, model = fitted
    with pytest.raises(IsADirectoryError, match="is a directory, not a Seq2Seq file"):
        Seq2Seq.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors does not exist"):
        Seq2Seq.load(tmp_path / "nope.safetensors")
    p = tmp_path / "m.safetensors"
    model.seq2seq_.save(p)
    assert not [q for q in tmp_path.iterdir() if ".tmp-" in q.name]
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(ValueError, match="m.safetensors is not a readable safetensors file"):
        Seq2Seq.load(p)
    with pytest.raises(IsADirectoryError):
        model.seq2seq_.save(tmp_path)


def test_seq2seq_flipped_byte_detected_anywhere(fitted, tmp_path):
    _, model = fitted
    p = tmp_path / "m.safetensors"
    for frac in (0.0, 0.3, 0.999):
        model.seq2seq_.save(p)
        flip_data_byte(p, frac)
        with pytest.raises(ValueError, match="does not match the checksum|NaN/inf"):
            Seq2Seq.load(p)


def test_dual_ids_file_errors_name_the_file(tmp_path):
    from gensar.ids import DualIDs, make_synthetic_embeddings

    sem, col = make_synthetic_embeddings(60, semantic_dim=8, collaborative_dim=4, n_clusters=5, seed=0)[:2]
    ids = DualIDs(shared_levels=(8,), specific_levels=(16,), method="random", seed=0, progress=False).fit(sem, col)
    ids.save(tmp_path / "ids")  # np.savez's habit: ".npz" appended
    p = tmp_path / "ids.npz"
    back = DualIDs.load(p)
    np.testing.assert_array_equal(back.semantic_ids_, ids.semantic_ids_)
    assert not [q for q in tmp_path.iterdir() if ".tmp-" in q.name]
    p.write_bytes(p.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"ids.npz is corrupt or not a DualIDs file"):
        DualIDs.load(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DualIDs.load(tmp_path / "none.npz")
    with pytest.raises(IsADirectoryError):
        DualIDs.load(tmp_path)


def test_verify_manifest_none_without_manifest(tmp_path):
    assert verify_manifest(tmp_path, "x", 1, []) is None


# ------------------------------------------------------------------ training checkpoints
def test_checkpoint_holds_weights_and_trainer_state_in_one_file(tmp_path):
    """The trainer state travels in the checkpoint's metadata: a crash between two
    writes can no longer pair new weights with an old state."""
    from safetensors import safe_open

    from gensar.training import Trainer

    m = Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(3, 20, (4, 5)), "labels": rng.integers(3, 20, (4, 3))}
    t = Trainer(m, lambda e: [batch, batch], epochs=2, checkpoint_dir=tmp_path, progress=False)
    t.fit()
    with safe_open(str(tmp_path / "last" / "model.safetensors"), framework="np") as f:
        state = json.loads(f.metadata()["trainer_state"])
    assert state["epoch"] == 2 and state["step"] == 4
    (tmp_path / "last" / "trainer.json").write_text('{"epoch": 0}')  # stale: ignored
    m2 = Seq2Seq(dict(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    t2 = Trainer(m2, lambda e: [batch, batch], epochs=2, checkpoint_dir=tmp_path, progress=False)
    assert t2.resume() and t2.state.epoch == 2 and t2.state.step == 4
    np.testing.assert_array_equal(m2.params, m.params)
    p = tmp_path / "last" / "model.safetensors"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"checkpoint .*model.safetensors is unreadable"):
        t2.resume()
