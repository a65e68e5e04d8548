"""Batched round scoring (ops dispatch) agrees with the per-model numpy / faiss scorers.

Tolerances: LogME atol=1e-8 (fp64 eigh of the Gram matrix vs SVD of F); kNN accuracies equal
exactly (same neighbours, same vote); rankings of whole searches identical.
"""

from __future__ import annotations

import numpy as np
import pytest

from poodle_vllm.ops import dispatch
from poodle_vllm.search import batch_scores
from poodle_vllm.search.config import SearchConfig
from poodle_vllm.search.features import FeatureExtractor
from poodle_vllm.search.scorers import knn_accuracy, logme
from poodle_vllm.search.search import search_models
from poodle_vllm.store.catalog import Catalog
from poodle_vllm.store.encoder import create_tiny_encoder
from poodle_vllm.store.importer import add_model
from poodle_vllm.store.zoo import build_variant_store

TEXTS = [f"{a} {b} {c}" for a in ("good", "great", "love", "bad", "awful", "hate")
         for b in ("very", "not", "the", "a") for c in ("movie", "film", "plot", "acting", "score")]  # fmt: skip
LABELS = ["pos" if t.split()[0] in ("good", "great", "love") else "neg" for t in TEXTS]


def _candidates(
    n: int, widths: list[int], seed: int = 0, classes: int = 3
) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    feats = []
    for i, d in enumerate(widths):
        centers = rng.normal(size=(classes, d))
        feats.append((0.3 * i * centers[y] + rng.normal(size=(n, d)) + 2.0).astype(np.float32))
    return feats, np.array([f"label{v}" for v in y])


@pytest.fixture(autouse=True)
def _torch_backend():
    with dispatch.use_backend("torch"):  # the CPU path, whatever the environment says
        yield


def test_logme_batched_matches_per_model_numpy():
    widths = [16, 24, 16, 70, 24]  # three width groups, one wider than n (rank-deficient Gram)
    feats, y = _candidates(60, widths)
    got = batch_scores.logme_batched(feats, y)
    want = [logme(f, y) for f in feats]
    np.testing.assert_allclose(got, want, atol=1e-8, rtol=1e-8)
    # split into one-candidate chunks: same numbers
    tiny = batch_scores.logme_batched(feats, y, max_bytes=1)
    np.testing.assert_allclose(tiny, got, atol=1e-12, rtol=0)


def test_knn_batched_matches_faiss_per_model():
    feats, y = _candidates(80, [8, 20, 12, 20], seed=1)
    for k in (1, 4, 10):
        got = batch_scores.knn_batched(feats, y, k=k)
        want = [knn_accuracy(f, y, k=k) for f in feats]
        assert got == pytest.approx(want, abs=1e-12)
    assert batch_scores.knn_batched(feats, y, k=4, max_bytes=1) == batch_scores.knn_batched(feats, y, k=4)


def test_knn_vote_ties_go_to_the_nearer_neighbours():
    # 2 nearest neighbours with different labels: the nearer one decides (faiss scorer's rule).
    x = np.array([[0, 1], [0, 1.1], [0, 0.85], [1, 0], [1.1, 0], [0.9, 0]], dtype=np.float32)
    y = np.array([1, 0, 1, 1, 0, 0])
    assert batch_scores.knn_batched([x], y, k=2) == [pytest.approx(knn_accuracy(x, y, k=2))]


def test_score_candidates_batched_equals_per_model_and_times_each_scorer():
    feats, y = _candidates(45, [10, 10, 14], seed=2, classes=2)
    named = {f"m{i}": f for i, f in enumerate(feats)}
    names = ["logme", "knn", "linear"]
    t_batched: dict[str, float] = {}
    batched = batch_scores.score_candidates(named, y, names, batched=True, device="cpu", timings=t_batched)
    per_model = batch_scores.score_candidates(named, y, names, batched=False, device="cpu")
    assert set(batched) == set(named) and set(t_batched) == set(names)
    for m in named:
        assert batched[m]["knn"] == per_model[m]["knn"] and batched[m]["linear"] == per_model[m]["linear"]
        assert batched[m]["logme"] == pytest.approx(per_model[m]["logme"], abs=1e-8)
    with pytest.raises(ValueError, match="unknown proxy scorer"):
        batch_scores.score_candidates(named, y, ["magic"])


@pytest.fixture(scope="module")
def variant_store(tmp_path_factory):
    """Two real tiny encoders of different widths plus every truncation x pooling as virtual variants."""
    root = tmp_path_factory.mktemp("batch-store")
    cat = Catalog(root / "store")
    add_model(cat, create_tiny_encoder(root / "src" / "narrow", num_layers=3, hidden_size=32, seed=0),
              "narrow", measure=False, num_parameters=1000)  # fmt: skip
    add_model(cat, create_tiny_encoder(root / "src" / "wide", num_layers=2, hidden_size=48, seed=1),
              "wide", measure=False, num_parameters=1000)  # fmt: skip
    return build_variant_store(cat, root / "variants")


def test_search_rankings_identical_batched_and_per_model(variant_store, tmp_path):
    base = dict(max_parameters=None, round_sizes=[40, 120], scorers=["logme", "knn", "linear"],
                warm_start=False, save_result=False, min_survivors=2)  # fmt: skip
    results = {}
    for batched in (False, True):
        ext = FeatureExtractor(variant_store, cache_dir=tmp_path / "cache")
        results[batched] = search_models(
            TEXTS, LABELS, variant_store, SearchConfig(batched_scoring=batched, **base), extractor=ext
        )
    per_model, batched = results[False], results[True]
    assert len(batched.ranking) == len(variant_store.ids()) == 10
    assert [c.model_id for c in batched.ranking] == [c.model_id for c in per_model.ranking]
    for ra, rb in zip(batched.rounds, per_model.rounds, strict=True):
        assert (ra["size"], ra["candidates"], ra["kept"]) == (rb["size"], rb["candidates"], rb["kept"])
        assert ra["combined"] == pytest.approx(rb["combined"], abs=2e-4)
    for a, b in zip(batched.ranking, per_model.ranking, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    assert {"scoring_logme", "scoring_knn", "scoring_linear"} <= set(batched.timing)


def test_round_extraction_runs_each_root_once(variant_store, tmp_path):
    ext = FeatureExtractor(variant_store, cache_dir=tmp_path / "c", use_cache=False)
    ids = list(reversed(variant_store.ids()))  # roots last: grouping must not depend on order
    got = ext.features_many(ids, TEXTS[:30])
    assert list(got) == ids
    widths = {f.shape[1] for f in got.values()}
    assert widths == {32, 48} and all(f.shape[0] == 30 for f in got.values())
    computed = {m: t.texts_computed for m, t in ext.timings.items() if t.texts_computed}
    assert len(computed) == 2 and all(v == 30 for v in computed.values())
    assert ext.total_timing().texts_cached == 30 * (len(ids) - 2)
    assert all(np.array_equal(got[m], ext.features(m, TEXTS[:30])) for m in ids)
