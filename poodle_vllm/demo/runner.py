"""The JITR demo: real reviews through a real ``vllm serve`` with Poodle, stage by stage.

The demo starts the server with Poodle on (policy ``auto``), replays texts with the sentiment
prompt at a realistic concurrency and watches the task move through detection, label
collection, model search, training, shadow testing and serving. Every reply is kept with its
latency and who served it (the response's Poodle marker), so the summary compares the LLM and
the surrogate side by side on the same run.
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poodle_vllm.launcher import ServerProcess, ServerSpec, free_port
from poodle_vllm.paths import PoodlePaths
from poodle_vllm.testing.load import Reply, run_chat_load, sentiment_prompt
from poodle_vllm.types import TaskState


@dataclass
class DemoSettings:
    """What the demo runs; ``quick`` picks a 10-minute configuration."""

    dataset: str = "imdb"
    """Dataset under POODLE_DATA_DIR (imdb, rotten_tomatoes, sst2) when no input file is given."""
    input_file: str | None = None
    """A user's own CSV or JSONL of texts (``text`` column/key; optional ``label``)."""
    quick: bool = False
    concurrency: int = 8
    max_chars: int | None = None
    """Quick mode replays reviews up to this many characters first (shorter texts, same gate),
    then, only if they run out, the next-shortest ones."""
    serve_requests: int = 200
    """Requests to send once the surrogate serves, to measure it."""
    max_items: int = 4000
    time_limit_s: float = 3600.0
    seed: int = 0
    port: int = 0
    base_model: str | None = None
    """Fixed base model; None lets the worker run the model search."""
    poodle: dict[str, Any] = field(default_factory=dict)

    def poodle_config(self, state_dir: Path) -> dict[str, Any]:
        """The Poodle config the demo serves with (see README: the default gate and why)."""
        cfg: dict[str, Any] = {
            "state_dir": str(state_dir),
            "worker": True,
            "detection": {"min_requests": 8},
            "serving": {
                "policy": "auto",
                "min_train_items": 400 if self.quick else 1000,
                "shadow_requests": 100 if self.quick else 300,
                "shadow_min_per_label": 20 if self.quick else 40,
                "gate_target": 0.60,
                "audit_fraction": 0.1,
            },
            "development": {
                "base_model": self.base_model,
                "search_items": 300 if self.quick else 500,
                "max_length": 128 if self.quick else 256,
                "epochs": 3,
                "num_threads": 1,
                "time_budget_s": 180.0 if self.quick else 1200.0,
            },
        }
        for section, values in self.poodle.items():
            if isinstance(values, dict):
                cfg.setdefault(section, {}).update(values)
            else:
                cfg[section] = values
        return cfg


@dataclass
class Item:
    text: str
    gold: str | None = None


def load_items(settings: DemoSettings) -> list[Item]:
    """Texts to replay: a user's file, or a public dataset's training pool (shuffled, seeded)."""
    if settings.input_file:
        items = _read_user_file(Path(settings.input_file))
    else:
        from poodle_vllm.train.data import DATASET_LABELS, dataset_splits

        names = DATASET_LABELS[settings.dataset]
        items = [Item(t, names[y]) for t, y in dataset_splits(settings.dataset)["train"]]
    rng = random.Random(settings.seed)
    if settings.max_chars:
        short = [it for it in items if len(it.text) <= settings.max_chars]
        # A reserve of the next-shortest texts (unseen, never repeated): if a longer shadow test
        # uses up the short ones, the serving phase still gets its requests.
        reserve = sorted((it for it in items if len(it.text) > settings.max_chars), key=lambda it: len(it.text))
        rng.shuffle(short)
        items = short + reserve
    else:
        rng.shuffle(items)
    if not items:
        raise ValueError("no texts to replay (check --input / --dataset and the length filter)")
    return items[: settings.max_items]


def _read_user_file(path: Path) -> list[Item]:
    if not path.exists():
        raise FileNotFoundError(f"input file {path} not found")
    rows: list[dict[str, Any]]
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    items = []
    for i, row in enumerate(rows):
        text = row.get("text") or row.get("review") or row.get("sentence")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}: row {i + 1} has no non-empty 'text' field")
        label = row.get("label")
        gold = None
        if label is not None and str(label) != "":
            gold = {"1": "positive", "0": "negative"}.get(str(label), str(label).lower())
        items.append(Item(text, gold))
    return items


