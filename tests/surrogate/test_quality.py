"""Per-length-bucket quality of a surrogate: gates, audits, traffic, exact answers, persistence."""

from __future__ import annotations

import pytest

from poodle_vllm.config import ServingConfig
from poodle_vllm.core.policy import FAILED, FIT, HANDED_BACK, PASSED, PENDING, TRUNCATED
from poodle_vllm.surrogate.quality import TaskQuality, summarize_live
from poodle_vllm.types import RequestRecord, ServedBy

LABELS = ["negative", "positive"]
CANONICAL = {"negative": [11, 2], "positive": [12, 2]}
CFG = ServingConfig(
    shadow_requests=40, shadow_min_per_label=10, gate_target=0.7, fallback_window=20, fallback_target=0.7
)


def rec(
    llm: str | None, surrogate: str, served_by: str = ServedBy.LLM.value, answer: list[int] | None = None
) -> RequestRecord:
    if answer is None:
        answer = CANONICAL[llm] if llm else [99, 2]
    return RequestRecord(
        "r",
        0.0,
        0.0,
        [1, 2, 3],
        answer,
        "stop",
        label=llm,
        eligible=True,
        surrogate_label=surrogate,
        surrogate_confidence=0.9,
        served_by=served_by,
    )


def shadow(q: TaskQuality, truncated: bool, pairs: list[tuple[str, str]], times: int = 1) -> None:
    for _ in range(times):
        for llm, sur in pairs:
            q.observe("shadow", rec(llm, sur), truncated, serving=False)


GOOD = [("positive", "positive"), ("negative", "negative")]
MAJORITY = [("positive", "positive"), ("negative", "positive")]


def test_fit_bucket_decides_the_switch_and_truncated_waits_for_its_own_gate() -> None:
    q = TaskQuality(CFG, LABELS, CANONICAL)
    shadow(q, False, GOOD, times=15)  # 30 fit samples, 15 per label
    shadow(q, True, GOOD, times=5)  # 10 truncated samples: too few per label
    decided = q.settle()
    assert set(decided) == {FIT} and decided[FIT].passed
    assert q.gate.verdicts == {FIT: PASSED, TRUNCATED: PENDING}
    assert q.task_gate().passed and q.serves(FIT) and not q.serves(TRUNCATED)
    # More truncated samples arrive (while serving, from unverified requests): the bucket passes.
    shadow(q, True, GOOD, times=6)
    assert set(q.settle()) == {TRUNCATED} and q.serves(TRUNCATED)


def test_each_bucket_keeps_the_per_label_wilson_rule() -> None:
    q = TaskQuality(CFG, LABELS, CANONICAL)
    shadow(q, False, GOOD, times=15)
    shadow(q, True, MAJORITY, times=12)  # truncated: always "positive", zero agreement on negative
    decided = q.settle()
    assert decided[FIT].passed and not decided[TRUNCATED].passed
    assert q.gate.verdicts[TRUNCATED] == FAILED and not q.serves(TRUNCATED)
    assert "negative" in q.gate.notes[TRUNCATED]
    # A decided bucket is frozen: later perfect samples cannot talk it into passing.
    shadow(q, True, GOOD, times=50)
    assert q.settle() == {} and q.gate.gates[TRUNCATED].total == 24
    # The pooled view (what a single gate would have seen) is still reported.
    pooled = q.snapshot()["gate_pooled"]
    assert pooled["total"] == 54


def test_pooled_total_counts_towards_shadow_requests() -> None:
    q = TaskQuality(CFG, LABELS, CANONICAL)
    shadow(q, False, GOOD, times=10)  # 20 fit, 10 per label, but 20 < 40 shadow_requests in all
    assert q.settle() == {}
    shadow(q, True, [("positive", "positive")], times=20)  # 20 truncated: pooled total 40
    assert q.settle()[FIT].passed


