"""TaskRouter without an engine: detection feeds the registry, routing follows the contract."""

from __future__ import annotations

import random
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from poodle_vllm.config import load_config
from poodle_vllm.paths import resolve_paths
from poodle_vllm.surrogate.router import ArrivingRequest, TaskRouter
from poodle_vllm.surrogate.runtime import Prediction
from poodle_vllm.types import RequestRecord, SamplingInfo, TaskState

PREFIX = "<|system|>You are helpful.<|user|>Classify the sentiment of this review. Review: "
SUFFIX = "<|end|><|assistant|>"
WORDS = ["great", "awful", "fine", "boring", "lovely", "dull", "superb", "weak", "moving", "flat"]


def enc(text: str) -> list[int]:
    return [ord(c) for c in text]


def dec(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def make_router(tmp_path: Path, **serving) -> TaskRouter:
    cfg = load_config(
        {"detection": {"min_requests": 4}, "serving": {"min_train_items": 10, **serving}, "worker": False}
    )
    router = TaskRouter(cfg, resolve_paths(state=tmp_path), model="m", block_size=16, start_threads=False)
    router.decode_raw = dec  # type: ignore[method-assign]
    router.decode_output = dec  # type: ignore[method-assign]
    router.detector.decode = dec
    return router


def record(i: int, rng: random.Random, salt: str | None = None) -> RequestRecord:
    # A distinct opening per review: the detector treats openings shared by many prompts as template.
    review = f"{i * 7919 % 10007}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
    text = PREFIX + review + SUFFIX
    answer = "positive" if rng.random() < 0.5 else "negative"
    return RequestRecord(
        request_id=f"r{i}",
        arrival_time=time.time(),
        finish_time=time.time(),
        prompt_token_ids=enc(text),
        output_token_ids=enc(answer),
        finish_reason="stop",
        prompt_text=text,
        output_text=answer,
        block_size=16,
        sampling=SamplingInfo(temperature=0.0),
        cache_salt=salt,
    )


class FakeLive:
    def __init__(
        self, state: str, label: str, confidence: float, truncated: bool = False, serves_truncated: bool = True
    ) -> None:
        self.state, self.version, self.label, self.confidence = state, 1, label, confidence
        self.truncated, self.serves_truncated = truncated, serves_truncated
        self.observed: list[tuple[str, RequestRecord, bool, str]] = []

    def submit(self, text: str) -> Future:
        fut: Future = Future()
        probs = {self.label: self.confidence}
        fut.set_result(Prediction(self.label, self.confidence, probs, truncated=self.truncated))
        self.submitted = text
        return fut

    def canonical_ids(self, label: str) -> list[int]:
        return enc(label) + [2]

    def serves(self, truncated: bool) -> bool:
        return self.serves_truncated or not truncated

    def observe(self, mode: str, rec: RequestRecord, truncated: bool = False, reason: str = "") -> None:
        self.observed.append((mode, rec, truncated, reason))

    def close(self) -> None:
        pass


def detected_router(tmp_path: Path, **serving) -> tuple[TaskRouter, str]:
    router = make_router(tmp_path, **serving)
    rng = random.Random(0)
    for i in range(30):
        router.observe(
            record(i, rng),
            router.on_arrival(ArrivingRequest(f"r{i}", record(i, random.Random(i)).prompt_token_ids)),
        )
    router.sync_once()
    tasks = router.registry.list_tasks()
    assert len(tasks) == 1
    return router, tasks[0].task_id


def arrival(i: int, salt: str | None = None, **sampling) -> ArrivingRequest:
    rec = record(i, random.Random(1000 + i), salt)
    return ArrivingRequest(
        f"a{i}",
        rec.prompt_token_ids,
        cache_salt=salt,
        prompt_text=rec.prompt_text,
        sampling=SamplingInfo(temperature=0.0, **sampling),
    )


def test_detection_reaches_registry_and_ready(tmp_path: Path) -> None:
    router, task_id = detected_router(tmp_path)
    task = router.registry.get_task(task_id)
    assert task is not None and task.state == TaskState.READY.value
    assert {lab.label for lab in task.labels} == {"positive", "negative"}
    router.log.flush()
    from poodle_vllm.arrowlog import count_records

    assert count_records(tmp_path / "logs") == 30
    router.close()


def test_serving_task_holds_request_and_answers_canonically(tmp_path: Path) -> None:
    router, task_id = detected_router(tmp_path, audit_fraction=0.0)
    live = FakeLive(TaskState.SERVING.value, "positive", 0.97)
    router.live._tasks[task_id] = live  # type: ignore[assignment]
    decision = router.on_arrival(arrival(1))
    assert decision.hold and decision.task_id == task_id
    assert live.submitted.startswith("moving") or live.submitted  # the slot text, not the template
    assert PREFIX not in live.submitted and SUFFIX not in live.submitted
    assert router.answer_for(decision) == enc("positive") + [2]
    router.close()


def test_contract_and_tenants_send_requests_to_the_llm(tmp_path: Path) -> None:
    router, task_id = detected_router(tmp_path, confidence_threshold=0.9, audit_fraction=0.0)
    router.live._tasks[task_id] = FakeLive(TaskState.SERVING.value, "negative", 0.6)  # type: ignore[assignment]
    low = router.on_arrival(arrival(2))
    assert low.hold and router.answer_for(low) is None and low.reason == "low_confidence"
    assert not router.on_arrival(arrival(3, n=2)).hold
    assert router.on_arrival(arrival(4, logprobs=1)).reason == "logprobs"
    assert router.on_arrival(arrival(5, structured=True)).reason == "structured_output"
    other_tenant = router.on_arrival(arrival(6, salt="tenant-b"))
    assert not other_tenant.hold and other_tenant.task_id is None
    opt = arrival(7)
    opt.xargs = {"poodle": "off"}
    assert router.on_arrival(opt).opt_out
    router.close()


def test_shadow_predictions_are_observed_beside_the_llm(tmp_path: Path) -> None:
    router, task_id = detected_router(tmp_path)
    live = FakeLive(TaskState.SHADOW.value, "positive", 0.8)
    router.live._tasks[task_id] = live  # type: ignore[assignment]
    arr = arrival(8)
    decision = router.on_arrival(arr)
    assert not decision.hold and decision.mode == "shadow"
    rec = record(8, random.Random(1008))
    router.observe(rec, decision)
    assert rec.surrogate_label == "positive" and rec.task_id == task_id
    assert live.observed and live.observed[0][0] == "shadow"
    router.close()


def test_a_hook_error_never_raises(tmp_path: Path) -> None:
    router = make_router(tmp_path)

    def boom(*a, **k):
        raise RuntimeError("detector exploded")

    router.detector.match = boom  # type: ignore[method-assign]
    decision = router.on_arrival(arrival(9))
    assert not decision.hold and router.counters["hook_errors"] == 1
    router.detector.observe = boom  # type: ignore[method-assign]
    rec = record(9, random.Random(9))
    router.observe(rec, decision)  # logged anyway
    router.log.flush()
    from poodle_vllm.arrowlog import count_records

    assert count_records(tmp_path / "logs") == 1
    router.close()


@pytest.mark.parametrize("bad", [[], [1]])
def test_odd_prompts_are_not_assigned(tmp_path: Path, bad: list[int]) -> None:
    router = make_router(tmp_path)
    assert router.on_arrival(ArrivingRequest("x", bad)).task_id is None
    router.close()


def test_client_named_task_only_when_allowed(tmp_path: Path) -> None:
    for allowed, expected in ((False, None), (True, "reviews")):
        router, task_id = detected_router(tmp_path / str(allowed), allow_client_xargs=allowed)
        arr = arrival(11)
        arr.xargs = {"poodle_task": "reviews"}
        decision = router.on_arrival(arr)
        rec = record(11, random.Random(1011))
        router.observe(rec, decision)
        router.sync_once()
        task = router.registry.get_task(task_id)
        assert task is not None
        assert (task.name == "reviews") is (expected == "reviews")
        router.close()


def finish(router: TaskRouter, decision, i: int, served_by: str = "llm") -> RequestRecord:
    """What the scheduler does when a request ends: a record handed to the observer."""
    rec = record(i, random.Random(1000 + i))
    rec.served_by = served_by
    router.observe(rec, decision)
    return rec


def test_request_facts_from_the_api_side_follow_the_contract(tmp_path: Path) -> None:
    router, task_id = detected_router(tmp_path, audit_fraction=0.0)
    router.live._tasks[task_id] = FakeLive(TaskState.SERVING.value, "positive", 0.99)  # type: ignore[assignment]
    cases = [
        ({"poodle_endpoint": "chat", "poodle_tools": True, "poodle_turns": 1}, "tools"),
        ({"poodle_endpoint": "messages", "poodle_tools": False, "poodle_turns": 3}, "multi_turn"),
        ({"poodle_endpoint": "other", "poodle_tools": False, "poodle_turns": 1}, "endpoint_other"),
        ({"poodle_endpoint": "responses", "poodle_tools": False, "poodle_turns": 0}, "request_shape_unknown"),
    ]
    for i, (xargs, reason) in enumerate(cases):
        arr = arrival(20 + i)
        arr.xargs = xargs
        decision = router.on_arrival(arr)
        assert not decision.hold and decision.reason == reason and decision.task_id == task_id
        finish(router, decision, 20 + i)
        assert router.counters[f"llm_{reason}"] == 1
    # A single-turn request without tools is answered whichever endpoint rendered it; so is an
    # untagged one (offline LLM.generate): routing is on the prompt's token ids.
    for i, endpoint in enumerate(("responses", "messages", "completions", None)):
        arr = arrival(30 + i)
        arr.xargs = {"poodle_endpoint": endpoint, "poodle_tools": False, "poodle_turns": 1} if endpoint else {}
        decision = router.on_arrival(arr)
        assert decision.hold, endpoint
        assert router.answer_for(decision) == enc("positive") + [2]
        finish(router, decision, 30 + i, served_by="surrogate")
        assert router.counters[f"endpoint:{endpoint or 'direct'}:surrogate"] == 1
    assert router.counters["endpoint:chat"] == 1 and router.counters["endpoint:responses"] == 2
    router.close()


def test_every_llm_answer_is_counted_once_by_reason(tmp_path: Path) -> None:
    router, task_id = detected_router(tmp_path, confidence_threshold=0.9, audit_fraction=0.0)
    before = {k: v for k, v in router.counters.items() if k.startswith("llm_")}
    # The detection phase: no task yet, then a task without a surrogate.
    assert set(before) == {"llm_no_task", "llm_not_serving"} and sum(before.values()) == 30
    router.live._tasks[task_id] = FakeLive(TaskState.SERVING.value, "negative", 0.5)  # type: ignore[assignment]
    low = router.on_arrival(arrival(40))
    assert router.answer_for(low) is None
    finish(router, low, 40)
    lp = router.on_arrival(arrival(41, logprobs=2))
    finish(router, lp, 41)
    unmatched = router.on_arrival(ArrivingRequest("x", [5, 6, 7]))
    finish(router, unmatched, 42)
    llm = {k: v - before.get(k, 0) for k, v in router.counters.items() if k.startswith("llm_")}
    assert {k: v for k, v in llm.items() if v} == {"llm_no_task": 1, "llm_low_confidence": 1, "llm_logprobs": 1}
    router.close()


def test_truncated_inputs_go_to_the_llm_until_their_bucket_passed(tmp_path: Path) -> None:
    router, task_id = detected_router(tmp_path, audit_fraction=0.0)
    live = FakeLive(TaskState.SERVING.value, "positive", 0.99, truncated=True, serves_truncated=False)
    router.live._tasks[task_id] = live  # type: ignore[assignment]
    decision = router.on_arrival(arrival(50))
    assert decision.hold and router.answer_for(decision) is None
    assert decision.reason == "long_input_unverified" and decision.truncated
    # The LLM answers it; the prediction beside it is a shadow sample for the truncated bucket.
    assert decision.mode == "shadow"
    finish(router, decision, 50)
    assert router.counters["llm_long_input_unverified"] == 1
    mode, rec, truncated, reason = live.observed[-1]
    assert (mode, truncated, reason) == ("shadow", True, "long_input_unverified")
    assert rec.surrogate_label == "positive"
    live.serves_truncated = True  # the bucket passed its own gate
    again = router.on_arrival(arrival(51))
    assert router.answer_for(again) == enc("positive") + [2]
    finish(router, again, 51, served_by="surrogate")
    assert live.observed[-1][2] is True and router.counters["served_by_surrogate"] == 1
    router.close()
