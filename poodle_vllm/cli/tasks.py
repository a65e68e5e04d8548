"""``poodle tasks``: list the recurring tasks in the registry, and ``poodle tasks show TASK``.

The registry is ``resolve_paths().registry`` (``$POODLE_STATE_DIR/registry.sqlite``) unless
``--registry PATH`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from poodle_vllm.core.registry import Registry
from poodle_vllm.types import TaskInfo

SLOT = "{{SLOT}}"


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="registry file (default: $POODLE_STATE_DIR/registry.sqlite)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def registry_path(args: argparse.Namespace) -> Path:
    path = getattr(args, "registry", None)
    if path:
        return Path(path).expanduser()
    from poodle_vllm.paths import resolve_paths

    return resolve_paths().registry


def open_registry(args: argparse.Namespace, must_exist: bool = True) -> Registry | None:
    """The registry named by ``--registry`` or the environment; None if absent and not ``must_exist``."""
    path = registry_path(args)
    if not path.exists():
        if must_exist:
            raise FileNotFoundError(
                f"no task registry at {path} (start `poodle serve` or set POODLE_STATE_DIR)"
            )
        return None
    return Registry(path)


def template_display(task: TaskInfo) -> str:
    """``prefix{{SLOT}}suffix`` from the template's texts (token ids where a text is unknown)."""
    t = task.template
    prefix = (
        t.prefix_text
        if t.prefix_text is not None
        else f"<{len(t.prefix_token_ids)} tokens: {t.prefix_token_ids[:16]}>"
    )
    suffix = (
        t.suffix_text
        if t.suffix_text is not None
        else f"<{len(t.suffix_token_ids)} tokens: {t.suffix_token_ids[:16]}>"
    )
    return f"{prefix}{SLOT}{suffix}"


def task_summary(task: TaskInfo) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "name": task.name,
        "state": task.state,
        "tenant": task.tenant,
        "model": task.model,
        "requests_seen": task.requests_seen,
        "eligible_seen": task.eligible_seen,
        "unparseable": task.unparseable,
        "labels": [lab.label for lab in task.labels],
        "reason": task.reason,
        "updated_at": task.updated_at,
    }


def task_detail(reg: Registry, task: TaskInfo) -> dict[str, Any]:
    total = sum(lab.count for lab in task.labels)
    return {
        **task_summary(task),
        "template": template_display(task),
        "template_tokens": dataclasses.asdict(task.template),
        "label_space": [
            {
                "label": lab.label,
                "count": lab.count,
                "share": lab.count / total if total else 0.0,
                "canonical_text": lab.canonical_text,
                "canonical_token_ids": lab.canonical_token_ids,
                "canonical_share": lab.canonical_share,
            }
            for lab in task.labels
        ],
        "created_at": task.created_at,
        "extra": task.extra,
        "history": reg.events(task.task_id),
        "surrogates": reg.list_surrogates(task.task_id),
        "offers": reg.get_offers(task.task_id),
        "live": _live_summary(reg, task.task_id),
    }


def _live_summary(reg: Registry, task_id: str) -> dict[str, Any] | None:
    """Per input-length bucket verdict and share served, from the engine's stored statistics."""
    from poodle_vllm.surrogate.quality import summarize_live

    snap = reg.get_stats(task_id, "live").get("")
    return summarize_live(snap) if snap else None


def _ts(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_tasks(args: argparse.Namespace) -> int:
    reg = open_registry(args, must_exist=False)
    tasks = reg.list_tasks() if reg else []
    if getattr(args, "json", False):
        from poodle_vllm.cli.views import VIEW_VERSION, task_view

        print(json.dumps({"version": VIEW_VERSION, "tasks": [task_view(t) for t in tasks]}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not tasks:
        console.print(f"no tasks yet in {registry_path(args)}")
        return 0
    table = Table(title=f"Poodle tasks ({registry_path(args)})")
    for col in ("id", "name", "state", "tenant", "requests", "labels"):
        table.add_column(
            col,
            justify="right" if col == "requests" else "left",
            no_wrap=col in ("id", "state"),
            overflow="fold",
            min_width=12 if col == "labels" else None,
        )
    for t in tasks:
        labels = ", ".join(lab.label for lab in t.labels)
        table.add_row(t.task_id, t.name, t.state, t.tenant, str(t.requests_seen), labels)
    console.print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reg = open_registry(args)
    assert reg is not None
    task = reg.find_task(args.task)
    if task is None:
        print(f"poodle: error: no task matching '{args.task}'", file=sys.stderr)
        return 1
    detail = task_detail(reg, task)
    if getattr(args, "json", False):
        print(json.dumps(detail, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{escape(task.name)}[/bold]  ({task.task_id})  state [bold]{task.state}[/bold]")
    if task.reason:
        console.print(f"reason: {escape(task.reason)}")
    console.print(f"tenant {task.tenant!r}  model {task.model!r}  created {_ts(task.created_at)}")
    console.print(
        f"requests seen {task.requests_seen}, eligible {task.eligible_seen}, unparseable answers {task.unparseable}"
    )
    console.print("template:")
    console.print(escape(repr(detail["template"])))
    labels = Table(title="label space")
    for col in ("label", "count", "share", "canonical answer", "canonical share"):
        labels.add_column(col)
    for lab in detail["label_space"]:
        labels.add_row(
            escape(lab["label"]),
            str(lab["count"]),
            f"{lab['share']:.1%}",
            escape(repr(lab["canonical_text"])),
            f"{lab['canonical_share']:.1%}",
        )
    console.print(labels)
    if detail["surrogates"]:
        sur = Table(title="surrogates")
        for col in ("version", "active", "created", "path", "metrics"):
            sur.add_column(col)
        for s in detail["surrogates"]:
            metrics = ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in s["metrics"].items()
            )
            sur.add_row(
                str(s["version"]),
                "*" if s["active"] else "",
                _ts(s["created_at"]),
                escape(s["path"]),
                escape(metrics),
            )
        console.print(sur)
    if detail["live"]:
        live = Table(title=f"input-length buckets (surrogate v{detail['live']['version']})")
        for col in ("bucket", "shadow gate", "requests", "while serving", "served", "served share"):
            live.add_column(col)
        for name, b in detail["live"]["buckets"].items():
            share = b["served_share"]
            live.add_row(
                name,
                str(b["verdict"]),
                str(b["requests"]),
                str(b["requests_while_serving"]),
                str(b["served"]),
                "-" if share is None else f"{share:.1%}",
            )
        console.print(live)
        exact = detail["live"].get("exact") or {}
        if exact.get("canonical_exact_rate") is not None:
            console.print(
                f"LLM answers that were exactly the canonical string: {exact['canonical_exact_rate']:.1%} "
                f"of {exact['labelled']} labelled"
            )
    hist = Table(title="history")
    for col in ("time", "from", "to", "reason"):
        hist.add_column(col)
    for e in detail["history"]:
        hist.add_row(_ts(e["ts"]), e["from_state"] or "", e["to_state"] or "", escape(e["reason"] or ""))
    console.print(hist)
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("tasks", help="list recurring tasks (and `tasks show TASK`)")
    add_json_option(parser)
    add_registry_option(parser)
    parser.set_defaults(func=cmd_tasks)
    sub = parser.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND")
    show = sub.add_parser("show", help="template, label space, history and surrogates of one task")
    show.add_argument("task", help="task id, id prefix or name")
    add_json_option(show)
    add_registry_option(show)
    show.set_defaults(func=cmd_show)
