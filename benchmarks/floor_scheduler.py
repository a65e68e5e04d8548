"""A latency probe for ``benchmarks/routing_latency.py``: Poodle's scheduler plus a no-work answer.

A request whose ``vllm_xargs`` carry ``floor_probe_ids`` ("1,2,3") is answered with those token
ids through exactly the path a surrogate answer takes (held out of vLLM's queues, emitted by
``compat.emit_answer`` at the next step), but with no surrogate in between: the floor of vLLM's
own shortest path (the shared notes' canned scheduler measured 11-13 ms over HTTP here). The
benchmark compares it with requests the surrogate answers, side by side on one server. Loaded
with ``--scheduler-cls benchmarks.floor_scheduler.FloorProbeScheduler`` (repository root on
``PYTHONPATH``); never part of a deployment.
"""

from __future__ import annotations

from typing import Any

from poodle_vllm.integration.vllm import compat
from poodle_vllm.integration.vllm.scheduler import PoodleScheduler
from poodle_vllm.surrogate.router import RouteDecision

PROBE_KEY = "floor_probe_ids"


class FloorProbeScheduler(PoodleScheduler):
    def add_request(self, request: Any) -> None:
        raw = compat.request_extra_args(request).get(PROBE_KEY)
        if raw and request.request_id not in self.requests:
            ids = [int(t) for t in str(raw).split(",") if t.strip()]
            self.requests[request.request_id] = request  # held like a surrogate answer
            decision = RouteDecision(hold=True, reason="floor_probe", mode="serve")
            self._answers.append((request, ids, decision))
            return
        super().add_request(request)
