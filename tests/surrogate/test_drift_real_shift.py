"""Drift on a real shift: a sentiment surrogate fed news articles in its template falls back.

A real encoder (paraphrase-MiniLM-L3) is fine-tuned on SST-2 sentences; its shadow phase sees
more SST-2 sentences. Served traffic from the same distribution (SST-2 dev) raises no alarm,
nor does a neighbouring one (rotten_tomatoes reviews); AG News articles sent through the same
template (the task's slot now holds news) shift the confidence histogram and the live quality
bookkeeping reports the fallback reason. Measured while writing it: PSI 0.08 (SST-2), 0.13
(rotten_tomatoes), 2.0 (AG News) against a 0.25 threshold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from poodle_vllm.config import ServingConfig
from poodle_vllm.core.policy import FIT
from poodle_vllm.surrogate.quality import TaskQuality
from poodle_vllm.types import RequestRecord, ServedBy

pytestmark = pytest.mark.slow


def _record(label: str | None, pred, served_by: str) -> RequestRecord:
    return RequestRecord(
        request_id="r",
        arrival_time=0.0,
        finish_time=0.0,
        prompt_token_ids=[],
        output_token_ids=[],
        finish_reason="stop",
        served_by=served_by,
        label=label,
        eligible=True,
        surrogate_label=pred.label,
        surrogate_confidence=pred.confidence,
    )


@pytest.fixture(scope="module")
def sentiment_surrogate(tmp_path_factory: pytest.TempPathFactory):
    from poodle_vllm.models import prepared_model_path
    from poodle_vllm.surrogate.runtime import SurrogateModel
    from poodle_vllm.train.args import TrainingArguments
    from poodle_vllm.train.data import examples_from_dataset
    from poodle_vllm.train.trainer import SurrogateTrainer

    try:
        base = prepared_model_path("paraphrase-minilm-l3-v2")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    texts, labels, _ = examples_from_dataset("sst2", 300, "train")
    args = TrainingArguments(max_length=48, epochs=2, early_stopping_patience=0, num_threads=2, seed=0)
    trainer = SurrogateTrainer(args)
    trainer.train(base, texts, labels)
    path = trainer.save(Path(tmp_path_factory.mktemp("drift")) / "v1", {"task_id": "sst2"})
    return SurrogateModel.load(path, num_threads=2)


def test_news_in_a_sentiment_template_is_confirmed_drift(sentiment_surrogate) -> None:
    from poodle_vllm.train.data import examples_from_dataset

    dev, dev_y, names = examples_from_dataset("sst2", None, "validation")
    news, _, _ = examples_from_dataset("ag_news", 200, "train")
    reviews, _, _ = examples_from_dataset("rotten_tomatoes", 200, "test")
    config = ServingConfig(shadow_requests=100, shadow_min_per_label=10, gate_target=0.0, drift_psi=0.25)
    quality = TaskQuality(config, names)
    # Shadow phase: the LLM's label beside the surrogate's prediction (gold stands in for the LLM).
    for pred, y in zip(sentiment_surrogate.predict(dev[:200]), dev_y[:200], strict=True):
        quality.observe("shadow", _record(y, pred, ServedBy.LLM.value), False, serving=False)
    assert quality.settle()[FIT].passed
    saved = quality.snapshot()

    def serve(texts: list[str]) -> str | None:
        q = TaskQuality(config, names)
        q.restore(saved)  # every traffic kind starts from the same persisted shadow reference
        for pred in sentiment_surrogate.predict(texts):
            q.observe("serve", _record(None, pred, ServedBy.SURROGATE.value), False, serving=True)
        return q.problem(FIT)

    assert serve(dev[200:400]) is None, "same distribution: no alarm"
    assert serve(reviews) is None, "movie reviews from another source: no alarm"
    problem = serve(news)
    assert problem is not None and problem.startswith("input drift confirmed"), problem
