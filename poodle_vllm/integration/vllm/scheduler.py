"""The engine-side hook: a thin ``Scheduler`` subclass given with ``--scheduler-cls``.

It converts vLLM requests into Poodle types and delegates every decision to
:class:`poodle_vllm.surrogate.router.TaskRouter`. A request routed to a surrogate is kept out
of vLLM's queues (the model never sees it) until its prediction is back; then its canonical
answer is emitted through vLLM's own output path, so every endpoint (chat, completions,
streaming, offline ``LLM.generate``) returns exactly the LLM's answer string. Anything that
goes wrong here sends the request to the LLM instead.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler

from poodle_vllm.config import config_from_additional
from poodle_vllm.integration.vllm import compat
from poodle_vllm.paths import resolve_paths
from poodle_vllm.types import ServedBy

logger = logging.getLogger("poodle.scheduler")

# Engine utility method name: the API server calls it with call_utility_async.
UTILITY_METHOD = "poodle_query"


class PoodleScheduler(Scheduler):
    """vLLM scheduler with Poodle's arrival/finish hooks and in-engine answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._router: Any = None
        self._held: dict[
            str, tuple[Any, Any]
        ] = {}  # request id -> (request, decision): awaiting the surrogate
        self._answers: list[tuple[Any, list[int], Any]] = []  # ready to emit this step
        self._decisions: dict[str, Any] = {}  # LLM-answered requests with a shadow/audit prediction
        self._served_by: dict[str, str] = {}
        self._last_step_empty = False
        cfg = config_from_additional(dict(self.vllm_config.additional_config or {}))  # type: ignore[arg-type]
        if cfg is None or not cfg.enabled:
            logger.info("poodle: scheduler loaded but Poodle is not enabled in --additional-config")
            return
        compat.check_vllm_version()
        paths = resolve_paths(cfg.home, cfg.state_dir).ensure()  # unwritable: clear start-up error
        from poodle_vllm.surrogate.router import TaskRouter

        model_config = self.vllm_config.model_config
        try:
            self._router = TaskRouter(
                cfg,
                paths,
                model=str(model_config.served_model_name or model_config.model),
                block_size=int(self.cache_config.block_size),
                tokenizer_path=str(model_config.tokenizer),
            )
        except Exception:  # Poodle failing must not take the LLM down: stay inert
            logger.exception("poodle: could not start; serving without Poodle")
            return
        _register_utility(self)
        self._worker_proc = None
        if cfg.worker:
            from poodle_vllm.worker.pipeline import spawn_worker_process

            self._worker_proc = spawn_worker_process(cfg, paths.state / "worker.log")
        logger.info("poodle: scheduler active (state in %s)", paths.state)

    # -- arrival ------------------------------------------------------------------------------

    def add_request(self, request: Any) -> None:
        router = self._router
        if (
            router is None
            or request.request_id in self.requests
            or not compat.is_plain_text_generation(request)
        ):
            super().add_request(request)
            return
        decision = None
        try:
            arrival = _arrival_from_request(request)
            decision = router.on_arrival(arrival)
        except Exception:
            logger.exception("poodle: arrival hook failed; the LLM answers")
            router.counters["hook_errors"] += 1
        if decision is not None and decision.hold:
            # Kept out of every queue: the model never schedules it. It sits in self.requests so
            # that aborts (finish_requests) find it.
            self.requests[request.request_id] = request
            if self.log_stats:
                compat.record_queued(request)
            self._held[request.request_id] = (request, decision)
            return
        if decision is not None and (decision.future is not None or decision.task_id or decision.opt_out):
            self._decisions[request.request_id] = decision
        super().add_request(request)

    def _release_held(self) -> None:
        """Move finished surrogate predictions to the answer list, or hand requests to the LLM."""
        for req_id, (request, decision) in list(self._held.items()):
            future = decision.future
            if future is None or not (future.done() or self._router.expired(decision)):
                continue
            del self._held[req_id]
            ids = self._router.answer_for(decision, timeout=0) if future.done() else None
            if ids is None:
                if not future.done():
                    decision.reason = "surrogate_timeout"  # counted as llm_<reason> when it finishes
                decision.hold = False
                self._decisions[req_id] = decision
                del self.requests[req_id]  # super().add_request puts it back with queue bookkeeping
                super().add_request(request)
            else:
                self._answers.append((request, ids, decision))

    # -- stepping -----------------------------------------------------------------------------

    def has_requests(self) -> bool:
        return bool(self._held) or bool(self._answers) or super().has_requests()

    def get_num_unfinished_requests(self) -> int:
        return super().get_num_unfinished_requests() + len(self._held) + len(self._answers)

    def schedule(self, throttle_prefills: bool = False) -> Any:
        if self._held:
            self._release_held()
            if self._held and not self._answers and not super().has_requests():
                # Nothing else to do: wait briefly for the surrogate instead of spinning the loop.
                _, first = next(iter(self._held.values()))
                try:
                    first.future.result(timeout=0.002)
                except Exception:
                    pass
                self._release_held()
        if self._answers and not self._last_step_empty:
            # Fast path: an empty step so answers leave now, not after a full model step.
            self._last_step_empty = True
            return compat.make_empty_scheduler_output()
        self._last_step_empty = False
        return super().schedule(throttle_prefills)

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        # Emit before super(): it copies this step's finished ids into the outputs.
        emitted: dict[int, list[Any]] = defaultdict(list)
        answers, self._answers = self._answers, []
        for request, ids, decision in answers:
            try:
                self._served_by[request.request_id] = ServedBy.SURROGATE.value
                self._decisions[request.request_id] = decision
                marker = {
                    "poodle_served_by": ServedBy.SURROGATE.value,
                    "poodle_task": decision.task_id,
                    "poodle_version": decision.version,
                }
                out = compat.emit_answer(self, request, ids, marker)
                emitted[request.client_index].append(out)
            except Exception:
                logger.exception("poodle: emitting a surrogate answer failed")
                self._router.counters["emit_errors"] += 1
        result = super().update_from_output(scheduler_output, model_runner_output)
        return compat.merge_outputs(result, emitted) if emitted else result

    # -- finish / abort ---------------------------------------------------------------------------

    def finish_requests(self, request_ids: Any, finished_status: Any) -> list[Any]:
        if self._held and request_ids is not None:
            ids = (request_ids,) if isinstance(request_ids, str) else list(request_ids)
            for rid in ids:
                self._held.pop(rid, None)
        elif request_ids is None:
            self._held.clear()
        return super().finish_requests(request_ids, finished_status)

    def _free_request(self, request: Any, delay_free_blocks: bool = False) -> Any:
        result = super()._free_request(request, delay_free_blocks)
        router = self._router
        if router is not None and compat.is_plain_text_generation(request):
            try:
                rid = request.request_id
                decision = self._decisions.pop(rid, None)
                served_by = self._served_by.pop(rid, ServedBy.LLM.value)
                record = compat.record_from_request(
                    request, model=router.model, block_size=router.block_size, served_by=served_by
                )
                router.on_finish(record, decision)
            except Exception:
                logger.exception("poodle: finish hook failed")
                router.counters["hook_errors"] += 1
        return result

    def shutdown(self) -> None:
        worker = getattr(self, "_worker_proc", None)
        if worker is not None:
            worker.terminate()
        if self._router is not None:
            try:
                self._router.close()
            except Exception:
                logger.exception("poodle: router close failed")
        super().shutdown()

    def poodle_status(self) -> dict[str, Any]:
        if self._router is None:
            return {"enabled": False}
        status = self._router.status()
        status.update(enabled=True, held=len(self._held), time=time.time())
        return status


def _arrival_from_request(request: Any) -> Any:
    from poodle_vllm.surrogate.router import ArrivingRequest

    extra = compat.request_extra_args(request)
    return ArrivingRequest(
        request_id=request.request_id,
        prompt_token_ids=list(request.prompt_token_ids),
        block_hashes=[compat.block_hash_to_int(h) for h in request.block_hashes],
        cache_salt=request.cache_salt,
        lora_name=compat.lora_name_of(request),
        sampling=compat.sampling_info_from_params(request.sampling_params),
        xargs=extra,
        prompt_text=extra.get("poodle_prompt_text"),
        arrival_time=float(request.arrival_time),
    )


def _register_utility(scheduler: PoodleScheduler) -> None:
    """Expose ``poodle_query`` on the EngineCore so the API server can read Poodle's status."""
    from vllm.v1.engine.core import EngineCore

    def poodle_query(self: Any, what: str = "status") -> dict[str, Any]:
        sched = getattr(self, "scheduler", None)
        if isinstance(sched, PoodleScheduler):
            return sched.poodle_status()
        return {"enabled": False}

    if not hasattr(EngineCore, UTILITY_METHOD):
        setattr(EngineCore, UTILITY_METHOD, poodle_query)