def test_audits_and_traffic_per_bucket_hand_back_only_the_failing_bucket() -> None:
    q = TaskQuality(CFG, LABELS, CANONICAL)
    shadow(q, False, GOOD, times=15)
    shadow(q, True, GOOD, times=10)
    q.settle()
    for _ in range(30):
        q.observe("serve", rec(None, "positive", ServedBy.SURROGATE.value), False, serving=True, reason="serve")
        q.observe("serve", rec(None, "positive", ServedBy.SURROGATE.value), True, serving=True, reason="serve")
    for _ in range(20):
        q.observe("audit", rec("positive", "positive"), False, serving=True, reason="audit")
        q.observe("audit", rec("negative", "positive"), True, serving=True, reason="audit")
    # A low-confidence hand-over is a selected sample: counted as traffic, never as agreement.
    q.observe("serve", rec("negative", "positive"), False, serving=True, reason="low_confidence")
    assert q.audits[FIT].n == 20 and q.audits[TRUNCATED].n == 20 and q.audit.n == 20  # a window
    assert q.problem(FIT) is None
    handed = q.hand_back_failing_buckets()
    assert [b for b, _ in handed] == [TRUNCATED] and "truncated inputs" in handed[0][1]
    assert q.gate.verdicts[TRUNCATED] == HANDED_BACK and not q.serves(TRUNCATED)
    fit = q.bucket_summary(FIT)
    assert fit["served"] == 30 and fit["requests_while_serving"] == 51
    assert fit["served_share"] == pytest.approx(30 / 51)
    assert fit["llm_by_reason"] == {"audit": 20, "low_confidence": 1, "shadow": 30}
    snap = q.snapshot()
    assert not snap["audit"]["fall_back"]  # the task keeps serving its fit inputs
    for _ in range(20):
        q.observe("audit", rec("negative", "positive"), False, serving=True, reason="audit")
    assert q.problem(FIT) and q.snapshot()["audit"]["fall_back"]


def test_exact_answer_rates() -> None:
    q = TaskQuality(CFG, LABELS, CANONICAL)
    q.observe("shadow", rec("positive", "positive"), False, serving=False)
    q.observe("shadow", rec("positive", "positive", answer=[12, 13, 2]), False, serving=False)  # "Positive."
    q.observe("shadow", rec("negative", "positive"), False, serving=False)
    q.observe("shadow", rec(None, "negative"), False, serving=False)  # unparseable LLM answer
    exact = q.exact_summary()
    assert exact["answers"] == 4 and exact["labelled"] == 3
    assert exact["canonical_exact_rate"] == pytest.approx(2 / 3)
    # Only the first answer is byte-identical to what the surrogate would have emitted.
    assert exact["exact_answer_agreement"] == pytest.approx(1 / 4)


def test_snapshot_restores_every_statistic() -> None:
    q = TaskQuality(CFG, LABELS, CANONICAL)
    shadow(q, False, GOOD, times=15)
    shadow(q, True, GOOD, times=5)
    q.settle()
    for _ in range(5):
        q.observe("audit", rec("positive", "negative"), False, serving=True, reason="audit")
    q.observe("serve", rec(None, "positive", ServedBy.SURROGATE.value), False, serving=True, reason="serve")
    snap = q.snapshot()
    again = TaskQuality(CFG, LABELS, CANONICAL)
    again.restore(snap)
    assert again.gate.verdicts == q.gate.verdicts
    assert again.gate.gates[TRUNCATED].confusion == q.gate.gates[TRUNCATED].confusion
    assert again.audits[FIT].n == 5 and again.audit.n == 5
    assert again.traffic == q.traffic and again.exact == q.exact
    assert again.references[FIT] == q.references[FIT]
    # The restored truncated bucket keeps collecting where it stopped.
    shadow(again, True, GOOD, times=5)
    assert again.settle()[TRUNCATED].passed
    view = summarize_live({**snap, "version": 3})
    assert view["version"] == 3 and view["buckets"][FIT]["verdict"] == PASSED
    assert set(view["buckets"][FIT]) >= {"requests", "served", "served_share", "llm_by_reason"}
    # An older snapshot without the per-bucket state is ignored, not misread.
    fresh = TaskQuality(CFG, LABELS, CANONICAL)
    fresh.restore({"gate_state": {"confusion": {}}})
    assert fresh.gate.verdicts[FIT] == PENDING
