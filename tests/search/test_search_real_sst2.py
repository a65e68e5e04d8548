"""A real search on an SST-2 sample with the built zoo (slow; skipped when the zoo is absent)."""

from __future__ import annotations

import pytest

from poodle_vllm.search.config import SearchConfig
from poodle_vllm.search.features import FeatureExtractor
from poodle_vllm.search.search import search_models
from poodle_vllm.store.catalog import open_catalog

SENTIMENT, CONTROL = "minilm-l6-sst2", "random-bert-l6"


@pytest.mark.slow
def test_sentiment_tuned_model_beats_random_control(tmp_path):
    cat = open_catalog()
    if SENTIMENT not in cat or CONTROL not in cat:
        pytest.skip("zoo not built (run `poodle store build-zoo --quick`)")
    from poodle_vllm.train.data import examples_from_dataset

    texts, labels, _ = examples_from_dataset(
        "sst2", n=200, split="validation"
    )  # not the zoo's training split
    cfg = SearchConfig(include=[SENTIMENT, CONTROL, "all-minilm-l6-v2"], max_latency_ms=None, round_sizes=[100, 200],
                       save_result=False, warm_start=False)  # fmt: skip
    ext = FeatureExtractor(cat, cache_dir=tmp_path / "cache")
    result = search_models(texts, labels, cat, cfg, extractor=ext)
    ranks = {c.model_id: c.rank for c in result.ranking}
    assert ranks[SENTIMENT] < ranks[CONTROL]
    by_id = {c.model_id: c for c in result.ranking}
    assert by_id[SENTIMENT].predicted_accuracy > by_id[CONTROL].predicted_accuracy + 0.1
    assert result.timing["inference"] > 0
