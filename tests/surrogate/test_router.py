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
    def __init__(self, state: str, label: str, confidence: float) -> None:
        self.state, self.version, self.label, self.confidence = state, 1, label, confidence
        self.observed: list[tuple[str, RequestRecord]] = []

    def submit(self, text: str) -> Future:
        fut: Future = Future()
        fut.set_result(Prediction(self.label, self.confidence, {self.label: self.confidence}))
        self.submitted = text
        return fut

    def canonical_ids(self, label: str) -> list[int]:
        return enc(label) + [2]

    def observe(self, mode: str, rec: RequestRecord) -> None:
        self.observed.append((mode, rec))

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
