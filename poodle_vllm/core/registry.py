"""The task registry: one SQLite file (WAL mode) shared by engine, API server, worker and CLI.

Every process opens its own :class:`Registry` on the same path. Writes are short
``BEGIN IMMEDIATE`` transactions with a busy timeout, so concurrent writers queue instead of
failing. The engine's serving path must never block on or raise from the registry, so it uses
the ``try_*`` methods: they run with a short timeout, return a default on any SQLite error and
count the failure (flushed into the ``counters`` table by the next successful counter write).

What the registry hides: SQL, JSON encoding of templates/labels/metrics, per-thread and
per-process connections, schema versioning. Callers see :class:`~poodle_vllm.types.TaskInfo`
and plain dicts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from poodle_vllm.types import LabelInfo, TaskInfo, TaskState, TaskTemplate

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Bump with a migration in ``_MIGRATIONS`` when the schema changes."""

S = TaskState
ALLOWED_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    S.OBSERVING: frozenset({S.COLLECTING, S.GENERATIVE, S.RETIRED}),
    S.COLLECTING: frozenset({S.READY, S.OBSERVING, S.GENERATIVE, S.RETIRED}),
    S.READY: frozenset({S.SEARCHING, S.TRAINING, S.COLLECTING, S.RETIRED}),
    S.SEARCHING: frozenset({S.TRAINING, S.READY, S.COLLECTING, S.RETIRED}),
    S.TRAINING: frozenset({S.SHADOW, S.READY, S.COLLECTING, S.RETIRED}),
    S.SHADOW: frozenset({S.OFFERED, S.SERVING, S.COLLECTING, S.TRAINING, S.RETIRED}),
    S.OFFERED: frozenset({S.SERVING, S.SHADOW, S.COLLECTING, S.RETIRED}),
    S.SERVING: frozenset({S.FALLBACK, S.SHADOW, S.RETIRED}),
    # NOTE: FALLBACK -> SERVING is an operator rollback to a known-good surrogate version.
    S.FALLBACK: frozenset({S.COLLECTING, S.READY, S.TRAINING, S.SHADOW, S.SERVING, S.RETIRED}),
    S.RETIRED: frozenset({S.OBSERVING, S.COLLECTING}),
    S.GENERATIVE: frozenset({S.OBSERVING, S.RETIRED}),
}
"""Lifecycle edges; anything else needs ``force=True`` (an operator override)."""


class InvalidTransition(ValueError):
    """A state change that the lifecycle does not allow (message names the allowed targets)."""


class RegistryVersionError(RuntimeError):
    """The database was written by a newer Poodle, or has a schema this version cannot migrate."""


def check_transition(current: str | TaskState, target: str | TaskState) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is a lifecycle edge."""
    cur, tgt = TaskState(current), TaskState(target)
    if cur == tgt or tgt in ALLOWED_TRANSITIONS[cur]:
        return
    allowed = ", ".join(sorted(s.value for s in ALLOWED_TRANSITIONS[cur])) or "none"
    raise InvalidTransition(
        f"cannot move a task from '{cur.value}' to '{tgt.value}' (allowed from '{cur.value}': {allowed})"
    )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, tenant TEXT NOT NULL,
    model TEXT NOT NULL, template TEXT NOT NULL, labels TEXT NOT NULL,
    requests_seen INTEGER NOT NULL DEFAULT 0, eligible_seen INTEGER NOT NULL DEFAULT 0,
    unparseable INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    reason TEXT, extra TEXT NOT NULL DEFAULT '{}', policy TEXT);
CREATE INDEX IF NOT EXISTS tasks_name ON tasks(name);
CREATE TABLE IF NOT EXISTS task_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, ts REAL NOT NULL,
    from_state TEXT, to_state TEXT, reason TEXT);
CREATE INDEX IF NOT EXISTS task_events_task ON task_events(task_id, id);
CREATE TABLE IF NOT EXISTS surrogates (
    task_id TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, created_at REAL NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}', active INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, version));
CREATE TABLE IF NOT EXISTS task_stats (
    task_id TEXT NOT NULL, kind TEXT NOT NULL, label TEXT NOT NULL, data TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (task_id, kind, label));
CREATE TABLE IF NOT EXISTS offers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, created_at REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS search_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, ts REAL NOT NULL,
    signature TEXT NOT NULL DEFAULT '{}', data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL, updated_at REAL NOT NULL);
"""

# from_version -> function(connection) upgrading the schema by one version.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}

