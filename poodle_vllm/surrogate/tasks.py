"""Per-task serving state inside the engine: the loaded surrogate and its quality monitors.

A :class:`LiveTask` exists for every task whose registry state has a surrogate in play
(shadow, offered, serving). It holds the batching predictor of the active surrogate version,
the canonical answer token ids per label, the shadow gate, the rolling audit agreement and the
drift monitor. :class:`LiveTaskSet` keeps them in step with the registry (one sync thread) and
moves tasks along their lifecycle when the statistics say so. Statistics are persisted in the
registry so a restart neither forgets a passed gate nor restarts an audit window from zero.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from poodle_vllm.config import ServingConfig
from poodle_vllm.paths import PoodlePaths
from poodle_vllm.types import RequestRecord, TaskInfo, TaskState

logger = logging.getLogger("poodle.tasks")

SURROGATE_STATES = {TaskState.SHADOW.value, TaskState.OFFERED.value, TaskState.SERVING.value}
MIN_DRIFT_REFERENCE = 30
"""Shadow-phase confidences needed before drift can be judged against them."""


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
    """One task's loaded surrogate and monitors (engine process)."""

    def __init__(self, task_id: str, state: str, version: int, path: Path, config: ServingConfig) -> None:
        from poodle_vllm.core.policy import RollingAgreement, ShadowGate
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
        self.gate = ShadowGate(config, list(self.metadata.label_names))
        self.audit = RollingAgreement.from_config(config)
        self.reference_confidences: list[float] = []
        self.drift: Any = None
        self.served = 0
        self.lock = threading.Lock()

    def submit(self, text: str) -> Future | None:
        try:
            return self.predictor.submit(text)
        except Exception:
            logger.exception("poodle: surrogate submit failed for %s", self.task_id)
            return None

    def canonical_ids(self, label: str) -> list[int]:
        return self._canonical.get(label, [])

    def observe(self, mode: str, record: RequestRecord) -> None:
        """Account one finished request that had a surrogate prediction beside it."""
        with self.lock:
            conf = record.surrogate_confidence
            if mode == "serve":
                self.served += 1
                if conf is not None:
                    self._drift_monitor_update(conf)
                return
            if not record.eligible:
                return
            if mode == "shadow":
                self.gate.record(record.label, record.surrogate_label)
                if conf is not None:
                    self.reference_confidences.append(conf)
            elif mode == "audit":
                self.audit.add(record.label, record.surrogate_label)

    def _drift_monitor_update(self, confidence: float) -> None:
        if self.drift is None:
            if len(self.reference_confidences) < MIN_DRIFT_REFERENCE:
                return
            from poodle_vllm.core.stats import DriftMonitor

            self.drift = DriftMonitor.from_config(self.reference_confidences, self.config)
        self.drift.update([confidence])

    def restore(self, stats: dict[str, Any]) -> None:
        """Resume persisted statistics of this surrogate version after a restart."""
        from poodle_vllm.core.policy import ShadowGate

        if stats.get("version") != self.version:
            return
        if stats.get("gate_state"):
            self.gate = ShadowGate.from_dict(stats["gate_state"], self.config)
        self.reference_confidences = list(stats.get("reference_confidences") or [])
        self.served = int(stats.get("served", 0))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            decision = self.audit.decide()
            drift = self.drift.report().to_dict() if self.drift is not None else None
            return {
                "version": self.version,
                "state": self.state,
                "served": self.served,
                "gate": self.gate.evaluate().to_dict(),
                "gate_state": self.gate.to_dict(),
                "audit": {
                    "n": decision.n,
                    "agreement": decision.agreement,
                    "lower": decision.lower,
                    "fall_back": decision.fall_back,
                    "reason": decision.reason,
                },
                "drift": drift,
                "reference_confidences": self.reference_confidences[-2000:],
                "updated_at": time.time(),
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
        """Shadow gate, audit agreement and drift: move tasks along their lifecycle."""
        from poodle_vllm.core.policy import decide_after_gate

        for task_id, live in list(self._tasks.items()):
            snap = live.snapshot()
            registry.save_stats(task_id, "live", snap)
            if live.state == TaskState.SHADOW.value:
                with live.lock:
                    task = registry.get_task(task_id)
                    self_agreement = (task.extra.get("self_agreement") or {}).get("rate") if task else None
                    report = live.gate.evaluate(self_agreement)
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
            elif live.state == TaskState.SERVING.value:
                reason = None
                if snap["audit"]["fall_back"]:
                    reason = snap["audit"]["reason"]
                elif snap["drift"] and snap["drift"].get("drifted"):
                    reason = "input drift confirmed: " + str(snap["drift"].get("reason"))
                if reason:
                    reset_fresh_labels(registry, task_id)
                    registry.set_state(task_id, TaskState.FALLBACK.value, reason)
                    registry.increment_counter("fallbacks", 1)
                    live.state = TaskState.FALLBACK.value

    def _offer(self, live: LiveTask, gate: dict[str, Any]) -> dict[str, Any]:
        meta = live.metadata
        return {
            "task_id": live.task_id,
            "surrogate_version": live.version,
            "base_model": meta.base_model,
            "training_items": meta.training_items,
            "validation_agreement": meta.validation_agreement,
            "shadow": gate,
            "surrogate_ms_per_item": meta.extra.get("ms_per_item"),
        }

    def describe(self) -> dict[str, Any]:
        return {
            tid: {"state": t.state, "version": t.version, "served": t.served}
            for tid, t in self._tasks.items()
        }

    def close(self) -> None:
        for t in self._tasks.values():
            t.close()
        self._tasks.clear()
