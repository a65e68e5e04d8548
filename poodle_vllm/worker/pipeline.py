"""The development worker: picks up ``ready`` tasks, searches a base model, trains, registers.

It runs in its own process (started by the engine when ``worker`` is on, or with
``poodle worker``), never on the scheduler's thread or the API event loop. One task at a time.
A failed step is recorded on the task (event + reason) and the task goes back to collecting
fresh labels; the worker itself keeps running.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poodle_vllm.config import PoodleConfig
from poodle_vllm.paths import PoodlePaths
from poodle_vllm.types import TaskInfo, TaskState

logger = logging.getLogger("poodle.worker")


@dataclass
class DevelopmentReport:
    """What one development round did, stored in the surrogate's metrics and printed by the CLI."""

    task_id: str
    base_model: str = ""
    base_model_path: str = ""
    items: int = 0
    search: dict[str, Any] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    path: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def choose_base_model(
    task: TaskInfo, texts: list[str], labels: list[str], config: PoodleConfig, paths: PoodlePaths
) -> tuple[str, Path, dict[str, Any] | None]:
    """The base model to fine-tune: the configured one, or the model search's winner."""
    from poodle_vllm.store.catalog import open_catalog
    from poodle_vllm.store.importer import import_prepared

    dev = config.development
    catalog = open_catalog(paths.store)
    if not catalog.ids():
        import_prepared(catalog, paths.models)
    if dev.base_model:
        candidate = Path(dev.base_model).expanduser()
        if candidate.exists():
            return candidate.name, candidate, None
        if dev.base_model in catalog.ids():
            return dev.base_model, Path(str(catalog.get(dev.base_model).path)), None
        from poodle_vllm.models import prepared_model_path

        return dev.base_model, prepared_model_path(dev.base_model), None
    from poodle_vllm.search.config import SearchConfig
    from poodle_vllm.search.search import search_models

    n = min(len(texts), dev.search_items)
    cfg = SearchConfig(
        max_latency_ms=dev.max_latency_ms, max_parameters=dev.max_parameters, kinds=dev.search_kinds
    )
    result = search_models(texts[:n], labels[:n], catalog, cfg, task_name=task.name, task_id=task.task_id)
    if result.best is None:
        raise RuntimeError(f"model search found no usable candidate (excluded: {result.excluded})")
    return result.best, Path(str(catalog.get(result.best).path)), result.to_dict()


MIN_LABEL_SHARE = 0.02
"""Labels rarer than this share of a task's answers are not trained on (nor gated on)."""
MIN_LABEL_COUNT = 5


def trainable_labels(task: TaskInfo) -> list[str]:
    """The task's labels minus one-off answers that slipped into the label space.

    A weak LLM sometimes answers with a stray short phrase (a movie title, say) that parses as a
    label; a surrogate cannot learn it from a handful of examples and a shadow gate could never
    collect enough samples of it.
    """
    total = sum(lab.count for lab in task.labels) or 1
    keep = [lab.label for lab in task.labels if lab.count >= max(MIN_LABEL_COUNT, MIN_LABEL_SHARE * total)]
    if len(keep) < 2:
        raise ValueError(
            f"task {task.task_id} has fewer than two frequent labels: {[(lab.label, lab.count) for lab in task.labels]}"
        )
    return keep


