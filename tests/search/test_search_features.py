"""Feature cache hits, shared-layer reuse and constraints, on tiny random encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poodle_vllm.search.config import SearchConfig
from poodle_vllm.search.features import FeatureExtractor
from poodle_vllm.search.search import HISTORY_FILE, filter_candidates, search_models, stratified_order
from poodle_vllm.store.catalog import Catalog
from poodle_vllm.store.encoder import create_tiny_encoder
from poodle_vllm.store.importer import add_model
from poodle_vllm.store.zoo import make_random_control, materialize_truncation

TEXTS = [f"{a} {b} {c}" for a in ("good", "great", "love", "bad", "awful", "hate")
         for b in ("very", "not", "the", "a") for c in ("movie", "film", "plot", "acting", "score")]  # fmt: skip
LABELS = ["pos" if t.split()[0] in ("good", "great", "love") else "neg" for t in TEXTS]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("search-store")
    tiny = create_tiny_encoder(root / "src" / "tiny", num_layers=4, seed=0)
    cat = Catalog(root / "store")
    add_model(cat, tiny, "tiny", measure=False, latency_ms_128=5.0, num_parameters=1000)
    materialize_truncation(cat, "tiny", 2, measure=False)
    make_random_control(cat, "tiny", "rand", measure=False)
    cat.get("tiny-l2").latency_ms_128 = 3.0
    cat.get("rand").latency_ms_128 = 50.0
    cat.save()
    return cat


def test_cache_hit_returns_identical_features(store, tmp_path):
    ext = FeatureExtractor(store, cache_dir=tmp_path / "c")
    a = ext.features("tiny", TEXTS[:20])
    assert ext.timings["tiny"].texts_computed == 20
    b = ext.features("tiny", TEXTS[:20])
    assert ext.timings["tiny"].texts_computed == 20 and ext.timings["tiny"].texts_cached == 20
    assert np.array_equal(a, b)
    # a new extractor (new process) reads the disk cache; no model is loaded
    ext2 = FeatureExtractor(store, cache_dir=tmp_path / "c")
    c = ext2.features("tiny", TEXTS[:20])
    assert (
        np.array_equal(a, c) and ext2.timings["tiny"].texts_computed == 0 and ext2.timings["tiny"].load_s == 0
    )


def test_shared_layers_equal_the_truncated_model(store, tmp_path):
    shared = FeatureExtractor(store, cache_dir=tmp_path / "s")
    parent = shared.features("tiny", TEXTS)
    via_parent = shared.features("tiny-l2", TEXTS)
    assert shared.timings["tiny-l2"].texts_computed == 0  # all from the parent's pass
    own = FeatureExtractor(store, use_cache=False, share_layers=False).features("tiny-l2", TEXTS)
    np.testing.assert_allclose(via_parent, own, rtol=1e-5, atol=1e-5)
    assert not np.allclose(parent, via_parent)


def test_constraints_exclude_models(store):
    cands, excluded = filter_candidates(store, SearchConfig(max_latency_ms=10.0))
    assert "rand" in excluded and "latency" in excluded["rand"]
    assert {e.id for e in cands} == {"tiny", "tiny-l2"}
    cands, excluded = filter_candidates(store, SearchConfig(max_latency_ms=None, max_parameters=2000))
    assert {e.id for e in cands} == {"tiny"} and "parameters" in excluded["tiny-l2"]
    cands, _ = filter_candidates(store, SearchConfig(max_latency_ms=None, exclude=["tiny"], kinds=["random"]))
    assert [e.id for e in cands] == ["rand"]


def test_search_ranks_and_times_and_saves(store):
    cfg = SearchConfig(max_latency_ms=None, round_sizes=[40, 120], scorers=["logme", "knn", "linear"])
    result = search_models(TEXTS, LABELS, store, cfg, task_name="tiny-sentiment")
    ids = [c.model_id for c in result.ranking]
    assert sorted(ids) == ["rand", "tiny", "tiny-l2"]
    assert set(result.timing) >= {"load", "inference", "scoring", "total"}
    assert all(c.predicted_accuracy is not None for c in result.ranking)
    lines = (store.root / HISTORY_FILE).read_text().splitlines()
    assert json.loads(lines[-1])["task_name"] == "tiny-sentiment"
    # the second search of the same task warm-starts from the first one's winners
    again = search_models(TEXTS, LABELS, store, cfg)
    assert again.warm_start_from and again.warm_start_from[0] == ids[0]


def test_stratified_order_prefixes_are_balanced():
    labels = ["a"] * 80 + ["b"] * 20
    order = stratified_order(labels, seed=1)
    assert sorted(order) == list(range(100))
    first = [labels[i] for i in order[:20]]
    assert 14 <= first.count("a") <= 18


def test_search_rejects_bad_input(store):
    with pytest.raises(ValueError, match="two distinct labels"):
        search_models(TEXTS, ["x"] * len(TEXTS), store)
    with pytest.raises(ValueError, match="passes the constraints"):
        search_models(TEXTS, LABELS, store, SearchConfig(max_parameters=1))


def test_cluster_pruning_on_virtual_variants(store, tmp_path):
    from poodle_vllm.store.importer import update_fingerprints
    from poodle_vllm.store.zoo import build_variant_store

    vcat = build_variant_store(store, tmp_path / "v", roots=["tiny", "rand"])
    ext = FeatureExtractor(vcat, cache_dir=tmp_path / "c")
    update_fingerprints(vcat, ext)
    cfg = SearchConfig(max_latency_ms=None, round_sizes=[40, 120], cluster_prune=True, n_clusters=3,
                       cluster_keep=0.34, save_result=False, warm_start=False)  # fmt: skip
    result = search_models(TEXTS, LABELS, vcat, cfg, extractor=ext)
    assert result.pruned_by_cluster and result.clusters is not None
    scored = {c.model_id for c in result.ranking}
    assert scored.isdisjoint(result.pruned_by_cluster)
    assert scored | set(result.pruned_by_cluster) == set(vcat.ids())
    # every variant's features came from the two real models' passes
    assert {m for m, t in ext.timings.items() if t.texts_computed} <= {"tiny", "rand"} | {
        m for m in vcat.ids() if vcat.lineage_root(m)[0].id in ("tiny", "rand")
    }
    assert ext.total_timing().texts_computed <= 2 * (len(TEXTS) + 36)
