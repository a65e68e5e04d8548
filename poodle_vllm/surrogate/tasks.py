"""Per-task serving state inside the engine: the loaded surrogate and its quality monitors.

A :class:`LiveTask` exists for every task whose registry state has a surrogate in play
(shadow, offered, serving). It holds the batching predictor of the active surrogate version,
the canonical answer token ids per label and its :class:`~poodle_vllm.surrogate.quality.TaskQuality`
(shadow gate, audits, drift and traffic per input-length bucket). :class:`LiveTaskSet` keeps
them in step with the registry (one sync thread) and moves tasks along their lifecycle when the
statistics say so. Statistics are persisted in the registry so a restart neither forgets a
passed gate nor restarts an audit window from zero.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from poodle_vllm.config import ServingConfig
from poodle_vllm.core.policy import FIT, LENGTH_BUCKETS, length_bucket
from poodle_vllm.paths import PoodlePaths
from poodle_vllm.surrogate.quality import TaskQuality
from poodle_vllm.types import RequestRecord, TaskInfo, TaskState

logger = logging.getLogger("poodle.tasks")

SURROGATE_STATES = {TaskState.SHADOW.value, TaskState.OFFERED.value, TaskState.SERVING.value}


def reset_fresh_labels(registry: Any, task_id: str, **extra: Any) -> None:
    """Fresh labels are needed before the next training round: remember where they start.

    ``store_detected`` moves the task to ready once ``min_train_items`` eligible labels arrived
    after this mark (gate failure, fallback, failed development). ``extra`` is stored beside it.
    """
    task = registry.get_task(task_id)
    if task is not None:
        task.extra.update(labels_at_reset=task.eligible_seen, **extra)
        registry.upsert_task(task)


class LiveTask:
    """One task's loaded surrogate and its quality bookkeeping (engine process)."""

    def __init__(self, task_id: str, state: str, version: int, path: Path, config: ServingConfig) -> None:
        from poodle_vllm.surrogate.runtime import BatchingPredictor, SurrogateModel
        from poodle_vllm.train.artifact import load_metadata

        self.task_id = task_id
        self.state = state
        self.version = version
        self.path = path
        self.config = config
        self.metadata = load_metadata(path)
        self._canonical: dict[str, list[int]] = {
            label: [int(t) for t in info.get("token_ids") or []]
            for label, info in self.metadata.canonical_answers.items()
        }
        self.model = SurrogateModel.load(path)
        self.predictor = BatchingPredictor(
            self.model, max_batch=config.max_batch, window_ms=config.batch_window_ms
        )
        self.quality = TaskQuality(config, list(self.metadata.label_names), self._canonical)
        self.lock = threading.Lock()

    @property
    def served(self) -> int:
        return sum(t["served"] for t in self.quality.traffic.values())

    def submit(self, text: str) -> Future | None:
        try:
            return self.predictor.submit(text)
        except Exception:
            logger.exception("poodle: surrogate submit failed for %s", self.task_id)
            return None

    def canonical_ids(self, label: str) -> list[int]:
        return self._canonical.get(label, [])

    def serves(self, truncated: bool) -> bool:
        """May the surrogate answer this input (by its length bucket) while the task serves?"""
        return self.quality.serves(length_bucket(truncated))

    def observe(self, mode: str, record: RequestRecord, truncated: bool = False, reason: str = "") -> None:
        """Account one finished request that had a surrogate prediction beside it."""
        with self.lock:
            serving = self.state == TaskState.SERVING.value
            self.quality.observe(mode, record, truncated, serving=serving, reason=reason)

    def restore(self, stats: dict[str, Any]) -> None:
        """Resume persisted statistics of this surrogate version after a restart."""
        if stats.get("version") != self.version:
            return
        with self.lock:
            self.quality.restore(stats)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "version": self.version,
                "state": self.state,
                "served": self.served,
                **self.quality.snapshot(),
                "updated_at": time.time(),
            }

    def describe(self) -> dict[str, Any]:
        """Compact live view for ``/poodle/v1/status``."""
        with self.lock:
            q = self.quality
            return {
                "state": self.state,
                "version": self.version,
                "served": self.served,
                "buckets": {
                    b: {k: v for k, v in q.bucket_summary(b).items() if k != "note"} for b in LENGTH_BUCKETS
                },
                "exact": q.exact_summary(),
            }

    def close(self) -> None:
        try:
            self.predictor.close()
        except Exception:
            logger.exception("poodle: closing the predictor of %s failed", self.task_id)


