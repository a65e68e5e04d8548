"""LiveTaskSet moves a task through shadow -> serving -> fallback by its length buckets' statistics."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from poodle_vllm.config import ServingConfig
from poodle_vllm.core.registry import Registry
from poodle_vllm.paths import resolve_paths
from poodle_vllm.surrogate.quality import TaskQuality
from poodle_vllm.surrogate.tasks import LiveTask, LiveTaskSet
from poodle_vllm.types import LabelInfo, RequestRecord, ServedBy, TaskInfo, TaskState, TaskTemplate

LABELS = ["negative", "positive"]
CANONICAL = {"negative": [11, 2], "positive": [12, 2]}
CFG = ServingConfig(
    policy="auto", shadow_requests=40, shadow_min_per_label=10, gate_target=0.7, fallback_window=20
)


def loaded(task_id: str, state: str, version: int = 1) -> LiveTask:
    """A LiveTask as ``LiveTaskSet.refresh`` builds it, without loading a model (none is needed)."""
    live = LiveTask.__new__(LiveTask)
    live.task_id, live.state, live.version, live.path, live.config = task_id, state, version, Path("."), CFG
    live.metadata = SimpleNamespace(
        base_model="tiny", training_items=100, validation_agreement=0.9, extra={}, label_names=LABELS
    )
    live._canonical = CANONICAL
    live.quality = TaskQuality(CFG, LABELS, CANONICAL)
    live.predictor = SimpleNamespace(close=lambda: None)
    live.lock = threading.Lock()
    return live


def rec(llm: str, surrogate: str, served_by: str = ServedBy.LLM.value) -> RequestRecord:
    return RequestRecord(
        "r",
        0.0,
        0.0,
        [1],
        CANONICAL[llm],
        "stop",
        label=llm,
        eligible=True,
        surrogate_label=surrogate,
        surrogate_confidence=0.9,
        served_by=served_by,
    )


def feed(live: LiveTask, mode: str, truncated: bool, pairs: list[tuple[str, str]], times: int) -> None:
    for _ in range(times):
        for llm, sur in pairs:
            live.observe(mode, rec(llm, sur), truncated, reason=mode)


GOOD = [("positive", "positive"), ("negative", "negative")]


def test_lifecycle_by_length_bucket_survives_a_restart(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.sqlite")
    template = TaskTemplate([1], [2], "Review: ", "\nAnswer:")
    reg.upsert_task(TaskInfo("t1", "reviews", "shadow", "|", "m", template, [LabelInfo("positive", 3)]))
    tasks = LiveTaskSet(CFG, resolve_paths(state=tmp_path))
    live = loaded("t1", TaskState.SHADOW.value)
    tasks._tasks["t1"] = live
    feed(live, "shadow", False, GOOD, times=15)
    feed(live, "shadow", True, GOOD, times=5)  # pooled 40 samples, but 5 < 10 per truncated label
    tasks.evaluate(reg)
    task = reg.get_task("t1")
    assert task is not None and task.state == TaskState.SERVING.value  # fit passed, policy auto
    offer = reg.get_offers("t1")[0]["data"]
    assert offer["shadow_by_length"]["fit"]["verdict"] == "passed"
    assert offer["shadow_by_length"]["truncated"]["verdict"] == "pending"
    assert offer["canonical_exact"]["canonical_exact_rate"] == 1.0
    assert live.serves(False) and not live.serves(True)
    # While serving, truncated inputs go to the LLM as shadow samples of their own bucket.
    feed(live, "shadow", True, GOOD, times=5)
    tasks.evaluate(reg)
    assert live.serves(True)
    assert any("truncated inputs passed" in (e["reason"] or "") for e in reg.events("t1"))
    live.observe("serve", rec("positive", "positive", ServedBy.SURROGATE.value), True, reason="serve")
    status = tasks.describe()["t1"]
    assert status["buckets"]["truncated"]["served"] == 1
    assert status["buckets"]["truncated"]["served_share"] == 1 / 11  # 10 unverified + 1 served
    assert status["exact"]["canonical_exact_rate"] == 1.0
    tasks.evaluate(reg)  # persist

    # A restart: the same version resumes its verdicts and traffic from the registry.
    again = loaded("t1", TaskState.SERVING.value)
    again.restore(reg.get_stats("t1", "live")[""])
    assert again.serves(True) and again.quality.traffic["truncated"]["served"] == 1
    other = loaded("t1", TaskState.SERVING.value, version=2)
    other.restore(reg.get_stats("t1", "live")[""])
    assert not other.serves(True)  # another version starts its statistics afresh

    # Audits of fit inputs fall below the target: the whole task falls back.
    feed(live, "audit", False, [("positive", "negative")], times=20)
    tasks.evaluate(reg)
    task = reg.get_task("t1")
    assert task is not None and task.state == TaskState.FALLBACK.value
    assert "rolling agreement" in (task.reason or "") and reg.counters()["fallbacks"] == 1


def test_failing_fit_bucket_sends_the_task_back_to_collecting(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.sqlite")
    template = TaskTemplate([1], [2], "Review: ", "\nAnswer:")
    reg.upsert_task(TaskInfo("t1", "reviews", "shadow", "|", "m", template, [LabelInfo("positive", 3)]))
    tasks = LiveTaskSet(CFG, resolve_paths(state=tmp_path))
    live = loaded("t1", TaskState.SHADOW.value)
    tasks._tasks["t1"] = live
    # Always "positive" on inputs that fit; perfect on truncated ones: the fit gate decides.
    feed(live, "shadow", False, [("positive", "positive"), ("negative", "positive")], times=12)
    feed(live, "shadow", True, GOOD, times=12)
    tasks.evaluate(reg)
    task = reg.get_task("t1")
    assert task is not None and task.state == TaskState.COLLECTING.value
    assert "label 'negative'" in (task.reason or "")
