"""Real CLI output checked against docs/INTERFACES.md (keys and version)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "INTERFACES.md").read_text()


def _poodle(args: list[str], env_state: Path) -> dict:
    env = {"POODLE_STATE_DIR": str(env_state), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "poodle_vllm.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout)


def test_doc_declares_version_one() -> None:
    assert re.search(r"^# Poodle interfaces \(version 1\)", DOC, re.M)


def test_status_json_matches_doc(tmp_path: Path) -> None:
    status = _poodle(["status", "--json"], tmp_path)
    assert status["version"] == "1"
    assert {"version", "time", "paths", "server", "logs", "registry"} <= set(status)
    assert {"home", "models", "store", "state"} == set(status["paths"])
    assert {"known", "reachable"} <= set(status["server"])
    assert {"dir", "files", "records", "bytes", "torn_batches"} <= set(status["logs"])
    assert {"path", "tasks", "offers", "counters"} <= set(status["registry"])
    for key in ("version", "time", "paths", "server", "logs", "registry", "torn_batches"):
        assert key in DOC


def test_task_view_keys_match_doc(tmp_path: Path) -> None:
    from poodle_vllm.cli.views import tasks_payload
    from poodle_vllm.core.registry import Registry
    from poodle_vllm.types import LabelInfo, TaskInfo, TaskTemplate

    reg = Registry(tmp_path / "registry.sqlite")
    reg.upsert_task(
        TaskInfo(
            "t1",
            "reviews",
            "collecting",
            "|",
            "m",
            TaskTemplate([1, 2], [3], "a", "b"),
            [LabelInfo("positive", 3, [5, 2], "Positive", 1.0)],
        )
    )
    payload = tasks_payload(reg)
    assert payload["version"] == "1"
    task = payload["tasks"][0]
    documented = [
        "task_id",
        "name",
        "state",
        "tenant",
        "model",
        "template",
        "labels",
        "requests_seen",
        "eligible_seen",
        "unparseable",
        "created_at",
        "updated_at",
        "reason",
        "extra",
    ]
    assert set(documented) <= set(task)
    assert {"prefix_text", "suffix_text"} <= set(task["template"])
    assert {"label", "count", "canonical_text", "canonical_token_ids", "canonical_share"} <= set(
        task["labels"][0]
    )
    for key in documented:
        assert f"`{key}`" in DOC


def test_live_task_status_keys_match_doc() -> None:
    from poodle_vllm.config import ServingConfig
    from poodle_vllm.core.policy import LENGTH_BUCKETS
    from poodle_vllm.surrogate.quality import TaskQuality, summarize_live

    quality = TaskQuality(ServingConfig(), ["a", "b"])
    summary = {k: v for k, v in quality.bucket_summary("fit").items() if k != "note"}
    documented = ["verdict", "requests", "requests_while_serving", "served", "served_share", "llm_by_reason"]
    assert set(summary) == set(documented)
    exact = ["answers", "labelled", "canonical_exact_rate", "exact_answer_agreement"]
    assert set(quality.exact_summary()) == set(exact)
    view = summarize_live({"version": 1, **quality.snapshot()})
    assert set(view) == {"version", "buckets", "exact"} and set(view["buckets"]) == set(LENGTH_BUCKETS)
    for key in [*documented, *exact, *LENGTH_BUCKETS, "live_tasks", "buckets", "exact", "llm_<reason>"]:
        assert key in DOC, key
