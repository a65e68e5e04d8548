"""JSON views of registry content shared by the CLI and the ``/poodle/v1`` routes."""

from __future__ import annotations

import dataclasses
from typing import Any

VIEW_VERSION = "1"


def task_view(task: Any) -> dict[str, Any]:
    data = dataclasses.asdict(task)
    data["template"].pop("prefix_token_ids", None)
    data["template"].pop("suffix_token_ids", None)
    return data


def tasks_payload(registry: Any) -> dict[str, Any]:
    return {"version": VIEW_VERSION, "tasks": [task_view(t) for t in registry.list_tasks()]}


def offers_payload(registry: Any) -> dict[str, Any]:
    return {"version": VIEW_VERSION, "offers": registry.get_offers()}
