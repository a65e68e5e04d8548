"""Training arguments, data from the log and from the public datasets, stratified splits."""

from __future__ import annotations

from collections import Counter

import pytest

from poodle_vllm.train.args import TrainingArguments
from poodle_vllm.train.data import (
    dataset_splits,
    examples_from_dataset,
    examples_from_records,
    load_task_examples,
    stratified_split,
)
from poodle_vllm.types import RequestRecord


def rec(i: int, text: str | None, label: str | None, *, task: str = "t1", eligible=True, served_by="llm"):
    return RequestRecord(
        request_id=f"r{i}",
        arrival_time=float(i),
        finish_time=float(i) + 0.1,
        prompt_token_ids=[1, 2, 3],
        output_token_ids=[4],
        finish_reason="stop",
        task_id=task,
        slot_text=text,
        label=label,
        eligible=eligible,
        served_by=served_by,
    )


def sample_records() -> list[RequestRecord]:
    return [
        rec(0, "great film", "positive"),
        rec(1, "great film", "positive"),  # duplicate, same label
        rec(2, "great film", "negative"),  # duplicate, minority label
        rec(3, "awful film", "Negative "),  # case / whitespace alias
        rec(4, "meh", None),  # unparseable
        rec(5, "meh2", "neutral"),  # outside the label space
        rec(6, "from surrogate", "positive", served_by="surrogate"),
        rec(7, "hot sampling", "positive", eligible=False),
        rec(8, "other task", "positive", task="t2"),
        rec(9, None, "positive"),  # no slot text
        rec(10, "fine film", "positive"),
    ]


def test_training_arguments_validate_and_from_dict():
    args = TrainingArguments.from_dict({"max_length": 64, "epochs": 2})
    assert args.max_length == 64 and args.validate() is args
    with pytest.raises(ValueError, match="unknown training argument"):
        TrainingArguments.from_dict({"epoch": 2})
    with pytest.raises(ValueError):
        TrainingArguments(val_fraction=0.0).validate()


def test_examples_from_records_filters_and_deduplicates():
    texts, labels, report = examples_from_records(sample_records(), "t1", ["negative", "positive"])
    assert dict(zip(texts, labels, strict=False)) == {
        "great film": "positive",
        "awful film": "negative",
        "fine film": "positive",
    }
    assert report.records_read == 11 and report.task_records == 10
    assert (report.unparseable, report.outside_space, report.not_llm, report.ineligible) == (1, 1, 1, 1)
    assert report.missing_text == 1 and report.duplicates_merged == 2 and report.conflicting_texts == 1
    assert report.kept == 3 and report.label_counts == {"positive": 2, "negative": 1}


def test_load_task_examples_reads_arrow_log_and_reports_torn_tail(tmp_path):
    from poodle_vllm.arrowlog import ArrowLogWriter

    log_dir = tmp_path / "logs"
    with ArrowLogWriter(log_dir) as writer:
        for r in sample_records():
            assert writer.submit(r)
    texts, labels, report = load_task_examples(log_dir, "t1", ["negative", "positive"])
    assert sorted(texts) == ["awful film", "fine film", "great film"] and report.log_errors == []

    # A file cut short mid-batch: earlier files stay readable and the damage is reported.
    files = sorted(log_dir.iterdir())
    damaged = log_dir / (files[0].name.replace("requests", "requests-z"))
    damaged.write_bytes(files[0].read_bytes()[:-40])
    _, _, report2 = load_task_examples(log_dir, "t1", ["negative", "positive"])
    assert report2.kept == 3 and report2.log_errors

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / files[0].name).write_bytes(b"not an arrow file at all")
    with pytest.raises(ValueError, match="corrupt"):
        load_task_examples(garbage, "t1", ["negative", "positive"])
    with pytest.raises(FileNotFoundError):
        load_task_examples(tmp_path / "missing", "t1", ["negative", "positive"])


def test_stratified_split_keeps_every_label_in_both_parts():
    labels = ["a"] * 90 + ["b"] * 10
    train, val = stratified_split(labels, 0.2, seed=1)
    assert sorted(train + val) == list(range(100))
    assert Counter(labels[i] for i in val) == {"a": 18, "b": 2}
    assert stratified_split(labels, 0.2, seed=1) == (train, val)


@pytest.mark.parametrize("name", ["imdb", "rotten_tomatoes", "sst2", "ag_news"])
def test_dataset_splits_are_fixed_and_disjoint(name):
    splits = dataset_splits(name)
    train_texts = {t for t, _ in splits["train"]}
    test_texts = [t for t, _ in splits["test"]]
    assert len(splits["test"]) >= 800
    if name != "sst2":  # sst2's official splits share a few duplicate sentences
        assert not train_texts.intersection(test_texts)
    texts, labels, names = examples_from_dataset(name, 50)
    assert len(texts) == 50 and set(labels) <= set(names)
    assert examples_from_dataset(name, 50)[0] == texts  # same seed, same items
    assert examples_from_dataset(name, 20)[0] == texts[:20]  # nested subsets


def test_imdb_split_sizes():
    splits = dataset_splits("imdb")
    # 5,000 reviews minus a few exact duplicates; at most 4,000 for training.
    assert 3990 <= len(splits["train"]) <= 4000 and len(splits["test"]) == 1000
    with pytest.raises(ValueError):
        examples_from_dataset("imdb", 4001)
    with pytest.raises(ValueError, match="unknown dataset"):
        examples_from_dataset("nope", 10)