def develop_task(
    task: TaskInfo, registry: Any, config: PoodleConfig, paths: PoodlePaths
) -> DevelopmentReport:
    """Search (unless a base is configured), train, save a new surrogate version, start shadowing."""
    from poodle_vllm.train.args import TrainingArguments
    from poodle_vllm.train.artifact import (
        canonical_answers_from_labels,
        save_surrogate_version,
        template_hash,
    )
    from poodle_vllm.train.data import load_task_examples
    from poodle_vllm.train.trainer import SurrogateTrainer

    dev = config.development
    report = DevelopmentReport(task_id=task.task_id)
    label_names = trainable_labels(task)
    t0 = time.perf_counter()
    texts, labels, data_report = load_task_examples(paths.logs, task.task_id, label_names)
    texts, labels = texts[-dev.max_items :], labels[-dev.max_items :]  # the freshest labels
    report.items = len(texts)
    report.timings["load_s"] = time.perf_counter() - t0

    if not dev.base_model:
        registry.set_state(
            task.task_id,
            TaskState.SEARCHING.value,
            f"model search on {min(len(texts), dev.search_items)} items",
        )
    t0 = time.perf_counter()
    report.base_model, base_path, report.search = choose_base_model(task, texts, labels, config, paths)
    report.base_model_path = str(base_path)
    report.timings["search_s"] = time.perf_counter() - t0

    registry.set_state(
        task.task_id, TaskState.TRAINING.value, f"fine-tuning {report.base_model} on {len(texts)} items"
    )
    args = TrainingArguments(
        max_length=dev.max_length,
        epochs=dev.epochs,
        time_budget_s=dev.time_budget_s,
        num_threads=dev.num_threads,
    )
    t0 = time.perf_counter()
    trainer = SurrogateTrainer(args)
    result = trainer.train(str(base_path), texts, labels, label_names)
    report.timings["train_s"] = time.perf_counter() - t0
    report.train = result.to_dict()
    meta = trainer.build_metadata(
        task_id=task.task_id,
        template_hash=template_hash(task.template),
        canonical_answers=canonical_answers_from_labels(
            [lab for lab in task.labels if lab.label in label_names]
        ),
        base_model=report.base_model,
        extra={"data": data_report.to_dict(), "search": report.search is not None, "timings": report.timings},
    )
    # Folder and registry version numbers stay in step even if one side was cleaned up by hand.
    min_version = max((int(x["version"]) for x in registry.list_surrogates(task.task_id)), default=0) + 1
    version, path = save_surrogate_version(
        paths.surrogates, task.task_id, trainer.write_model, meta, min_version=min_version
    )
    report.version, report.path = version, str(path)
    metrics = {
        "base_model": report.base_model,
        "items": report.items,
        "validation_agreement": meta.validation_agreement,
        "timings": report.timings,
    }
    reg_version = registry.add_surrogate(task.task_id, str(path), metrics, activate=True)
    registry.set_state(
        task.task_id,
        TaskState.SHADOW.value,
        f"surrogate v{reg_version} ({report.base_model}, validation agreement {meta.validation_agreement:.3f})",
    )
    return report


class DevelopmentWorker:
    """Polls the registry for ready tasks and develops them one at a time."""

    def __init__(self, config: PoodleConfig, paths: PoodlePaths) -> None:
        from poodle_vllm.core.registry import Registry

        self.config = config
        self.paths = paths.ensure()
        self.registry = Registry(self.paths.registry)

    def run_once(self) -> DevelopmentReport | None:
        ready = self.registry.list_tasks(TaskState.READY.value)
        if not ready:
            return None
        task = min(ready, key=lambda t: t.updated_at)
        logger.info("poodle worker: developing task %s (%s)", task.task_id, task.name)
        try:
            report = develop_task(task, self.registry, self.config, self.paths)
            logger.info("poodle worker: task %s has surrogate v%s", task.task_id, report.version)
            return report
        except Exception as exc:  # recorded on the task; the worker keeps going
            logger.exception("poodle worker: developing %s failed", task.task_id)
            self._record_failure(task.task_id, exc)
            return None

    def _record_failure(self, task_id: str, exc: Exception) -> None:
        from poodle_vllm.surrogate.tasks import reset_fresh_labels

        self.registry.increment_counter("worker_failures", 1)
        if self.registry.get_task(task_id) is None:
            return
        reset_fresh_labels(self.registry, task_id, last_failure=f"{type(exc).__name__}: {exc}")
        self.registry.set_state(
            task_id, TaskState.COLLECTING.value, f"development failed: {type(exc).__name__}: {exc}"
        )

    def run_forever(self, stop_when_parent_dies: int | None = None) -> None:
        while True:
            if stop_when_parent_dies is not None and os.getppid() != stop_when_parent_dies:
                logger.info("poodle worker: parent process gone, stopping")
                return
            try:
                if self.run_once() is None:
                    time.sleep(self.config.development.poll_s)
            except Exception:
                logger.exception("poodle worker: loop error")
                time.sleep(self.config.development.poll_s)


def spawn_worker_process(config: PoodleConfig, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m poodle_vllm.worker`` as a child (the engine calls this when ``worker`` is on)."""
    from poodle_vllm.config import config_to_dict

    env = {**os.environ, "POODLE_CONFIG": __import__("json").dumps(config_to_dict(config))}
    env["POODLE_WORKER_PARENT"] = str(os.getpid())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        [sys.executable, "-m", "poodle_vllm.worker"], env=env, stdout=out, stderr=subprocess.STDOUT
    )
