"""Engine-side orchestration of one Poodle deployment, free of vLLM types.

``TaskRouter`` lives in vLLM's EngineCore process (the scheduler shell in
``integration/vllm/scheduler.py`` owns one). It decides, at a request's arrival, whether the
request is answered by a task's surrogate, by the LLM with the surrogate predicting alongside
(shadow test or audit), or by the LLM alone; and at a request's end it hands the finished
record to a background thread that decodes texts, runs task detection, updates shadow and
audit statistics and writes the Arrow log. Nothing slow runs on the scheduler's thread: the
arrival path is a prefix match plus a queue put, the finish path a queue put.

A second background thread synchronises with the registry: it stores detected tasks, moves
tasks along their lifecycle (collecting -> ready, shadow -> offered/serving, serving ->
fallback), and loads the surrogate version that the registry marks active.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from poodle_vllm.config import PoodleConfig
from poodle_vllm.paths import PoodlePaths
from poodle_vllm.surrogate.tasks import LiveTask, LiveTaskSet
from poodle_vllm.types import RequestRecord, SamplingInfo, ServedBy, TaskState

logger = logging.getLogger("poodle.router")

ENGINE_STATS_KEY = "_engine"
"""Pseudo task id under which the engine stores its counters in the registry's stats table."""
ROUTABLE_STATES = {TaskState.SHADOW.value, TaskState.OFFERED.value, TaskState.SERVING.value}

# Facts about a request that only the API server knows (the engine sees token ids). The API-side
# wrapper (integration/vllm/endpoints.py) writes them into ``SamplingParams.extra_args`` and
# overwrites whatever a client sent under these keys, so they cannot be spoofed.
XARG_ENDPOINT = "poodle_endpoint"
"""``chat``, ``completions``, ``responses``, ``messages``, or ``other`` (another API route)."""
XARG_TOOLS = "poodle_tools"
"""True when the request declared tools (functions) the model may call."""
XARG_TURNS = "poodle_turns"
"""Conversation turns in the prompt (user, assistant and tool messages; system ones not counted)."""
REQUEST_FACT_KEYS = (XARG_ENDPOINT, XARG_TOOLS, XARG_TURNS)
UNKNOWN_ENDPOINT = "direct"
"""Endpoint of a request that no API wrapper tagged (offline ``LLM.generate``, another frontend)."""


@dataclass
class ArrivingRequest:
    """What the router needs to know about a request when it arrives (converted at the edge)."""

    request_id: str
    prompt_token_ids: list[int]
    block_hashes: list[int] = field(default_factory=list)
    cache_salt: str | None = None
    lora_name: str | None = None
    sampling: SamplingInfo = field(default_factory=SamplingInfo)
    xargs: dict[str, Any] = field(default_factory=dict)
    prompt_text: str | None = None
    arrival_time: float = 0.0


@dataclass
class RouteDecision:
    """The router's answer for one request. ``hold`` means: wait for ``future``, then call
    :meth:`TaskRouter.answer_for` to get the token ids to emit (None: send to the LLM)."""

    hold: bool = False
    task_id: str | None = None
    reason: str = "no_task"
    mode: str = "llm"  # llm | serve | shadow | audit
    future: Future | None = None
    version: int | None = None
    opt_out: bool = False
    submitted_at: float = 0.0
    endpoint: str = UNKNOWN_ENDPOINT
    truncated: bool | None = None
    """Whether the surrogate had to truncate the input (known once its prediction is back)."""
    requested_name: str | None = None
    """A task name the client asked for (``vllm_xargs.poodle_task``), when configuration allows it."""


LLM_ONLY = RouteDecision()