T = TypeVar("T")


def task_to_row(task: TaskInfo) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "name": task.name,
        "state": TaskState(task.state).value,
        "tenant": task.tenant,
        "model": task.model,
        "template": json.dumps(dataclasses.asdict(task.template)),
        "labels": json.dumps([dataclasses.asdict(lab) for lab in task.labels]),
        "requests_seen": task.requests_seen,
        "eligible_seen": task.eligible_seen,
        "unparseable": task.unparseable,
        "created_at": task.created_at or time.time(),
        "updated_at": time.time(),
        "reason": task.reason,
        "extra": json.dumps(task.extra),
        "policy": task.extra.get("policy"),
    }


def task_from_row(row: sqlite3.Row) -> TaskInfo:
    extra = json.loads(row["extra"] or "{}")
    if row["policy"] is not None:
        extra["policy"] = row["policy"]
    return TaskInfo(
        task_id=row["task_id"],
        name=row["name"],
        state=row["state"],
        tenant=row["tenant"],
        model=row["model"],
        template=TaskTemplate(**json.loads(row["template"])),
        labels=[LabelInfo(**d) for d in json.loads(row["labels"])],
        requests_seen=row["requests_seen"],
        eligible_seen=row["eligible_seen"],
        unparseable=row["unparseable"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        reason=row["reason"],
        extra=extra,
    )


def _surrogate_from_row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "task_id": row["task_id"],
        "version": row["version"],
        "path": row["path"],
        "created_at": row["created_at"],
        "metrics": json.loads(row["metrics"]),
        "active": bool(row["active"]),
    }


