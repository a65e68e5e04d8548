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
        fallbacks = CounterMetricFamily("poodle_fallbacks", "Automatic fallbacks to the LLM")
        fallbacks.add_metric([], float(global_counters.get("fallbacks", 0)))
        errors = CounterMetricFamily(
            "poodle_hook_errors", "Exceptions inside Poodle's hooks (request served by the LLM)"
        )
        errors.add_metric([], float(counters.get("hook_errors", 0) + counters.get("surrogate_errors", 0)))
        yield from (requests, saved, state, agreement, fallbacks, errors)


def register_metrics(paths: PoodlePaths) -> None:
    """Register the collector once with prometheus_client's default registry (vLLM's /metrics)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from prometheus_client import REGISTRY

    REGISTRY.register(PoodleCollector(paths))
    _REGISTERED = True
