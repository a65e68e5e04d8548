"""Fine-tuning a real prepared encoder on a small real sample (slow: minutes on 2 CPU cores)."""

from __future__ import annotations

from collections import Counter

import pytest

from poodle_vllm.paths import resolve_paths
from poodle_vllm.train.args import TrainingArguments
from poodle_vllm.train.data import examples_from_dataset
from poodle_vllm.train.trainer import SurrogateTrainer


def prepared_encoder(*names: str):
    """The first prepared base encoder among ``names``, or skip the test."""
    models = resolve_paths().models
    for name in names:
        if (models / name / "config.json").exists():
            return models / name
    pytest.skip(f"no prepared base encoder among {names} under {models}")


@pytest.mark.slow
def test_real_encoder_on_sst2_beats_majority_and_calibrates(tmp_path):
    base = prepared_encoder("paraphrase-minilm-l3-v2", "all-minilm-l6-v2")
    texts, labels, names = examples_from_dataset("sst2", 400, "validation")
    test_texts, test_labels, _ = examples_from_dataset("sst2", 300, "test")
    args = TrainingArguments(max_length=48, epochs=2, batch_size=16, learning_rate=8e-5, num_threads=2)
    trainer = SurrogateTrainer(args)
    result = trainer.train(base, texts, labels, names)
    test = trainer.evaluate(test_texts, test_labels)
    majority = Counter(test_labels).most_common(1)[0][1] / len(test_labels)
    assert test.accuracy >= majority + 0.15, (test.accuracy, majority)
    assert result.calibration is not None
    assert result.calibration.nll_after <= result.calibration.nll_before

    from poodle_vllm.surrogate.runtime import SurrogateModel

    path = trainer.save(tmp_path / "sst2", {"task_id": "sst2"})
    reloaded = SurrogateModel.load(path)
    preds = reloaded.predict(test_texts[:40])
    direct = trainer.predict_proba(test_texts[:40]).argmax(-1)
    assert [p.label for p in preds] == [names[k] for k in direct]
