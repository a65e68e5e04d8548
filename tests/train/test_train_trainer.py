"""Fine-tuning, calibration, saving and reloading a surrogate (tiny random encoder: fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poodle_vllm.train.args import TrainingArguments
from poodle_vllm.train.artifact import (
    list_versions,
    load_metadata,
    save_surrogate_version,
)
from poodle_vllm.train.calibration import fit_temperature, nll
from poodle_vllm.train.toy import toy_sentiment_examples
from poodle_vllm.train.trainer import SurrogateTrainer, fine_tune

FAST = dict(
    max_length=32,
    epochs=6,
    learning_rate=3e-3,
    batch_size=16,
    early_stopping_patience=0,
    seed=0,
    num_threads=1,
)


@pytest.fixture(scope="module")
def trained(tiny_base):
    texts, labels = toy_sentiment_examples(240, seed=1)
    trainer = SurrogateTrainer(TrainingArguments(**FAST))
    events = []
    trainer.progress = events.append
    result = trainer.train(tiny_base, texts, labels)
    return trainer, result, events


def test_training_learns_the_toy_task(trained):
    trainer, result, events = trained
    assert result.best_val_agreement >= 0.9 > result.val_majority_share
    assert result.label_names == ["negative", "positive"] and result.steps > 0
    assert any(e["event"] == "eval" for e in events)
    test_texts, test_labels = toy_sentiment_examples(100, seed=99)
    ev = trainer.evaluate(test_texts, test_labels)
    assert ev.accuracy >= 0.9 and ev.items == 100 and ev.macro_f1 >= 0.85


def test_calibration_does_not_raise_validation_nll(trained):
    _, result, _ = trained
    cal = result.calibration
    assert cal is not None and cal.items == result.val_items
    assert cal.nll_after <= cal.nll_before + 1e-12


def test_fit_temperature_fixes_overconfident_logits():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, size=600)
    logits = rng.normal(size=(600, 3))
    logits[np.arange(600), targets] += 1.0  # informative but noisy ...
    logits *= 8.0  # ... and far too confident
    cal = fit_temperature(logits, targets)
    assert cal.temperature > 2.0
    assert cal.nll_after < 0.7 * cal.nll_before
    assert cal.nll_after == pytest.approx(nll(logits, targets, cal.temperature))
    assert cal.ece_after < cal.ece_before


def test_save_reloads_with_plain_transformers(trained, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    trainer, result, _ = trained
    path = trainer.save(tmp_path / "surrogate", {"task_id": "t1", "template_hash": "abc"})
    assert (path / "model.safetensors").exists()
    meta = load_metadata(path)
    assert meta.task_id == "t1" and meta.label_names == ["negative", "positive"]
    assert meta.calibration_temperature == pytest.approx(result.temperature)
    assert meta.max_length == 32 and meta.training_items == result.train_items

    texts, _ = toy_sentiment_examples(20, seed=5)
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    with torch.inference_mode():
        enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        plain = torch.softmax(model(**enc).logits / meta.calibration_temperature, -1).numpy()
    ours = trainer.predict_proba(texts)
    np.testing.assert_allclose(plain, ours, atol=1e-5)

    from poodle_vllm.surrogate.runtime import SurrogateModel

    sm = SurrogateModel.load(path)
    preds = sm.predict(texts)
    np.testing.assert_allclose([[p.probs["negative"], p.probs["positive"]] for p in preds], plain, atol=1e-5)
    assert [p.label for p in preds] == [["negative", "positive"][k] for k in plain.argmax(-1)]


def test_versions_and_failed_write_keep_previous(trained, tmp_path):
    trainer, _, _ = trained
    root = tmp_path / "surrogates"
    v1, p1 = save_surrogate_version(root, "t1", trainer.write_model, trainer.build_metadata(task_id="t1"))
    v2, p2 = save_surrogate_version(root, "t1", trainer.write_model, trainer.build_metadata(task_id="t1"))
    assert (v1, v2) == (1, 2) and p2.name == "v2" and load_metadata(p2).version == 2

    def broken(folder):
        trainer.write_model(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_surrogate_version(root, "t1", broken, trainer.build_metadata(task_id="t1"))
    assert list_versions(root, "t1") == [1, 2]
    assert sorted(p.name for p in (root / "t1").iterdir()) == ["v1", "v2"]  # no temp folder left
    assert json.loads((p1 / "poodle.json").read_text())["version"] == 1


def test_failed_save_over_existing_folder_keeps_it(trained, tmp_path, monkeypatch):
    trainer, _, _ = trained
    target = trainer.save(tmp_path / "s", {"task_id": "old"})
    before = (target / "model.safetensors").read_bytes()

    def broken(folder):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(trainer, "write_model", broken)
    with pytest.raises(RuntimeError):
        trainer.save(target, {"task_id": "new"})
    assert load_metadata(target).task_id == "old"
    assert (target / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_one_class_and_tiny_sets_are_refused(tiny_base):
    texts, labels = toy_sentiment_examples(100)
    with pytest.raises(ValueError, match="same label"):
        fine_tune(tiny_base, texts, ["positive"] * 100, TrainingArguments(**FAST))
    with pytest.raises(ValueError, match="at least"):
        fine_tune(tiny_base, texts[:5], labels[:5], TrainingArguments(**FAST))
    with pytest.raises(ValueError, match="two labels"):
        fine_tune(tiny_base, texts, ["positive"] * 99 + ["negative"], TrainingArguments(**FAST))
    with pytest.raises(ValueError, match="not in label_names"):
        SurrogateTrainer(TrainingArguments(**FAST)).train(tiny_base, texts, labels, ["positive", "neutral"])


def test_time_budget_and_truncation_are_reported(tiny_base, tmp_path):
    texts, labels = toy_sentiment_examples(120, seed=3)
    texts = [t + " the movie" * (30 if i % 4 == 0 else 0) for i, t in enumerate(texts)]
    args = TrainingArguments(**{**FAST, "epochs": 50, "time_budget_s": 0.5, "max_length": 16})
    result = fine_tune(tiny_base, texts, labels, args, output_dir=tmp_path / "out")
    assert result.stopped_reason == "time_budget" and result.epochs_run < 50
    assert result.truncated_share == pytest.approx(0.25, abs=0.01)
    assert result.output_dir == str(tmp_path / "out") and load_metadata(tmp_path / "out").max_length == 16


def test_training_is_deterministic(tiny_base):
    texts, labels = toy_sentiment_examples(80, seed=4)
    args = TrainingArguments(**{**FAST, "epochs": 2})
    a = SurrogateTrainer(args)
    a.train(tiny_base, texts, labels)
    b = SurrogateTrainer(args)
    b.train(tiny_base, texts, labels)
    np.testing.assert_allclose(a.predict_proba(texts[:10]), b.predict_proba(texts[:10]), atol=1e-6)


def test_soft_labels_train(tiny_base):
    texts, labels = toy_sentiment_examples(80, seed=6)
    soft = [[0.9, 0.1] if y == "negative" else [0.1, 0.9] for y in labels]
    trainer = SurrogateTrainer(TrainingArguments(**{**FAST, "epochs": 2, "soft_labels": True}))
    result = trainer.train(tiny_base, texts, labels, soft_labels=soft)
    assert result.steps > 0