class Registry:
    """Tasks, their history, surrogate versions, shadow/audit stats, offers, search results, counters.

    ``Registry(path)`` opens (and creates or migrates) the WAL database at ``path``;
    :meth:`create_in_memory` gives a private in-memory registry for tests and demos.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout_s: float = 10.0, fast_timeout_s: float = 0.05
    ):
        self.path = str(path)
        self.timeout_s = timeout_s
        self.fast_timeout_s = fast_timeout_s
        self._memory = self.path == ":memory:"
        self._local = threading.local()
        self._lock = threading.RLock()  # only used in memory mode (one shared connection)
        self._failures: Counter[str] = Counter()
        self._failures_lock = threading.Lock()
        self._shared: sqlite3.Connection | None = None
        if self._memory:
            self._shared = sqlite3.connect(
                f"file:poodle-{uuid.uuid4().hex}?mode=memory",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            self._shared.row_factory = sqlite3.Row
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._init_schema()

    @classmethod
    def create_in_memory(cls) -> Registry:
        """A private registry that lives in memory (the simulated constructor for tests)."""
        return cls(":memory:")

    # ------------------------------------------------------------------ connections

    def _connect(self, timeout_s: float) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        # NOTE: WAL lets readers (the engine polling states) proceed while a writer commits;
        # synchronous=NORMAL is durable across process crashes, which is what we need.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        fast = bool(getattr(self._local, "fast", False))
        conns: dict[tuple[int, bool], sqlite3.Connection] = self._local.__dict__.setdefault("conns", {})
        key = (os.getpid(), fast)  # a forked child must never reuse the parent's connection
        conn = conns.get(key)
        if conn is None:
            conn = conns[key] = self._connect(self.fast_timeout_s if fast else self.timeout_s)
        return conn

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        return self._lock if self._memory else contextlib.nullcontext()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._guard():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._guard():
            yield self._conn()

    def close(self) -> None:
        """Close this thread's connections (and the shared one in memory mode)."""
        for conn in self._local.__dict__.pop("conns", {}).values():
            conn.close()
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _current_version(self) -> int | None:
        with self._read() as c:
            if not c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
                return None
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row["value"]) if row else None

    def _init_schema(self) -> None:
        if self._current_version() == SCHEMA_VERSION:
            return  # NOTE: the common case is read-only, so opening never queues behind writers
        with self._write() as c:
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            has_tasks = c.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='tasks'"
            ).fetchone()
            if row is None and has_tasks:
                raise RegistryVersionError(
                    f"{self.path} has Poodle tables but no schema version; move it aside"
                )
            version = int(row["value"]) if row else None
            if version is not None and version > SCHEMA_VERSION:
                raise RegistryVersionError(
                    f"registry {self.path} has schema version {version}, newer than this Poodle "
                    f"(version {SCHEMA_VERSION}); upgrade poodle-vllm or point POODLE_STATE_DIR elsewhere"
                )
            while version is not None and version < SCHEMA_VERSION:
                migrate = _MIGRATIONS.get(version)
                if migrate is None:
                    raise RegistryVersionError(
                        f"no migration from registry schema version {version} in {self.path}"
                    )
                migrate(c)
                version += 1
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def schema_version(self) -> int:
        with self._read() as c:
            return int(c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # ------------------------------------------------------------------ serving-path safety

    def _try(self, fn: Callable[..., T], *args: Any, default: T, **kwargs: Any) -> T:
        """Run ``fn`` with the short timeout; on any error count it and return ``default``.

        NOTE: broad on purpose: the serving path must never see an exception from the registry
        (a locked database, a task deleted by the CLI, a transition another process already made).
        """
        prev = getattr(self._local, "fast", False)
        self._local.fast = True
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, sqlite3.Error):
                reason = "registry_busy" if "locked" in str(exc) or "busy" in str(exc) else "registry_error"
            else:
                reason = "registry_rejected"
            with self._failures_lock:
                self._failures[reason] += 1
            logger.debug("registry call %s failed: %s", getattr(fn, "__name__", fn), exc)
            return default
        finally:
            self._local.fast = prev

    def local_failures(self) -> dict[str, int]:
        """Failures of ``try_*`` calls in this process not yet written to the counters table."""
        with self._failures_lock:
            return dict(self._failures)

    def try_get_task(self, task_id: str) -> TaskInfo | None:
        return self._try(self.get_task, task_id, default=None)

    def try_list_tasks(self) -> list[TaskInfo] | None:
        """All tasks, or None when the database could not be read in time (keep the old view)."""
        return self._try(self.list_tasks, default=None)

    def try_active_surrogate(self, task_id: str) -> dict[str, Any] | None:
        return self._try(self.active_surrogate, task_id, default=None)

    def try_add_counts(
        self, task_id: str, requests: int = 0, eligible: int = 0, unparseable: int = 0
    ) -> bool:
        return self._try(self.add_counts, task_id, requests, eligible, unparseable, default=False)

    def try_increment_counter(self, name: str, by: int = 1) -> bool:
        def increment() -> bool:
            self.increment_counter(name, by)
            return True

        return self._try(increment, default=False)

    def try_upsert_task(self, task: TaskInfo) -> bool:
        return self._try(lambda: self.upsert_task(task) is not None, default=False)

    def try_set_state(self, task_id: str, state: str | TaskState, reason: str | None = None) -> bool:
        return self._try(lambda: self.set_state(task_id, state, reason) is not None, default=False)

    # ------------------------------------------------------------------ tasks

    def upsert_task(self, task: TaskInfo) -> TaskInfo:
        """Insert a new task, or update an existing one's template, labels, counts and extra.

        Counts are absolute (the detector owns them); :meth:`add_counts` adds to them instead.

        An existing task keeps its state, reason and creation time: state changes go through
        :meth:`set_state` so they are checked and recorded.
        """
        row = task_to_row(task)
        with self._write() as c:
            old = c.execute(
                "SELECT state, created_at FROM tasks WHERE task_id = ?", (task.task_id,)
            ).fetchone()
            if old is None:
                cols = ", ".join(row)
                c.execute(
                    f"INSERT INTO tasks ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
                )
                self._record_event(c, task.task_id, None, row["state"], task.reason or "created")
            else:
                keep = {"task_id", "state", "reason", "created_at"}
                sets = ", ".join(f"{k} = ?" for k in row if k not in keep)
                values = [v for k, v in row.items() if k not in keep]
                c.execute(f"UPDATE tasks SET {sets} WHERE task_id = ?", (*values, task.task_id))
            out = c.execute("SELECT * FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone()
        return task_from_row(out)

    def get_task(self, task_id: str) -> TaskInfo | None:
        with self._read() as c:
            row = c.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return task_from_row(row) if row else None

    def list_tasks(self, state: str | TaskState | None = None) -> list[TaskInfo]:
        with self._read() as c:
            if state is None:
                rows = c.execute("SELECT * FROM tasks ORDER BY created_at, task_id").fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM tasks WHERE state = ? ORDER BY created_at, task_id",
                    (TaskState(state).value,),
                ).fetchall()
        return [task_from_row(r) for r in rows]

    def find_task(self, name_or_id: str) -> TaskInfo | None:
        """A task by exact id, exact name, unique id prefix or unique name prefix; ambiguity raises ``ValueError``."""
        task = self.get_task(name_or_id)
        if task is not None:
            return task
        with self._read() as c:
            rows = c.execute("SELECT * FROM tasks WHERE name = ?", (name_or_id,)).fetchall()
            pattern = name_or_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            for column in ("task_id", "name"):  # then a unique id prefix, then a unique name prefix
                if not rows:
                    rows = c.execute(
                        f"SELECT * FROM tasks WHERE {column} LIKE ? ESCAPE '\\'", (pattern,)
                    ).fetchall()
        if len(rows) > 1:
            ids = ", ".join(r["task_id"] for r in rows)
            raise ValueError(f"'{name_or_id}' matches several tasks ({ids}); give more of the id")
        return task_from_row(rows[0]) if rows else None

    def set_policy(self, task_id: str, policy: str | None) -> None:
        """Per-task serving policy ('offer', 'auto', 'off'; None = the server's default)."""
        if policy is not None and policy not in ("offer", "auto", "off"):
            raise ValueError(f"unknown serving policy '{policy}'; valid: offer, auto, off")
        with self._write() as c:
            row = c.execute("SELECT extra FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                raise KeyError(f"no task '{task_id}' in the registry")
            extra = json.loads(row["extra"] or "{}")
            extra.pop("policy", None)
            if policy is not None:
                extra["policy"] = policy
            c.execute(
                "UPDATE tasks SET policy = ?, extra = ?, updated_at = ? WHERE task_id = ?",
                (policy, json.dumps(extra), time.time(), task_id),
            )
            self._record_event(c, task_id, None, None, f"policy set to {policy or 'default'}")

    def add_counts(self, task_id: str, requests: int = 0, eligible: int = 0, unparseable: int = 0) -> bool:
        """Add to a task's request counters; False if the task does not exist."""
        with self._write() as c:
            cur = c.execute(
                "UPDATE tasks SET requests_seen = requests_seen + ?, eligible_seen = eligible_seen + ?, "
                "unparseable = unparseable + ?, updated_at = ? WHERE task_id = ?",
                (requests, eligible, unparseable, time.time(), task_id),
            )
            return cur.rowcount > 0

    def set_state(
        self,
        task_id: str,
        state: str | TaskState,
        reason: str | None = None,
        *,
        expected: str | TaskState | list[str | TaskState] | None = None,
        force: bool = False,
    ) -> TaskInfo:
        """Move a task to ``state``, checking the lifecycle and recording an event.

        ``expected`` makes it a compare-and-set: the change only happens if the current state
        is one of them (so two workers cannot both start the same step). ``force`` skips the
        lifecycle check (operator override); the event still records it.
        """
        target = TaskState(state)
        with self._write() as c:
            row = c.execute("SELECT state FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                raise KeyError(f"no task '{task_id}' in the registry")
            current = TaskState(row["state"])
            if expected is not None:
                allowed = [TaskState(s) for s in (expected if isinstance(expected, list) else [expected])]
                if current not in allowed:
                    raise InvalidTransition(
                        f"task '{task_id}' is '{current.value}', expected {', '.join(s.value for s in allowed)}"
                    )
            if not force:
                check_transition(current, target)
            if current != target:
                c.execute(
                    "UPDATE tasks SET state = ?, reason = ?, updated_at = ? WHERE task_id = ?",
                    (target.value, reason, time.time(), task_id),
                )
                self._record_event(
                    c, task_id, current.value, target.value, reason if not force else f"forced: {reason}"
                )
            out = c.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return task_from_row(out)

    def _record_event(
        self,
        c: sqlite3.Connection,
        task_id: str,
        from_state: str | None,
        to_state: str | None,
        reason: str | None,
    ) -> None:
        c.execute(
            "INSERT INTO task_events (task_id, ts, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
            (task_id, time.time(), from_state, to_state, reason),
        )

    def record_event(
        self, task_id: str, reason: str, from_state: str | None = None, to_state: str | None = None
    ) -> None:
        """Append a history line that is not a state change (e.g. 'surrogate v2 trained')."""
        with self._write() as c:
            self._record_event(c, task_id, from_state, to_state, reason)

    def events(self, task_id: str) -> list[dict[str, Any]]:
        with self._read() as c:
            rows = c.execute("SELECT * FROM task_events WHERE task_id = ? ORDER BY id", (task_id,)).fetchall()
        return [{k: r[k] for k in ("ts", "from_state", "to_state", "reason")} for r in rows]

    def delete_task(self, task_id: str) -> None:
        with self._write() as c:
            for table in ("tasks", "task_events", "surrogates", "task_stats", "offers", "search_results"):
                c.execute(f"DELETE FROM {table} WHERE task_id = ?", (task_id,))

    # ------------------------------------------------------------------ surrogates

    def add_surrogate(
        self,
        task_id: str,
        path: str | os.PathLike[str],
        metrics: dict[str, Any] | None = None,
        *,
        activate: bool = False,
    ) -> int:
        """Register a trained surrogate; returns its version (1, 2, ...). Not active unless ``activate``."""
        with self._write() as c:
            row = c.execute(
                "SELECT MAX(version) AS v FROM surrogates WHERE task_id = ?", (task_id,)
            ).fetchone()
            version = int(row["v"] or 0) + 1
            c.execute(
                "INSERT INTO surrogates (task_id, version, path, created_at, metrics, active) VALUES (?, ?, ?, ?, ?, 0)",
                (task_id, version, str(path), time.time(), json.dumps(metrics or {})),
            )
            self._record_event(c, task_id, None, None, f"surrogate v{version} registered")
            if activate:
                self._activate(c, task_id, version)
        return version

    def _activate(self, c: sqlite3.Connection, task_id: str, version: int) -> None:
        if not c.execute(
            "SELECT 1 FROM surrogates WHERE task_id = ? AND version = ?", (task_id, version)
        ).fetchone():
            known = [
                r[0]
                for r in c.execute(
                    "SELECT version FROM surrogates WHERE task_id = ? ORDER BY version", (task_id,)
                )
            ]
            raise ValueError(
                f"task '{task_id}' has no surrogate version {version} (versions: {known or 'none'})"
            )
        c.execute("UPDATE surrogates SET active = (version = ?) WHERE task_id = ?", (version, task_id))
        self._record_event(c, task_id, None, None, f"surrogate v{version} active")

    def set_active_surrogate(self, task_id: str, version: int) -> None:
        """Make ``version`` the one the engine serves (also the rollback primitive)."""
        with self._write() as c:
            self._activate(c, task_id, version)

    def active_surrogate(self, task_id: str) -> dict[str, Any] | None:
        with self._read() as c:
            row = c.execute(
                "SELECT * FROM surrogates WHERE task_id = ? AND active = 1", (task_id,)
            ).fetchone()
        return _surrogate_from_row(row) if row else None

    def list_surrogates(self, task_id: str) -> list[dict[str, Any]]:
        with self._read() as c:
            rows = c.execute(
                "SELECT * FROM surrogates WHERE task_id = ? ORDER BY version", (task_id,)
            ).fetchall()
        return [_surrogate_from_row(r) for r in rows]

    # ------------------------------------------------------------------ stats, offers, search results

    def save_stats(self, task_id: str, kind: str, data: dict[str, Any], label: str = "") -> None:
        """Store a stats blob (``kind`` e.g. 'shadow', 'audit', 'drift'; ``label`` '' = whole task)."""
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO task_stats (task_id, kind, label, data, updated_at) VALUES (?, ?, ?, ?, ?)",
                (task_id, kind, label, json.dumps(data), time.time()),
            )

    def get_stats(self, task_id: str, kind: str) -> dict[str, dict[str, Any]]:
        """``{label: data}`` for one kind of stats ('' holds the whole-task blob)."""
        with self._read() as c:
            rows = c.execute(
                "SELECT label, data FROM task_stats WHERE task_id = ? AND kind = ?", (task_id, kind)
            ).fetchall()
        return {r["label"]: json.loads(r["data"]) for r in rows}

    def save_offer(self, task_id: str, data: dict[str, Any]) -> int:
        with self._write() as c:
            cur = c.execute(
                "INSERT INTO offers (task_id, created_at, data) VALUES (?, ?, ?)",
                (task_id, time.time(), json.dumps(data)),
            )
            return int(cur.lastrowid or 0)

    def get_offers(self, task_id: str | None = None) -> list[dict[str, Any]]:
        """Offers, newest first, as ``{"id", "task_id", "created_at", "data"}``."""
        with self._read() as c:
            if task_id is None:
                rows = c.execute("SELECT * FROM offers ORDER BY id DESC").fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM offers WHERE task_id = ? ORDER BY id DESC", (task_id,)
                ).fetchall()
        return [
            {
                "id": r["id"],
                "task_id": r["task_id"],
                "created_at": r["created_at"],
                "data": json.loads(r["data"]),
            }
            for r in rows
        ]

    def save_search_result(
        self, task_id: str, ranked: list[dict[str, Any]], signature: dict[str, Any] | None = None
    ) -> int:
        """Store a model search's ranked candidates with the task's signature (labels, embedding, ...)."""
        with self._write() as c:
            cur = c.execute(
                "INSERT INTO search_results (task_id, ts, signature, data) VALUES (?, ?, ?, ?)",
                (task_id, time.time(), json.dumps(signature or {}), json.dumps(ranked)),
            )
            return int(cur.lastrowid or 0)

    def get_search_results(self, task_id: str | None = None) -> list[dict[str, Any]]:
        """Search results, newest first, as ``{"id", "task_id", "ts", "signature", "ranked"}``."""
        with self._read() as c:
            if task_id is None:
                rows = c.execute("SELECT * FROM search_results ORDER BY id DESC").fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM search_results WHERE task_id = ? ORDER BY id DESC", (task_id,)
                ).fetchall()
        return [
            {
                "id": r["id"],
                "task_id": r["task_id"],
                "ts": r["ts"],
                "signature": json.loads(r["signature"]),
                "ranked": json.loads(r["data"]),
            }
            for r in rows
        ]

    def similar_search_results(
        self, signature: dict[str, Any], limit: int = 3, exclude_task: str | None = None
    ) -> list[tuple[float, dict[str, Any]]]:
        """Past search results ranked by signature similarity, so a new task can start from past winners."""
        scored = [
            (signature_similarity(signature, r["signature"]), r)
            for r in self.get_search_results()
            if r["task_id"] != exclude_task
        ]
        scored.sort(key=lambda x: -x[0])
        return scored[:limit]

    # ------------------------------------------------------------------ counters

    def increment_counter(self, name: str, by: int = 1) -> None:
        """Add ``by`` to a global counter; also flushes this process's pending ``try_*`` failures."""
        with self._failures_lock:
            pending, self._failures = self._failures, Counter()
        updates = Counter(pending)
        updates[name] += by
        try:
            with self._write() as c:
                now = time.time()
                for key, value in updates.items():
                    c.execute(
                        "INSERT INTO counters (name, value, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value, updated_at = excluded.updated_at",
                        (key, value, now),
                    )
        except BaseException:
            with self._failures_lock:
                self._failures.update(pending)  # keep them for the next attempt
            raise

    def counters(self) -> dict[str, int]:
        with self._read() as c:
            return {
                r["name"]: r["value"] for r in c.execute("SELECT name, value FROM counters ORDER BY name")
            }


