"""Prometheus metrics read from the registry: reasons, endpoints and length buckets."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from poodle_vllm.config import ServingConfig  # noqa: E402
from poodle_vllm.core.registry import Registry  # noqa: E402
from poodle_vllm.integration.vllm.metrics import PoodleCollector  # noqa: E402
from poodle_vllm.paths import resolve_paths  # noqa: E402
from poodle_vllm.surrogate.quality import TaskQuality  # noqa: E402
from poodle_vllm.surrogate.router import ENGINE_STATS_KEY  # noqa: E402
from poodle_vllm.types import LabelInfo, RequestRecord, ServedBy, TaskInfo, TaskTemplate  # noqa: E402


def samples(families: list) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_collector_reports_reasons_endpoints_and_buckets(tmp_path: Path) -> None:
    paths = resolve_paths(state=tmp_path).ensure()
    reg = Registry(paths.registry)
    reg.upsert_task(TaskInfo("t1", "reviews", "serving", "|", "m", TaskTemplate([1], [2]), [LabelInfo("a", 1)]))
    reg.save_stats(
        ENGINE_STATS_KEY,
        "counters",
        {
            "llm_no_task": 7,
            "llm_long_input_unverified": 3,
            "llm_tools": 1,
            "endpoint:chat": 9,
            "endpoint:messages": 2,
            "endpoint:messages:surrogate": 1,
            "task:t1:surrogate": 4,
            "pid": 123,
        },
    )
    quality = TaskQuality(ServingConfig(), ["a", "b"], {"a": [1, 2], "b": [3, 2]})
    for truncated in (False, True):
        record = RequestRecord("r", 0, 0, [1], [1, 2], "stop", label="a", eligible=True, surrogate_label="a")
        quality.observe("shadow", record, truncated, serving=False)
    served = RequestRecord("s", 0, 0, [1], [1, 2], "stop", served_by=ServedBy.SURROGATE.value, surrogate_label="a")
    quality.observe("serve", served, False, serving=True, reason="serve")
    reg.save_stats("t1", "live", {"version": 1, **quality.snapshot()})

    got = samples(list(PoodleCollector(paths).collect()))
    assert got[("poodle_llm_requests_total", (("reason", "long_input_unverified"),))] == 3
    assert got[("poodle_llm_requests_total", (("reason", "no_task"),))] == 7
    assert got[("poodle_endpoint_requests_total", (("endpoint", "chat"),))] == 9
    assert got[("poodle_endpoint_surrogate_answers_total", (("endpoint", "messages"),))] == 1
    fit = (("bucket", "fit"), ("served_by", "surrogate"), ("task", "t1"))
    assert got[("poodle_bucket_requests_total", fit)] == 1
    assert got[("poodle_bucket_served_share", (("bucket", "fit"), ("task", "t1")))] == 1.0
    assert got[("poodle_bucket_verdict", (("bucket", "truncated"), ("task", "t1"), ("verdict", "pending")))] == 1
    assert got[("poodle_bucket_agreement", (("bucket", "truncated"), ("phase", "shadow"), ("task", "t1")))] == 1
    assert got[("poodle_exact_answers", (("measure", "canonical_exact_rate"), ("task", "t1")))] == 1.0
    assert not [k for k in got if "pid" in str(k)]