class LiveTaskSet:
    """All live tasks of this engine, kept in step with the registry."""

    def __init__(self, config: ServingConfig, paths: PoodlePaths) -> None:
        self.config = config
        self.paths = paths
        self._tasks: dict[str, LiveTask] = {}
        self._failed: dict[tuple[str, int], str] = {}

    def get(self, task_id: str) -> LiveTask | None:
        return self._tasks.get(task_id)

    def store_detected(self, registry: Any, task: TaskInfo) -> None:
        """Persist a detected task and advance observing -> collecting -> ready."""
        before = registry.get_task(task.task_id)
        if before is not None:
            task.extra = {**before.extra, **task.extra}
        stored = registry.upsert_task(task)  # a new task is stored in the detector's state
        state = stored.state
        if state == TaskState.GENERATIVE.value and task.state == TaskState.COLLECTING.value:
            # The window's answers now form a small label space: observe again, then collect.
            registry.set_state(task.task_id, TaskState.OBSERVING.value, "answers now fit a small label space")
            state = TaskState.OBSERVING.value
        if state == TaskState.OBSERVING.value and task.state == TaskState.COLLECTING.value:
            registry.set_state(task.task_id, TaskState.COLLECTING.value, "label space is replaceable")
            state = TaskState.COLLECTING.value
        elif state == TaskState.OBSERVING.value and task.state == TaskState.GENERATIVE.value:
            registry.set_state(task.task_id, TaskState.GENERATIVE.value, task.reason or "generative")
        if state in (TaskState.COLLECTING.value, TaskState.FALLBACK.value):
            fresh = task.eligible_seen - int(stored.extra.get("labels_at_reset", 0))
            if fresh >= self.config.min_train_items:
                registry.set_state(
                    task.task_id, TaskState.READY.value, f"{fresh} fresh eligible labelled requests"
                )

    def refresh(self, registry: Any) -> None:
        """Load, reload or drop surrogates to match the registry's states and active versions."""
        wanted: dict[str, tuple[str, int, Path]] = {}
        for task in registry.list_tasks():
            if task.state not in SURROGATE_STATES:
                continue
            active = registry.active_surrogate(task.task_id)
            if active is not None:
                wanted[task.task_id] = (task.state, int(active["version"]), Path(active["path"]))
        for task_id in list(self._tasks):
            if task_id not in wanted or self._tasks[task_id].version != wanted[task_id][1]:
                self._tasks.pop(task_id).close()
        for task_id, (state, version, path) in wanted.items():
            live = self._tasks.get(task_id)
            if live is not None:
                live.state = state
                continue
            if (task_id, version) in self._failed:
                continue
            try:
                live = LiveTask(task_id, state, version, path, self.config)
                live.restore(registry.get_stats(task_id, "live").get("", {}))
                self._tasks[task_id] = live
                logger.info("poodle: loaded surrogate v%d of task %s (%s)", version, task_id, state)
            except Exception as exc:  # a corrupt surrogate: the LLM keeps answering
                logger.exception("poodle: cannot load surrogate v%d of task %s", version, task_id)
                self._failed[(task_id, version)] = str(exc)
                registry.increment_counter("surrogate_load_errors", 1)
                registry.record_event(task_id, f"surrogate v{version} failed to load: {exc}")

    def evaluate(self, registry: Any) -> None:
        """Shadow gates, audit agreement and drift per length bucket: move tasks along their lifecycle.

        The ``fit`` bucket's gate decides the switch and its audits/drift the fallback; a passed
        ``truncated`` bucket whose audits or drift fail is handed back to the LLM on its own.
        """
        from poodle_vllm.core.policy import decide_after_gate

        for task_id, live in list(self._tasks.items()):
            task = registry.get_task(task_id)
            with live.lock:
                q = live.quality
                q.self_agreement = (task.extra.get("self_agreement") or {}).get("rate") if task else None
                decided = q.settle()
                handed_back = q.hand_back_failing_buckets() if live.state == TaskState.SERVING.value else []
                report = q.task_gate()
                fit_problem = q.problem(FIT)
            for bucket, bucket_report in decided.items():
                if bucket != FIT:
                    verdict = (
                        "passed: served from now on"
                        if bucket_report.passed
                        else "failed: the LLM answers them"
                    )
                    why = "" if bucket_report.passed else " (" + "; ".join(bucket_report.reasons) + ")"
                    registry.record_event(task_id, f"shadow gate on {bucket} inputs {verdict}{why}")
            for bucket, why in handed_back:
                registry.record_event(task_id, f"{bucket} inputs handed back to the LLM: {why}")
                registry.increment_counter(f"bucket_fallbacks_{bucket}", 1)
            registry.save_stats(task_id, "live", live.snapshot())
            if live.state == TaskState.SHADOW.value:
                policy = (task.extra.get("policy") if task else None) or self.config.policy
                nxt = decide_after_gate(report, policy)
                if nxt == TaskState.SHADOW:
                    continue
                if nxt == TaskState.COLLECTING:
                    reset_fresh_labels(registry, task_id)
                    registry.set_state(task_id, nxt.value, "shadow gate failed: " + "; ".join(report.reasons))
                else:
                    registry.save_offer(task_id, self._offer(live, report.to_dict()))
                    registry.set_state(task_id, nxt.value, "shadow gate passed")
                live.state = nxt.value
            elif live.state == TaskState.SERVING.value and fit_problem:
                reset_fresh_labels(registry, task_id)
                registry.set_state(task_id, TaskState.FALLBACK.value, fit_problem)
                registry.increment_counter("fallbacks", 1)
                live.state = TaskState.FALLBACK.value

    def _offer(self, live: LiveTask, gate: dict[str, Any]) -> dict[str, Any]:
        meta = live.metadata
        snap = live.snapshot()
        return {
            "task_id": live.task_id,
            "surrogate_version": live.version,
            "base_model": meta.base_model,
            "training_items": meta.training_items,
            "validation_agreement": meta.validation_agreement,
            "shadow": gate,
            "shadow_by_length": {
                b: {"verdict": snap["buckets"][b]["verdict"], "gate": snap["buckets"][b]["gate"]}
                for b in LENGTH_BUCKETS
            },
            "canonical_exact": snap["exact"],
            "surrogate_ms_per_item": meta.extra.get("ms_per_item"),
        }

    def describe(self) -> dict[str, Any]:
        return {tid: t.describe() for tid, t in self._tasks.items()}

    def close(self) -> None:
        for t in self._tasks.values():
            t.close()
        self._tasks.clear()