def signature_similarity(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Similarity in [0, 1] of two task signatures.

    Uses the cosine of ``embedding`` vectors when both have one, else the Jaccard overlap of
    ``labels``; equal ``num_labels`` adds a small bonus so binary tasks prefer binary winners.
    """
    score = 0.0
    ea, eb = a.get("embedding"), b.get("embedding")
    if ea and eb and len(ea) == len(eb):
        dot = sum(x * y for x, y in zip(ea, eb, strict=True))
        na = sum(x * x for x in ea) ** 0.5
        nb = sum(y * y for y in eb) ** 0.5
        score = max(0.0, dot / (na * nb)) if na and nb else 0.0
    else:
        la, lb = {str(x).lower() for x in a.get("labels", [])}, {str(x).lower() for x in b.get("labels", [])}
        score = len(la & lb) / len(la | lb) if la | lb else 0.0
    if a.get("num_labels") is not None and a.get("num_labels") == b.get("num_labels"):
        score = 0.9 * score + 0.1
    return score


if __name__ == "__main__":  # a tiny demo: one task through its lifecycle
    reg = Registry.create_in_memory()
    tpl = TaskTemplate([1, 2, 3], [4], "Classify: ", "\nAnswer:")
    reg.upsert_task(TaskInfo("t1", "sentiment", TaskState.OBSERVING.value, "|", "smollm2", tpl))
    for st in (S.COLLECTING, S.READY, S.SEARCHING, S.TRAINING, S.SHADOW, S.OFFERED):
        reg.set_state("t1", st, "demo")
    reg.add_surrogate("t1", "/tmp/v1", {"accuracy": 0.9}, activate=True)
    reg.set_state("t1", S.SERVING, "accepted")
    print(reg.get_task("t1"))
    print(reg.events("t1"))
