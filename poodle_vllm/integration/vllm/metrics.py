"""Poodle's Prometheus metrics on vLLM's ``/metrics`` (API-server process).

A custom collector reads the registry at scrape time: the engine process keeps its counters and
per-task statistics there (every ``registry_poll_s``), so the API server needs no channel of its
own and the numbers survive restarts of either side. Savings are the tokens the surrogate
answered, priced at a configurable LLM list price (default GPT-4.1, ``core/cost.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from poodle_vllm.paths import PoodlePaths

logger = logging.getLogger("poodle.metrics")

_REGISTERED = False


class PoodleCollector:
    def __init__(self, paths: PoodlePaths, price_key: str = "gpt-4.1") -> None:
        self.paths = paths
        self.price_key = price_key

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from poodle_vllm.core.cost import LLM_PRICES
        from poodle_vllm.core.registry import Registry
        from poodle_vllm.surrogate.router import ENGINE_STATS_KEY

        if not self.paths.registry.exists():
            return
        try:
            reg = Registry(self.paths.registry, timeout_s=0.5)
            tasks = reg.list_tasks()
            counters = reg.get_stats(ENGINE_STATS_KEY, "counters").get("", {})
            global_counters = reg.counters()
            live = {t.task_id: reg.get_stats(t.task_id, "live").get("", {}) for t in tasks}
        except Exception:  # a scrape must never fail because the registry is busy
            logger.exception("poodle: metrics scrape could not read the registry")
            return
        price = LLM_PRICES[self.price_key]
        requests = CounterMetricFamily(
            "poodle_requests",
            "Finished requests by task and by who served them",
            labels=["task", "served_by"],
        )
        saved = CounterMetricFamily(
            "poodle_estimated_savings_usd",
            f"LLM cost avoided by surrogate answers at {price.name} list prices",
            labels=["task"],
        )
        state = GaugeMetricFamily(
            "poodle_task_state", "1 for the task's current lifecycle state", labels=["task", "state"]
        )
        agreement = GaugeMetricFamily(
            "poodle_agreement",
            "Surrogate agreement with the LLM (shadow gate / audits)",
            labels=["task", "phase"],
        )
        for t in tasks:
            state.add_metric([t.task_id, t.state], 1.0)
            for served_by in ("llm", "surrogate"):
                requests.add_metric(
                    [t.task_id, served_by], float(counters.get(f"task:{t.task_id}:{served_by}", 0))
                )
            usd = (
                counters.get(f"task:{t.task_id}:saved_prompt_tokens", 0) * price.input_per_m
                + counters.get(f"task:{t.task_id}:saved_output_tokens", 0) * price.output_per_m
            ) / 1e6
            saved.add_metric([t.task_id], usd)
            snap = live.get(t.task_id) or {}
            if snap.get("gate"):
                agreement.add_metric([t.task_id, "shadow"], float(snap["gate"].get("agreement", 0.0)))
            if snap.get("audit") and snap["audit"].get("n"):
                agreement.add_metric([t.task_id, "audit"], float(snap["audit"].get("agreement", 0.0)))
        buckets = _bucket_families(tasks, live)
        fallbacks = CounterMetricFamily("poodle_fallbacks", "Automatic fallbacks to the LLM")
        fallbacks.add_metric([], float(global_counters.get("fallbacks", 0)))
        errors = CounterMetricFamily(
            "poodle_hook_errors", "Exceptions inside Poodle's hooks (request served by the LLM)"
        )
        errors.add_metric([], float(counters.get("hook_errors", 0) + counters.get("surrogate_errors", 0)))
        yield from (
            requests,
            saved,
            state,
            agreement,
            fallbacks,
            errors,
            *_reason_families(counters),
            *buckets,
        )


def _reason_families(counters: dict[str, Any]) -> list[Any]:
    """Requests the LLM answered, by the reason the surrogate did not; requests by API endpoint."""
    from prometheus_client.core import CounterMetricFamily

    llm = CounterMetricFamily(
        "poodle_llm_requests",
        "Requests answered by the LLM, by why the surrogate did not answer (no_task, shadow, tools, ...)",
        labels=["reason"],
    )
    endpoint = CounterMetricFamily(
        "poodle_endpoint_requests",
        "Requests by API endpoint (chat, completions, responses, messages, other, direct)",
        labels=["endpoint"],
    )
    endpoint_served = CounterMetricFamily(
        "poodle_endpoint_surrogate_answers", "Surrogate answers by API endpoint", labels=["endpoint"]
    )
    for key, value in sorted(counters.items()):
        if not isinstance(value, (int, float)):
            continue
        if key.startswith("llm_"):
            llm.add_metric([key[4:]], float(value))
        elif key.startswith("endpoint:"):
            parts = key.split(":")
            if len(parts) == 2:
                endpoint.add_metric([parts[1]], float(value))
            elif len(parts) == 3 and parts[2] == "surrogate":
                endpoint_served.add_metric([parts[1]], float(value))
    return [llm, endpoint, endpoint_served]


def _bucket_families(tasks: list[Any], live: dict[str, dict[str, Any]]) -> list[Any]:
    """Per input-length bucket (fit / truncated): traffic, share served, agreement; exact answers."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    requests = CounterMetricFamily(
        "poodle_bucket_requests",
        "Requests of a task with a surrogate prediction, by input-length bucket and who served them",
        labels=["task", "bucket", "served_by"],
    )
    share = GaugeMetricFamily(
        "poodle_bucket_served_share",
        "Share of a serving task's requests the surrogate answered, by input-length bucket",
        labels=["task", "bucket"],
    )
    agreement = GaugeMetricFamily(
        "poodle_bucket_agreement",
        "Surrogate agreement with the LLM by input-length bucket (shadow gate / audits)",
        labels=["task", "bucket", "phase"],
    )
    verdict = GaugeMetricFamily(
        "poodle_bucket_verdict",
        "1 for a bucket's shadow-gate verdict (pending, passed, failed, handed_back)",
        labels=["task", "bucket", "verdict"],
    )
    exact = GaugeMetricFamily(
        "poodle_exact_answers",
        "How often the LLM's own answer was the canonical answer string: of its label "
        "(canonical_exact_rate) or of the surrogate's label (exact_answer_agreement)",
        labels=["task", "measure"],
    )
    for t in tasks:
        snap = live.get(t.task_id) or {}
        for bucket, b in (snap.get("buckets") or {}).items():
            served, total = int(b.get("served") or 0), int(b.get("requests") or 0)
            requests.add_metric([t.task_id, bucket, "surrogate"], float(served))
            requests.add_metric([t.task_id, bucket, "llm"], float(max(0, total - served)))
            if b.get("served_share") is not None:
                share.add_metric([t.task_id, bucket], float(b["served_share"]))
            if b.get("verdict"):
                verdict.add_metric([t.task_id, bucket, str(b["verdict"])], 1.0)
            gate = b.get("gate") or {}
            if gate.get("total"):
                agreement.add_metric([t.task_id, bucket, "shadow"], float(gate.get("agreement", 0.0)))
            audit = b.get("audit") or {}
            if audit.get("n"):
                agreement.add_metric([t.task_id, bucket, "audit"], float(audit.get("agreement", 0.0)))
        for measure in ("canonical_exact_rate", "exact_answer_agreement"):
            value = (snap.get("exact") or {}).get(measure)
            if value is not None:
                exact.add_metric([t.task_id, measure], float(value))
    return [requests, share, agreement, verdict, exact]


def register_metrics(paths: PoodlePaths) -> None:
    """Register the collector once with prometheus_client's default registry (vLLM's /metrics)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from prometheus_client import REGISTRY

    REGISTRY.register(PoodleCollector(paths))
    _REGISTERED = True
