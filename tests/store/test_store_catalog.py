"""Catalog, importer, lineage, fingerprints and zoo helpers on tiny random encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poodle_vllm.store.catalog import Catalog, ModelEntry
from poodle_vllm.store.encoder import create_tiny_encoder
from poodle_vllm.store.fingerprint import PROBE_SENTENCES, FingerprintIndex, fingerprint_from_embeddings
from poodle_vllm.store.importer import add_model, import_prepared, is_encoder_folder, update_fingerprints
from poodle_vllm.store.zoo import (
    build_variant_store,
    make_random_control,
    materialize_truncation,
    normalise_sentence,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    tiny = create_tiny_encoder(root / "src" / "tiny", num_layers=4, seed=0)
    cat = Catalog(root / "store")
    add_model(cat, tiny, "tiny", measure=False)
    materialize_truncation(cat, "tiny", 2, measure=False)
    make_random_control(cat, "tiny", "rand", measure=False)
    return cat


def test_catalog_roundtrip_and_atomic_file(tmp_path):
    cat = Catalog(tmp_path)
    cat.put(ModelEntry(id="a", path=str(tmp_path), num_parameters=5, task_tags=["x"], recipe={"k": 1}))
    again = Catalog(tmp_path)
    assert again.get("a").recipe == {"k": 1} and again.get("a").task_tags == ["x"]
    assert json.loads((tmp_path / "catalog.json").read_text())["version"] == 1
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(KeyError, match="not in the store"):
        again.get("missing")
    with pytest.raises(ValueError, match="parent"):
        again.put(ModelEntry(id="b", parent="nope", parent_layer=1))


def test_add_model_reads_metadata_and_measures(tmp_path):
    tiny = create_tiny_encoder(tmp_path / "m", num_layers=2, hidden_size=32)
    (tiny / "poodle-model.json").write_text(json.dumps({"name": "My Model", "description": "tiny, MIT"}))
    cat = Catalog(tmp_path / "s")
    e = add_model(cat, tiny)
    assert e.id == "my-model" and e.architecture == "bert" and e.hidden_size == 32 and e.num_layers == 2
    assert e.license == "MIT" and e.size_bytes > 0 and len(e.weights_sha) == 16
    assert e.latency_ms_128 is not None and e.latency_ms_128 > 0 and e.latency_ms_256 is not None
    # parameters: what torch counts for the bare encoder
    from transformers import AutoModel

    assert e.num_parameters == sum(p.numel() for p in AutoModel.from_pretrained(str(tiny)).parameters())


def test_import_prepared_skips_non_encoders(tmp_path):
    create_tiny_encoder(tmp_path / "models" / "enc-a", num_layers=1)
    (tmp_path / "models" / "llm").mkdir()
    (tmp_path / "models" / "llm" / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"]})
    )
    assert not is_encoder_folder(tmp_path / "models" / "llm")
    cat = Catalog(tmp_path / "s")
    assert import_prepared(cat, tmp_path / "models", measure=False) == ["enc-a"]
    assert import_prepared(cat, tmp_path / "models", measure=False) == []  # idempotent


def test_truncation_lineage(store):
    e = store.get("tiny-l2")
    assert e.kind == "truncated" and e.parent == "tiny" and e.parent_layer == 2 and e.num_layers == 2
    root, layer = store.lineage_root("tiny-l2")
    assert root.id == "tiny" and layer == 2
    assert store.get("tiny-l2").num_parameters < store.get("tiny").num_parameters
    assert store.get("rand").kind == "random" and store.get("rand").parent is None


def test_fingerprints_and_similarity(store):
    update_fingerprints(store)
    for e in store.entries():
        assert len(e.fingerprint) == len(PROBE_SENTENCES) * (len(PROBE_SENTENCES) - 1) // 2
    index = FingerprintIndex.from_entries(store.entries())
    hits = index.similar("tiny", k=2)
    assert {m for m, _ in hits} == {"tiny-l2", "rand"}
    # a truncation of a model is more like it than an unrelated random model
    assert hits[0][0] == "tiny-l2"
    clusters = index.cluster(2)
    assert clusters["tiny"] == clusters["tiny-l2"] != clusters["rand"]


def test_fingerprint_invariant_to_rotation_and_size():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(36, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    lifted = np.concatenate([x @ q * 3.0, np.zeros((36, 8))], axis=1)  # rotated, scaled, wider
    a, b = fingerprint_from_embeddings(x), fingerprint_from_embeddings(lifted)
    assert a.shape == b.shape and float(a @ b) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(a @ fingerprint_from_embeddings(rng.normal(size=(36, 16))))) < 0.3


def test_variant_store_is_virtual_with_lineage(store, tmp_path):
    v = build_variant_store(store, tmp_path / "v")
    ids = set(v.ids())
    assert {"tiny@l1-mean", "tiny@l3-cls", "tiny@l4-cls"} <= ids and "tiny@l4-mean" not in ids
    e = v.get("tiny@l3-cls")
    assert e.path is None and e.pooling == "cls" and v.lineage_root(e.id)[1] == 3


def test_normalise_sentence_matches_ptb_tokens():
    assert normalise_sentence("it wo n't -lrb- really -rrb- work .") == normalise_sentence(
        "It won't (really) work."
    )
