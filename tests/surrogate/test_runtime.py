"""The surrogate runtime: calibrated predictions, truncation, and dynamic batching under load."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from poodle_vllm.surrogate.runtime import BatchingPredictor, SurrogateModel
from poodle_vllm.train.args import TrainingArguments
from poodle_vllm.train.toy import build_tiny_encoder, toy_sentiment_examples
from poodle_vllm.train.trainer import SurrogateTrainer


@pytest.fixture(scope="module")
def surrogate(tmp_path_factory) -> SurrogateModel:
    base = build_tiny_encoder(tmp_path_factory.mktemp("tiny"))
    texts, labels = toy_sentiment_examples(200, seed=2)
    args = TrainingArguments(
        max_length=24, epochs=5, learning_rate=3e-3, early_stopping_patience=0, num_threads=1
    )
    trainer = SurrogateTrainer(args)
    trainer.train(base, texts, labels)
    path = trainer.save(tmp_path_factory.mktemp("surrogate") / "v1", {"task_id": "toy"})
    return SurrogateModel.load(path, num_threads=1)


def test_predict_is_calibrated_and_reports_truncation(surrogate):
    texts, labels = toy_sentiment_examples(60, seed=7)
    long_text = "the movie " * 40 + "great"
    preds = surrogate.predict(texts + [long_text])
    assert len(preds) == 61
    assert sum(p.label == y for p, y in zip(preds, labels, strict=False)) >= 54
    for p in preds:
        assert set(p.probs) == {"negative", "positive"}
        assert abs(sum(p.probs.values()) - 1.0) < 1e-6
        assert p.confidence == max(p.probs.values()) and p.probs[p.label] == p.confidence
    assert preds[-1].truncated and not any(p.truncated for p in preds[:-1])
    assert surrogate.stats.truncated >= 1
    assert surrogate.predict([]) == []


def test_batching_predictor_matches_direct_predictions_under_concurrency(surrogate):
    texts, _ = toy_sentiment_examples(150, seed=8)
    expected = surrogate.predict(texts)
    with BatchingPredictor(surrogate, max_batch=16, window_ms=5.0) as batcher:
        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = list(pool.map(batcher.submit, texts))
        results = [f.result(timeout=60) for f in futures]
        assert batcher.batches < len(texts)  # requests really were batched
    for got, want in zip(results, expected, strict=False):
        assert got.label == want.label
        assert got.confidence == pytest.approx(want.confidence, abs=1e-5)


def test_bad_input_fails_only_its_own_future_and_thread_survives(surrogate):
    batcher = BatchingPredictor(surrogate, max_batch=8, window_ms=20.0)
    try:
        good = batcher.submit("the film was great")
        bad = batcher.submit(None)  # type: ignore[arg-type]  # the tokenizer rejects it
        also_good = batcher.submit("the film was awful")
        assert good.result(timeout=30).label == "positive"
        assert also_good.result(timeout=30).label == "negative"
        with pytest.raises(Exception):  # noqa: B017 - whatever the tokenizer raises reaches the caller
            bad.result(timeout=30)
        assert batcher.failed_batches >= 1
        assert batcher.predict("a boring plot", timeout=30).label == "negative"  # still alive
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("late")


def test_close_answers_queued_requests(surrogate):
    batcher = BatchingPredictor(surrogate, max_batch=4, window_ms=1.0)
    futures = [batcher.submit(t) for t in toy_sentiment_examples(20, seed=9)[0]]
    batcher.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert not batcher._thread.is_alive()


def test_measure_latency_per_batch_size(surrogate, capsys):
    """Records predict latency per batch size (printed; no timing assertions on a shared CPU)."""
    texts, _ = toy_sentiment_examples(64, seed=10)
    rows = []
    for size in (1, 4, 16, 32):
        surrogate.predict(texts[:size])  # warm-up
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            surrogate.predict(texts[:size])
        per_batch = (time.perf_counter() - t0) / reps
        rows.append((size, per_batch * 1e3, per_batch * 1e3 / size))
    with capsys.disabled():
        print("\nbatch  ms/batch  ms/item")
        for size, ms, per_item in rows:
            print(f"{size:5d}  {ms:8.2f}  {per_item:7.3f}")
    assert len(rows) == 4


def test_an_idle_batcher_does_not_wait_its_window_but_a_busy_one_batches(surrogate):
    texts, _ = toy_sentiment_examples(40, seed=11)
    with BatchingPredictor(surrogate, max_batch=8, window_ms=50.0) as batcher:
        batcher.predict(texts[0], timeout=30)
        assert batcher.windows_waited == 0  # a lone request runs at once
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = list(pool.map(batcher.submit, texts))
        assert all(f.result(timeout=60).label in {"negative", "positive"} for f in futures)
        assert batcher.batches < 1 + len(texts)  # the burst was batched
        assert batcher.windows_waited >= 1  # and, once busy, the window applied