@dataclass
class Event:
    t: float
    task_id: str
    state: str
    reason: str


@dataclass
class DemoRun:
    """Everything the demo observed."""

    settings: DemoSettings
    replies: list[tuple[Reply, Item, str]] = field(default_factory=list)
    """(reply, item, task state when the request was sent)."""
    events: list[Event] = field(default_factory=list)
    server_start_s: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    task: dict[str, Any] | None = None
    live: dict[str, Any] = field(default_factory=dict)
    surrogate: dict[str, Any] | None = None
    offers: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""


class Demo:
    """Runs the demo; ``on_update`` receives the run after every batch (for the live display)."""

    def __init__(
        self,
        settings: DemoSettings,
        paths: PoodlePaths,
        on_update: Callable[[DemoRun, str], None] | None = None,
    ):
        self.settings = settings
        self.paths = paths
        self.on_update = on_update or (lambda run, msg: None)
        self.run = DemoRun(settings)

    def _registry(self) -> Any:
        from poodle_vllm.core.registry import Registry

        return Registry(self.paths.registry)

    def task_state(self) -> tuple[str | None, str]:
        """The demo task (the busiest one) and its state."""
        if not self.paths.registry.exists():
            return None, "starting"
        reg = self._registry()
        tasks = reg.list_tasks()
        if not tasks:
            return None, "observing"
        task = max(tasks, key=lambda t: t.requests_seen)
        for ev in reg.events(task.task_id):
            if ev.get("to_state") and not any(
                e.t == ev["ts"] and e.state == ev["to_state"] for e in self.run.events
            ):
                self.run.events.append(Event(ev["ts"], task.task_id, ev["to_state"], ev.get("reason") or ""))
        return task.task_id, task.state

    def execute(self, model: str, log_path: Path) -> DemoRun:
        s = self.settings
        items = load_items(s)
        self.paths.ensure()
        spec = ServerSpec(model=model, port=s.port or free_port(), poodle=s.poodle_config(self.paths.state))
        server = ServerProcess(spec, log_path, self.paths)
        self.on_update(
            self.run, f"starting vllm serve with Poodle on {spec.host}:{spec.port} (log: {log_path})"
        )
        t0 = time.time()
        server.start(timeout_s=900)
        self.run.server_start_s = time.time() - t0
        self.run.started_at = time.time()
        try:
            self._replay(server.base_url, items)
        finally:
            self._collect_final_state()
            self.run.finished_at = time.time()
            server.stop()
        return self.run

    def _replay(self, url: str, items: list[Item]) -> None:
        s = self.settings
        pos, served_after_switch = 0, 0
        deadline = time.time() + s.time_limit_s
        while pos < len(items):
            task_id, state = self.task_state()
            if time.time() > deadline:
                self.run.stop_reason = f"time limit {s.time_limit_s:.0f} s reached in state {state}"
                return
            if state == TaskState.SERVING.value and served_after_switch >= s.serve_requests:
                self.run.stop_reason = f"surrogate served {served_after_switch} requests"
                return
            busy = state in (TaskState.SEARCHING.value, TaskState.TRAINING.value)
            # While the worker trains on the same 2 cores, keep traffic flowing but lighter.
            concurrency = max(2, s.concurrency // 4) if busy else s.concurrency
            batch = items[pos : pos + concurrency * 4]
            pos += len(batch)
            result = run_chat_load(
                url,
                [sentiment_prompt(it.text) for it in batch],
                concurrency=concurrency,
                max_tokens=16,
                start_index=pos - len(batch),
            )
            for reply, item in zip(result.replies, batch, strict=True):
                self.run.replies.append((reply, item, state))
                if state == TaskState.SERVING.value and reply.served_by == "surrogate":
                    served_after_switch += 1
            self.on_update(self.run, state)
        self.run.stop_reason = "all items replayed"

    def _collect_final_state(self) -> None:
        task_id, _ = self.task_state()
        if task_id is None:
            return
        from poodle_vllm.cli.views import task_view

        reg = self._registry()
        task = reg.get_task(task_id)
        self.run.task = task_view(task) if task else None
        self.run.live = reg.get_stats(task_id, "live").get("", {})
        self.run.surrogate = reg.active_surrogate(task_id)
        self.run.offers = reg.get_offers(task_id)
