"""`poodle tasks`, `tasks show`, `accept`, `reject`, `rollback`, `offers` against a real registry file."""

from __future__ import annotations

import json

import pytest

from poodle_vllm.cli.main import main
from poodle_vllm.core.registry import Registry
from poodle_vllm.types import LabelInfo, TaskInfo, TaskState, TaskTemplate


@pytest.fixture()
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("POODLE_STATE_DIR", str(tmp_path))
    reg = Registry(tmp_path / "registry.sqlite")
    reg.upsert_task(
        TaskInfo(
            "f00dbeef",
            "imdb-sentiment",
            TaskState.OBSERVING.value,
            "|",
            "smollm2",
            TaskTemplate([1, 2], [3], "Classify the sentiment.\nReview: ", "\nAnswer:"),
            [
                LabelInfo("positive", 30, [9], "positive", 0.9),
                LabelInfo("negative", 10, [8], "negative", 1.0),
            ],
            requests_seen=42,
            eligible_seen=40,
        )
    )
    for st in ("collecting", "ready", "searching", "training", "shadow", "offered"):
        reg.set_state("f00dbeef", st, f"worker: {st}")
    reg.add_surrogate("f00dbeef", tmp_path / "v1", {"agreement": 0.93})
    reg.save_offer("f00dbeef", {"summary": "agreement 0.93, saves $650 per 1M requests"})
    reg.upsert_task(
        TaskInfo(
            "c0ffee00",
            "topics",
            TaskState.COLLECTING.value,
            "salt|",
            "smollm2",
            TaskTemplate([5], [], None, None),
        )
    )
    return tmp_path


def run_json(capsys, *argv: str):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_tasks_list_and_show_json(state_dir, capsys):
    payload = run_json(capsys, "tasks", "--json")
    assert payload["version"] == "1"
    tasks = payload["tasks"]
    assert [t["task_id"] for t in tasks] == ["f00dbeef", "c0ffee00"]
    assert tasks[0]["state"] == "offered" and [lab["label"] for lab in tasks[0]["labels"]] == [
        "positive",
        "negative",
    ]
    assert tasks[0]["requests_seen"] == 42
    detail = run_json(capsys, "tasks", "show", "imdb-sentiment", "--json")
    assert detail["template"] == "Classify the sentiment.\nReview: {{SLOT}}\nAnswer:"
    assert [lab["share"] for lab in detail["label_space"]] == [0.75, 0.25]
    assert detail["label_space"][0]["canonical_text"] == "positive"
    assert [e["to_state"] for e in detail["history"] if e["to_state"]][-1] == "offered"
    assert detail["history"][-1]["reason"] == "surrogate v1 registered"
    assert detail["surrogates"][0]["version"] == 1
    other = run_json(capsys, "tasks", "show", "c0f", "--json")  # id prefix; template without texts
    assert "{{SLOT}}" in other["template"] and "1 tokens" in other["template"]


def test_tasks_human_output_and_registry_override(state_dir, tmp_path_factory, capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "imdb-sentiment" in out and "offered" in out
    assert main(["tasks", "show", "f00d"]) == 0
    assert "{{SLOT}}" in capsys.readouterr().out
    empty = tmp_path_factory.mktemp("empty") / "registry.sqlite"
    assert run_json(capsys, "tasks", "--json", "--registry", str(empty))["tasks"] == []
    assert main(["tasks", "show", "nope"]) == 1


def test_offers_accept_reject_rollback(state_dir, capsys):
    offers = run_json(capsys, "offers", "--json")
    assert [o["task_id"] for o in offers] == ["f00dbeef"]
    assert offers[0]["offer"]["data"]["summary"].startswith("agreement 0.93")
    accepted = run_json(capsys, "accept", "imdb-sentiment", "--json")
    assert accepted["state"] == "serving" and accepted["version"] == 1
    assert run_json(capsys, "offers", "--json") == []
    # accepting again is not a valid transition
    assert main(["accept", "imdb-sentiment"]) == 1
    assert "only an 'offered' task" in capsys.readouterr().err
    # rollback needs an earlier version
    assert main(["rollback", "imdb-sentiment"]) == 1
    assert "no earlier version" in capsys.readouterr().err
    reg = Registry(state_dir / "registry.sqlite")
    reg.add_surrogate("f00dbeef", state_dir / "v2", {"agreement": 0.95}, activate=True)
    rolled = run_json(capsys, "rollback", "f00dbeef", "--json")
    assert rolled["version"] == 1 and rolled["previous_version"] == 2
    assert reg.active_surrogate("f00dbeef")["version"] == 1
    again = run_json(capsys, "rollback", "f00dbeef", "--version", "2", "--json")
    assert again["version"] == 2
    assert main(["rollback", "f00dbeef", "--version", "9"]) == 1
    assert "no surrogate v9" in capsys.readouterr().err
    # reject from serving retires the task; rejecting again is an error
    rejected = run_json(capsys, "reject", "f00dbeef", "--reason", "too slow", "--json")
    assert rejected["state"] == "retired" and rejected["reason"] == "too slow"
    assert main(["reject", "f00dbeef"]) == 1
    assert "already retired" in capsys.readouterr().err
    # a collecting task cannot be accepted
    assert main(["accept", "topics"]) == 1
    assert "'collecting'" in capsys.readouterr().err
    assert main(["accept", "missing"]) == 1


def test_lifecycle_without_registry_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POODLE_STATE_DIR", str(tmp_path / "none"))
    assert main(["accept", "x"]) == 1
    assert "no task registry" in capsys.readouterr().err
    assert run_json(capsys, "offers", "--json") == []
