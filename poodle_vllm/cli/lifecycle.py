"""Operator decisions on a task: ``poodle accept``, ``reject``, ``rollback`` and ``offers``.

Each command checks the lifecycle edge before changing anything (and changes the state with a
compare-and-set, so a worker moving the task at the same moment makes the command fail
cleanly instead of overwriting the worker's state).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from poodle_vllm.cli.tasks import add_json_option, add_registry_option, open_registry, task_summary
from poodle_vllm.core.registry import InvalidTransition, Registry, check_transition
from poodle_vllm.types import TaskInfo, TaskState


def _fail(message: str) -> int:
    print(f"poodle: error: {message}", file=sys.stderr)
    return 1


def _resolve(reg: Registry, name: str) -> TaskInfo:
    task = reg.find_task(name)
    if task is None:
        raise LookupError(f"no task matching '{name}' (see `poodle tasks`)")
    return task


def _emit(args: argparse.Namespace, task: TaskInfo, message: str, **extra: Any) -> int:
    if getattr(args, "json", False):
        print(json.dumps({**task_summary(task), **extra, "message": message}, indent=2))
    else:
        print(message)
    return 0


def accept_task(reg: Registry, name: str, force: bool = False) -> tuple[TaskInfo, int]:
    """Switch an offered task to its surrogate; returns the task and the version now served."""
    task = _resolve(reg, name)
    state = TaskState(task.state)
    if state != TaskState.OFFERED and not (force and state == TaskState.SHADOW):
        hint = " (use --force to accept a task still in shadow)" if state == TaskState.SHADOW else ""
        raise InvalidTransition(
            f"task '{task.name}' is '{state.value}', only an 'offered' task can be accepted{hint}"
        )
    check_transition(state, TaskState.SERVING)
    active = reg.active_surrogate(task.task_id)
    if active is None:
        versions = reg.list_surrogates(task.task_id)
        if not versions:
            raise InvalidTransition(f"task '{task.name}' has no trained surrogate to serve")
        reg.set_active_surrogate(task.task_id, versions[-1]["version"])
        active = versions[-1]
    task = reg.set_state(task.task_id, TaskState.SERVING, "accepted by operator", expected=state)
    return task, int(active["version"])


def reject_task(reg: Registry, name: str, reason: str | None = None) -> TaskInfo:
    task = _resolve(reg, name)
    state = TaskState(task.state)
    if state == TaskState.RETIRED:
        raise InvalidTransition(f"task '{task.name}' is already retired")
    check_transition(state, TaskState.RETIRED)
    return reg.set_state(task.task_id, TaskState.RETIRED, reason or "rejected by operator", expected=state)


def rollback_task(reg: Registry, name: str, version: int | None = None) -> tuple[TaskInfo, int, int | None]:
    """Serve an earlier surrogate version (default: the one before the active one).

    Returns the task, the version now active and the version that was active before.
    """
    task = _resolve(reg, name)
    state = TaskState(task.state)
    versions = [s["version"] for s in reg.list_surrogates(task.task_id)]
    if not versions:
        raise InvalidTransition(f"task '{task.name}' has no surrogate versions to roll back to")
    active = reg.active_surrogate(task.task_id)
    current = int(active["version"]) if active else None
    if version is None:
        older = [v for v in versions if current is None or v < current]
        if not older:
            raise InvalidTransition(f"task '{task.name}' serves v{current}, there is no earlier version")
        version = max(older)
    if version not in versions:
        raise InvalidTransition(f"task '{task.name}' has no surrogate v{version} (versions: {versions})")
    if version == current and state == TaskState.SERVING:
        raise InvalidTransition(f"task '{task.name}' already serves v{version}")
    check_transition(state, TaskState.SERVING)  # validate before touching the active version
    reg.set_active_surrogate(task.task_id, version)
    reason = f"rolled back to surrogate v{version}" + (f" from v{current}" if current else "")
    if state == TaskState.SERVING:
        reg.record_event(task.task_id, reason)
        task = reg.get_task(task.task_id) or task
    else:
        task = reg.set_state(task.task_id, TaskState.SERVING, reason, expected=state)
    return task, version, current


def list_offers(reg: Registry) -> list[dict[str, Any]]:
    """Offered tasks with their newest offer (gate report, metrics, savings estimate)."""
    out = []
    for task in reg.list_tasks(TaskState.OFFERED):
        offers = reg.get_offers(task.task_id)
        out.append({**task_summary(task), "offer": offers[0] if offers else None})
    return out


def cmd_accept(args: argparse.Namespace) -> int:
    reg = open_registry(args)
    assert reg is not None
    try:
        task, version = accept_task(reg, args.task, args.force)
    except (InvalidTransition, LookupError) as exc:
        return _fail(str(exc))
    return _emit(
        args,
        task,
        f"task '{task.name}' ({task.task_id}) is now served by surrogate v{version}",
        version=version,
    )


def cmd_reject(args: argparse.Namespace) -> int:
    reg = open_registry(args)
    assert reg is not None
    try:
        task = reject_task(reg, args.task, args.reason)
    except (InvalidTransition, LookupError) as exc:
        return _fail(str(exc))
    return _emit(args, task, f"task '{task.name}' ({task.task_id}) retired; the LLM answers it")


def cmd_rollback(args: argparse.Namespace) -> int:
    reg = open_registry(args)
    assert reg is not None
    try:
        task, version, previous = rollback_task(reg, args.task, args.version)
    except (InvalidTransition, LookupError) as exc:
        return _fail(str(exc))
    msg = f"task '{task.name}' ({task.task_id}) now serves surrogate v{version}" + (
        f" (was v{previous})" if previous else ""
    )
    return _emit(args, task, msg, version=version, previous_version=previous)


def cmd_offers(args: argparse.Namespace) -> int:
    reg = open_registry(args, must_exist=False)
    offers = list_offers(reg) if reg else []
    if getattr(args, "json", False):
        print(json.dumps(offers, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not offers:
        console.print("no offers: no task has passed its shadow gate and is waiting for `poodle accept`")
        return 0
    table = Table(title="tasks waiting for `poodle accept TASK`")
    for col in ("id", "name", "requests", "offered", "summary"):
        table.add_column(col)
    for o in offers:
        data = (o["offer"] or {}).get("data", {})
        summary = data.get("summary") or ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in data.items()
            if not isinstance(v, (dict, list))
        )
        created = o["offer"]["created_at"] if o["offer"] else None
        table.add_row(
            o["task_id"],
            o["name"],
            str(o["requests_seen"]),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "-",
            summary,
        )
    console.print(table)
    return 0


def add_parser(subparsers: Any) -> None:
    accept = subparsers.add_parser("accept", help="serve an offered task with its surrogate")
    accept.add_argument("task", help="task id, id prefix or name")
    accept.add_argument("--force", action="store_true", help="also accept a task still in shadow")
    reject = subparsers.add_parser("reject", help="retire a task: the LLM keeps answering it")
    reject.add_argument("task", help="task id, id prefix or name")
    reject.add_argument("--reason", default=None, help="recorded in the task's history")
    rollback = subparsers.add_parser("rollback", help="serve an earlier surrogate version")
    rollback.add_argument("task", help="task id, id prefix or name")
    rollback.add_argument(
        "--version", type=int, default=None, help="version to serve (default: the previous one)"
    )
    offers = subparsers.add_parser("offers", help="tasks that passed their shadow gate")
    for parser, func in (
        (accept, cmd_accept),
        (reject, cmd_reject),
        (rollback, cmd_rollback),
        (offers, cmd_offers),
    ):
        add_json_option(parser)
        add_registry_option(parser)
        parser.set_defaults(func=func)
