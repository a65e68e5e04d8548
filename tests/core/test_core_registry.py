"""Registry: persistence, lifecycle checks, surrogate versions, concurrency across processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from poodle_vllm.core.registry import (
    ALLOWED_TRANSITIONS,
    SCHEMA_VERSION,
    InvalidTransition,
    Registry,
    RegistryVersionError,
    check_transition,
    signature_similarity,
)
from poodle_vllm.types import LabelInfo, TaskInfo, TaskState, TaskTemplate


def make_task(
    task_id: str = "abc123", name: str = "sentiment", state: TaskState = TaskState.OBSERVING
) -> TaskInfo:
    return TaskInfo(
        task_id=task_id,
        name=name,
        state=state.value,
        tenant="|",
        model="smollm2",
        template=TaskTemplate([10, 11, 12], [13, 14], "Classify: ", "\nAnswer:"),
        labels=[
            LabelInfo("positive", 6, [33], " positive", 0.9),
            LabelInfo("negative", 4, [44], " negative", 1.0),
        ],
        requests_seen=10,
        eligible_seen=10,
        extra={"policy": "offer", "note": "x"},
    )


def walk_to(reg: Registry, task_id: str, *states: TaskState) -> None:
    for st in states:
        reg.set_state(task_id, st, f"to {st.value}")


def test_roundtrip_and_upsert_keeps_state(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    reg.upsert_task(make_task())
    walk_to(reg, "abc123", TaskState.COLLECTING)
    changed = make_task(state=TaskState.OBSERVING)
    changed.requests_seen = 99
    changed.labels[0].count = 60
    out = reg.upsert_task(changed)
    assert out.state == TaskState.COLLECTING.value  # state kept; only set_state changes it
    assert out.requests_seen == 99 and out.labels[0].count == 60
    again = Registry(tmp_path / "r.sqlite").get_task("abc123")  # a second handle sees the same data
    assert again is not None
    assert again.template == make_task().template
    assert again.labels[1] == LabelInfo("negative", 4, [44], " negative", 1.0)
    assert again.extra == {"policy": "offer", "note": "x"}
    assert reg.get_task("nope") is None


def test_wal_mode_and_schema_version(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    assert reg.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(RegistryVersionError, match="newer than this Poodle"):
        Registry(tmp_path / "r.sqlite")


def test_transitions_are_checked_and_recorded():
    reg = Registry.create_in_memory()
    reg.upsert_task(make_task())
    with pytest.raises(InvalidTransition, match="allowed from 'observing'"):
        reg.set_state("abc123", TaskState.SERVING)
    walk_to(reg, "abc123", TaskState.COLLECTING, TaskState.READY, TaskState.SEARCHING, TaskState.TRAINING)
    walk_to(reg, "abc123", TaskState.SHADOW, TaskState.OFFERED, TaskState.SERVING, TaskState.FALLBACK)
    task = reg.get_task("abc123")
    assert task is not None and task.state == "fallback" and task.reason == "to fallback"
    history = [(e["from_state"], e["to_state"]) for e in reg.events("abc123")]
    assert history[0] == (None, "observing")
    assert history[-1] == ("serving", "fallback")
    assert len(history) == 9
    # compare-and-set: a worker expecting another state must not move the task
    with pytest.raises(InvalidTransition, match="expected serving"):
        reg.set_state("abc123", TaskState.COLLECTING, expected=TaskState.SERVING)
    forced = reg.set_state("abc123", TaskState.OBSERVING, "operator reset", force=True)
    assert forced.state == "observing"
    assert reg.events("abc123")[-1]["reason"] == "forced: operator reset"
    with pytest.raises(KeyError):
        reg.set_state("missing", TaskState.COLLECTING)
    check_transition("serving", "serving")  # staying put is always allowed
    assert set(ALLOWED_TRANSITIONS) == set(TaskState)  # every state has its edges listed
    assert all(TaskState.RETIRED in ALLOWED_TRANSITIONS[s] for s in TaskState if s != TaskState.RETIRED)


def test_policy_and_core_layering():
    reg = Registry.create_in_memory()
    reg.upsert_task(make_task())
    reg.set_policy("abc123", "auto")
    assert reg.get_task("abc123").extra["policy"] == "auto"
    reg.set_policy("abc123", None)
    assert "policy" not in reg.get_task("abc123").extra
    with pytest.raises(ValueError, match="unknown serving policy"):
        reg.set_policy("abc123", "sometimes")
    code = (
        "import sys, poodle_vllm.core.registry, poodle_vllm.core.policy, poodle_vllm.core.stats, "
        "poodle_vllm.core.cost, poodle_vllm.cli.tasks, poodle_vllm.cli.lifecycle; "
        "print([m for m in ('torch', 'vllm', 'transformers', 'triton') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_find_task_by_name_and_prefix():
    reg = Registry.create_in_memory()
    reg.upsert_task(make_task("abc123", "sentiment"))
    reg.upsert_task(make_task("abd999", "topic"))
    assert reg.find_task("topic").task_id == "abd999"
    assert reg.find_task("abc").task_id == "abc123"
    assert reg.find_task("top").task_id == "abd999"  # unique name prefix
    assert reg.find_task("zzz") is None
    with pytest.raises(ValueError, match="several tasks"):
        reg.find_task("ab")
    assert [t.task_id for t in reg.list_tasks(TaskState.OBSERVING)] == ["abc123", "abd999"]


def test_surrogate_versions_and_rollback(tmp_path):
    reg = Registry(tmp_path / "r.sqlite")
    reg.upsert_task(make_task())
    assert reg.active_surrogate("abc123") is None
    v1 = reg.add_surrogate("abc123", tmp_path / "v1", {"accuracy": 0.91}, activate=True)
    v2 = reg.add_surrogate("abc123", tmp_path / "v2", {"accuracy": 0.93})
    assert (v1, v2) == (1, 2)
    assert reg.active_surrogate("abc123")["version"] == 1  # a new version is not live until activated
    reg.set_active_surrogate("abc123", 2)
    assert reg.active_surrogate("abc123")["metrics"] == {"accuracy": 0.93}
    reg.set_active_surrogate("abc123", 1)  # rollback
    assert [s["active"] for s in reg.list_surrogates("abc123")] == [True, False]
    with pytest.raises(ValueError, match="no surrogate version 7"):
        reg.set_active_surrogate("abc123", 7)


def test_stats_offers_search_results_counters():
    reg = Registry.create_in_memory()
    reg.upsert_task(make_task())
    reg.save_stats("abc123", "shadow", {"n": 10, "agree": 9}, label="positive")
    reg.save_stats("abc123", "shadow", {"n": 12, "agree": 11}, label="positive")
    reg.save_stats("abc123", "drift", {"psi": 0.1})
    assert reg.get_stats("abc123", "shadow") == {"positive": {"n": 12, "agree": 11}}
    assert reg.get_stats("abc123", "drift") == {"": {"psi": 0.1}}
    reg.save_offer("abc123", {"agreement": 0.9})
    reg.save_offer("abc123", {"agreement": 0.95})
    assert [o["data"]["agreement"] for o in reg.get_offers("abc123")] == [0.95, 0.9]
    reg.save_search_result(
        "abc123", [{"model": "minilm", "score": 0.9}], {"labels": ["positive", "negative"], "num_labels": 2}
    )
    reg.save_search_result(
        "other", [{"model": "mpnet", "score": 0.8}], {"labels": ["world", "sports"], "num_labels": 4}
    )
    best = reg.similar_search_results({"labels": ["negative", "positive"], "num_labels": 2})
    assert best[0][1]["task_id"] == "abc123" and best[0][0] == pytest.approx(1.0)
    assert signature_similarity({"embedding": [1.0, 0.0]}, {"embedding": [0.0, 1.0]}) == 0.0
    reg.increment_counter("hook_errors")
    reg.increment_counter("hook_errors", 4)
    assert reg.counters() == {"hook_errors": 5}


def test_try_methods_never_raise_on_a_locked_database(tmp_path):
    path = tmp_path / "r.sqlite"
    reg = Registry(path, fast_timeout_s=0.05)
    reg.upsert_task(make_task())
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        assert reg.try_add_counts("abc123", requests=1) is False
        assert reg.try_increment_counter("drops") is False
        assert reg.try_set_state("abc123", TaskState.COLLECTING) is False
        assert reg.try_set_state("missing", TaskState.COLLECTING) is False  # logic errors too
        assert reg.local_failures()["registry_busy"] >= 3
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert reg.try_add_counts("abc123", requests=1) is True
    assert reg.try_increment_counter("drops") is True
    counters = reg.counters()
    assert counters["drops"] == 1 and counters["registry_busy"] >= 3  # pending failures flushed
    assert reg.local_failures() == {}
    assert reg.get_task("abc123").requests_seen == 11


def _writer(path: str, worker: int, n: int, errors) -> None:  # runs in a child process
    reg = Registry(path)
    try:
        for i in range(n):
            reg.add_counts("abc123", requests=1)
            reg.increment_counter(f"writer{worker}")
            if i % 20 == 0:
                reg.record_event("abc123", f"writer {worker} step {i}")
    except Exception as exc:  # pragma: no cover - reported to the parent
        errors.put(repr(exc))
    finally:
        reg.close()


def test_two_processes_write_concurrently(tmp_path):
    path = str(tmp_path / "r.sqlite")
    Registry(path).upsert_task(make_task())
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, w, 200, errors)) for w in range(2)]
    for p in procs:
        p.start()
    # a reader in the parent (the engine polling states) runs at the same time
    reader = Registry(path)
    polls = 0
    while any(p.is_alive() for p in procs):
        assert reader.try_list_tasks() is not None or reader.local_failures()
        polls += 1
        time.sleep(0.005)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert errors.empty(), errors.get()
    reg = Registry(path)
    assert reg.get_task("abc123").requests_seen == 10 + 400
    assert reg.counters() == {"writer0": 200, "writer1": 200}
    assert len(reg.events("abc123")) == 1 + 20
    assert polls > 0


def test_threads_share_an_in_memory_registry():
    reg = Registry.create_in_memory()
    reg.upsert_task(make_task())

    def bump() -> None:
        for _ in range(100):
            reg.add_counts("abc123", requests=1, eligible=1)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    task = reg.get_task("abc123")
    assert task.requests_seen == 410 and task.eligible_seen == 410


def _open_and_insert(path: str, i: int, errors) -> None:  # runs in a child process
    try:
        reg = Registry(path)
        reg.upsert_task(make_task(f"task{i}", f"name{i}"))
        reg.close()
    except Exception as exc:  # pragma: no cover - reported to the parent
        errors.put(repr(exc))


def test_processes_create_a_fresh_registry_at_once(tmp_path):
    path = str(tmp_path / "fresh" / "r.sqlite")
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_open_and_insert, args=(path, i, errors)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert errors.empty(), errors.get()
    reg = Registry(path)
    assert sorted(t.task_id for t in reg.list_tasks()) == ["task0", "task1", "task2", "task3"]
    assert reg.schema_version() == SCHEMA_VERSION