class TaskRouter:
    """Routing, observation and lifecycle for every task of one served model."""

    def __init__(
        self,
        config: PoodleConfig,
        paths: PoodlePaths,
        *,
        model: str,
        block_size: int,
        tokenizer_path: str | None = None,
        start_threads: bool = True,
    ) -> None:
        from poodle_vllm.arrowlog import ArrowLogWriter
        from poodle_vllm.core.detector import TaskDetector
        from poodle_vllm.core.registry import Registry

        self.config = config
        self.paths = paths.ensure()
        self.model = model
        self.block_size = block_size
        self.counters: Counter[str] = Counter()
        self._tokenizer_path = tokenizer_path
        self._tokenizer: Any = None
        self._lock = threading.RLock()  # guards the detector (arrival thread vs observer thread)
        self.detector = TaskDetector(
            config.detection, model=model, block_size=block_size, tokenizer_decode=self.decode_raw
        )
        self._templates: dict[str, Any] = {}
        self._task_names: dict[str, str] = {}
        self.registry = Registry(self.paths.registry)
        self.log = ArrowLogWriter(self.paths.logs, config.log) if config.log.enabled else None
        self.live = LiveTaskSet(config.serving, self.paths)
        self._finished: queue.Queue[tuple[RequestRecord, RouteDecision] | None] = queue.Queue(
            maxsize=config.log.queue_size
        )
        self._rng = random.Random(0)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        try:
            self.detector.load_tasks(self.registry.list_tasks())
        except Exception:
            logger.exception("poodle: could not restore tasks from the registry")
            self.counters["restore_errors"] += 1
        if start_threads:
            self.start()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("poodle-observer", self._observe_loop), ("poodle-sync", self._sync_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        try:
            self._finished.put_nowait(None)
        except queue.Full:
            pass
        for t in self._threads:
            t.join(timeout=5)
        self.sync_once()
        self.live.close()
        if self.log is not None:
            self.log.close()

    # -- text ----------------------------------------------------------------------------------

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None and self._tokenizer_path:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
        return self._tokenizer

    def decode_raw(self, token_ids: list[int]) -> str:
        """Decode keeping special tokens: prompt pieces, comparable with the rendered prompt text."""
        tok = self._load_tokenizer()
        return str(tok.decode(token_ids, skip_special_tokens=False)) if tok is not None else ""

    def decode_output(self, token_ids: list[int]) -> str:
        """Decode an answer as the API returns it (special tokens such as EOS hidden)."""
        tok = self._load_tokenizer()
        return str(tok.decode(token_ids, skip_special_tokens=True)) if tok is not None else ""

    # -- arrival (scheduler thread: must be fast and must never raise) --------------------------

    def on_arrival(self, req: ArrivingRequest) -> RouteDecision:
        try:
            return self._route(req)
        except Exception:
            logger.exception("poodle: routing failed; the LLM answers")
            self.counters["hook_errors"] += 1
            return LLM_ONLY

    def _route(self, req: ArrivingRequest) -> RouteDecision:
        decision = self._route_request(req)
        name = req.xargs.get("poodle_task")
        if name and self.config.serving.allow_client_xargs:
            if decision is LLM_ONLY:
                decision = RouteDecision()
            decision.requested_name = str(name)[:200]
        return decision

    def _route_request(self, req: ArrivingRequest) -> RouteDecision:
        self.counters["arrivals"] += 1
        endpoint = str(req.xargs.get(XARG_ENDPOINT) or UNKNOWN_ENDPOINT)[:32]
        self.counters[f"endpoint:{endpoint}"] += 1
        if str(req.xargs.get("poodle", "")).lower() == "off":
            self.counters["opt_out"] += 1
            return RouteDecision(reason="opt_out", opt_out=True, endpoint=endpoint)
        with self._lock:
            match = self.detector.match(req.prompt_token_ids, req.cache_salt, req.lora_name)
        if match is None:
            return LLM_ONLY
        task_id = match[0]
        live = self.live.get(task_id)
        if live is None or live.state not in ROUTABLE_STATES:
            return RouteDecision(task_id=task_id, reason="not_serving", endpoint=endpoint)
        blocker = self.contract_blocker(req.sampling, req.xargs)
        if blocker:
            return RouteDecision(task_id=task_id, reason=blocker, endpoint=endpoint)
        slot_text = self._slot_text(task_id, req)
        if slot_text is None:
            return RouteDecision(task_id=task_id, reason="no_slot", endpoint=endpoint)
        mode = "shadow"
        if live.state == TaskState.SERVING.value:
            mode = "audit" if self._rng.random() < self.config.serving.audit_fraction else "serve"
        future = live.submit(slot_text)
        if future is None:
            return RouteDecision(task_id=task_id, reason="surrogate_unavailable", endpoint=endpoint)
        return RouteDecision(
            hold=mode == "serve",
            task_id=task_id,
            reason=mode,
            mode=mode,
            future=future,
            version=live.version,
            submitted_at=time.monotonic(),
            endpoint=endpoint,
        )

    def contract_blocker(self, sp: SamplingInfo, xargs: dict[str, Any] | None = None) -> str | None:
        """Why a request must go to the LLM even when its task is served (None: it may not).

        The surrogate returns the LLM's canonical answer for the predicted label, so it can
        only stand in where that answer is what the LLM would return: one choice, no
        log-probabilities (never fabricated), no structured-output constraint, sampling no
        hotter than what counts as an eligible label. Routing is on prompt token ids, so any
        endpoint whose rendered prompt matches the task is fine (``/v1/messages`` and
        ``/v1/responses`` render to the same tokens and post-process the same output tokens
        the same way); but a request that declares tools may have its output parsed as a tool
        call and its tool schemas rendered into the prompt, and a multi-turn prompt carries
        history the surrogate was never shadow-tested on: both stay with the LLM, as do
        requests from API routes Poodle does not know (``other``: batch chat, token-in routes)
        and requests whose shape the API side could not read. Requests no API wrapper tagged
        (offline ``LLM.generate``) are judged on their tokens and sampling alone.
        """
        facts = xargs or {}
        if facts.get(XARG_ENDPOINT) == "other":
            return "endpoint_other"
        if facts.get(XARG_TOOLS):
            return "tools"
        try:
            turns = int(facts.get(XARG_TURNS, 1))
        except (TypeError, ValueError):
            turns = 0
        if turns < 1:
            return "request_shape_unknown"
        if turns > 1:
            return "multi_turn"
        if sp.n != 1:
            return "n_gt_1"
        if sp.logprobs is not None or sp.prompt_logprobs is not None:
            return "logprobs"
        if sp.structured:
            return "structured_output"
        if sp.temperature > self.config.detection.eligible_max_temperature:
            return "temperature"
        return None

    def _slot_text(self, task_id: str, req: ArrivingRequest) -> str | None:
        from poodle_vllm.core.template import extract_slot_text

        template = self._templates.get(task_id)
        if template is None:
            with self._lock:
                info = self.detector.get_task(task_id)
            if info is None:
                return None
            template = self._templates[task_id] = info.template
        return extract_slot_text(template, req.prompt_token_ids, req.prompt_text, self.decode_raw)

    def answer_for(self, decision: RouteDecision, timeout: float = 0.0) -> list[int] | None:
        """Token ids of the canonical answer for a held request, or None to send it to the LLM."""
        try:
            assert decision.future is not None and decision.task_id is not None
            pred = decision.future.result(timeout=timeout)
            live = self.live.get(decision.task_id)
            if live is None or live.state != TaskState.SERVING.value:
                decision.reason = "task_left_serving"
                return None
            decision.truncated = bool(getattr(pred, "truncated", False))
            if not live.serves(decision.truncated):
                # This length bucket has not passed its own shadow gate: the LLM answers and the
                # prediction beside it is one more shadow sample for the bucket (chosen before
                # the confidence is looked at, so the sample is not biased by it).
                decision.reason = "long_input_unverified" if decision.truncated else "short_input_unverified"
                decision.mode = "shadow"
                return None
            if pred.confidence < self.config.serving.confidence_threshold:
                decision.reason = "low_confidence"
                return None
            ids = live.canonical_ids(pred.label)
            if not ids:
                decision.reason = "no_canonical_answer"
                return None
            return ids
        except Exception:
            logger.exception("poodle: surrogate failed; the LLM answers")
            self.counters["surrogate_errors"] += 1
            decision.reason = "surrogate_error"
            return None

    def expired(self, decision: RouteDecision) -> bool:
        return time.monotonic() - decision.submitted_at > self.config.serving.surrogate_timeout_s

    # -- finish (scheduler thread: a queue put) ---------------------------------------------------

    def on_finish(self, record: RequestRecord, decision: RouteDecision | None) -> None:
        try:
            self._finished.put_nowait((record, decision or LLM_ONLY))
            self.counters["finished"] += 1
        except queue.Full:
            self.counters["observe_dropped"] += 1
        except Exception:
            self.counters["hook_errors"] += 1

    def _observe_loop(self) -> None:
        while True:
            item = self._finished.get()
            if item is None:
                return
            try:
                self.observe(*item)
            except Exception:
                logger.exception("poodle: observing a finished request failed")
                self.counters["observe_errors"] += 1

    def observe(self, record: RequestRecord, decision: RouteDecision) -> None:
        """Decode, detect, update shadow/audit statistics and log one finished request.

        The record is logged even when a step before fails: losing no data matters more than
        a complete row.
        """
        try:
            self._annotate(record, decision)
        except Exception:
            logger.exception("poodle: annotating request %s failed; logging it as is", record.request_id)
            self.counters["observe_errors"] += 1
        if self.log is not None and not self.log.submit(record):
            self.counters["log_dropped"] += 1

    def _annotate(self, record: RequestRecord, decision: RouteDecision) -> None:
        if record.output_text is None:
            record.output_text = self.decode_output(record.output_token_ids)
        record.route_reason = decision.reason
        if decision.opt_out:
            record.eligible = False
            record.ineligible_reason = "opt_out"
        elif self.config.detection.enabled:
            with self._lock:
                self.detector.observe(record)
        if decision.task_id and not record.task_id:
            record.task_id = decision.task_id
        if decision.requested_name and record.task_id:
            self._task_names[record.task_id] = decision.requested_name
        if decision.future is not None and decision.future.done():
            try:
                pred = decision.future.result(timeout=0)
                record.surrogate_label = pred.label
                record.surrogate_confidence = float(pred.confidence)
                record.surrogate_version = decision.version
                decision.truncated = bool(getattr(pred, "truncated", False))
                live = self.live.get(decision.task_id or "")
                if live is not None:
                    live.observe(decision.mode, record, decision.truncated, decision.reason)
            except Exception:
                self.counters["surrogate_errors"] += 1
        self.counters[f"served_by_{record.served_by}"] += 1
        if record.served_by == ServedBy.SURROGATE.value:
            self.counters[f"endpoint:{decision.endpoint}:surrogate"] += 1
        else:
            # Every request the LLM answered, once, by the reason it was not the surrogate's.
            self.counters[f"llm_{decision.reason}"] += 1
        if record.task_id:
            # Per-task counters feed the Prometheus metrics (requests by task and server, savings).
            self.counters[f"task:{record.task_id}:{record.served_by}"] += 1
            if record.served_by == ServedBy.SURROGATE.value:
                self.counters[f"task:{record.task_id}:saved_prompt_tokens"] += record.num_prompt_tokens
                self.counters[f"task:{record.task_id}:saved_output_tokens"] += record.num_output_tokens

    # -- registry sync (background) -------------------------------------------------------------

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.config.serving.registry_poll_s):
            try:
                self.sync_once()
            except Exception:
                logger.exception("poodle: registry sync failed")
                self.counters["sync_errors"] += 1

    def sync_once(self) -> None:
        with self._lock:
            tasks = self.detector.tasks()
        for task in tasks:
            task.name = self._task_names.get(task.task_id, task.name)
            self.live.store_detected(self.registry, task)
        self.live.refresh(self.registry)
        self.live.evaluate(self.registry)
        self.registry.save_stats(ENGINE_STATS_KEY, "counters", {**self.counters, "pid": os.getpid()})

    def status(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "log": self.log.stats() if self.log is not None else None,
            "live_tasks": self.live.describe(),
        }


__all__ = ["ArrivingRequest", "RouteDecision", "TaskRouter", "LiveTask", "LiveTaskSet"]
