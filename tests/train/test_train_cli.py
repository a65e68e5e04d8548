"""``poodle train`` end to end on a registry + Arrow log in a temporary state folder (tiny encoder)."""

from __future__ import annotations

import json

import pytest

from poodle_vllm.cli.main import main
from poodle_vllm.train.artifact import list_versions, load_metadata, template_hash
from poodle_vllm.train.toy import toy_sentiment_examples
from poodle_vllm.types import LabelInfo, RequestRecord, TaskInfo, TaskTemplate

TINY = ["--max-length", "32", "--epochs", "8", "--batch-size", "8", "--lr", "3e-3", "--threads", "1"]


@pytest.fixture()
def state(tmp_path, monkeypatch):
    from poodle_vllm.arrowlog import ArrowLogWriter
    from poodle_vllm.core.registry import Registry
    from poodle_vllm.paths import resolve_paths

    monkeypatch.setenv("POODLE_STATE_DIR", str(tmp_path / "state"))
    paths = resolve_paths().ensure()
    template = TaskTemplate(
        prefix_token_ids=[1, 2, 3], suffix_token_ids=[9], prefix_text="Classify: ", suffix_text=""
    )
    labels = [
        LabelInfo("negative", 60, [31, 2], "Negative", 1.0),
        LabelInfo("positive", 60, [32, 2], "Positive", 1.0),
    ]
    task = TaskInfo("task-sentiment-1", "sentiment", "collecting", "|", "llm", template, labels)
    with Registry(paths.registry) as reg:
        reg.upsert_task(task)
    texts, gold = toy_sentiment_examples(150, seed=11)
    with ArrowLogWriter(paths.logs) as writer:
        for i, (text, y) in enumerate(zip(texts, gold, strict=True)):
            writer.submit(
                RequestRecord(
                    request_id=f"r{i}",
                    arrival_time=float(i),
                    finish_time=i + 0.5,
                    prompt_token_ids=[1, 2, 3, 50, 9],
                    output_token_ids=[32 if y == "positive" else 31, 2],
                    finish_reason="stop",
                    task_id=task.task_id,
                    slot_text=text,
                    label=y.capitalize(),
                    eligible=True,
                    served_by="llm",
                )
            )
    return paths, task


def test_train_task_from_log_registers_a_version(state, tiny_base, capsys):
    paths, task = state
    rc = main(["train", "task-sent", "--base", str(tiny_base), "--json", *TINY])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task_id"] == task.task_id and out["version"] == 1 and out["registered_version"] == 1
    assert out["validation_agreement"] >= 0.85
    assert out["data"]["kept"] == len(set(toy_sentiment_examples(150, seed=11)[0]))
    meta = load_metadata(out["path"])
    assert meta.template_hash == template_hash(task.template)
    assert meta.canonical_answers["positive"] == {"text": "Positive", "token_ids": [32, 2]}
    assert list_versions(paths.surrogates, task.task_id) == [1]

    from poodle_vllm.core.registry import Registry

    with Registry(paths.registry) as reg:
        (entry,) = reg.list_surrogates(task.task_id)
    assert entry["path"] == out["path"] and not entry["active"]

    rc = main(["train", "sentiment", "--base", str(tiny_base), "--max-items", "60", *TINY])
    assert rc == 0
    text = capsys.readouterr().out
    assert "validation agreement" in text and "v2" in text
    assert list_versions(paths.surrogates, task.task_id) == [1, 2]


def test_train_refuses_unknown_task_and_tiny_logs(state, tiny_base, capsys):
    assert main(["train", "no-such-task", "--base", str(tiny_base)]) == 1
    assert "no task matches" in capsys.readouterr().err
    assert main(["train", "task-sent", "--base", str(tiny_base), "--max-items", "5", *TINY]) == 1
    assert "at least" in capsys.readouterr().err
    assert main(["train"]) == 2


def test_train_on_dataset_gold_labels(tiny_base, tmp_path, capsys):
    out_dir = tmp_path / "rt-surrogate"
    args = [
        "train",
        "--dataset",
        "rotten_tomatoes",
        "--n",
        "60",
        "--test-items",
        "40",
        "--output",
        str(out_dir),
    ]
    assert main([*args, "--base", str(tiny_base), "--json", *TINY]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_items"] == 40 and 0.0 <= out["test_accuracy"] <= 1.0
    assert out["result"]["train_items"] + out["result"]["val_items"] == 60
    meta = load_metadata(out_dir)
    assert meta.extra["dataset"] == "rotten_tomatoes" and meta.label_names == ["negative", "positive"]


def test_base_resolves_a_model_store_id(tiny_base, tmp_path, monkeypatch):
    from poodle_vllm.cli.train import resolve_base
    from poodle_vllm.store.catalog import open_catalog
    from poodle_vllm.store.importer import add_model

    monkeypatch.setenv("POODLE_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("POODLE_MODELS_DIR", str(tmp_path / "models"))
    add_model(open_catalog(tmp_path / "store"), tiny_base, model_id="tiny-sentiment", measure=False)
    assert resolve_base("tiny-sentiment") == tiny_base.resolve()
    assert resolve_base(str(tiny_base)) == tiny_base
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_base("no-such-model")
