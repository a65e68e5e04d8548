"""Quality gates: Wilson interval, shadow gate, decisions after the gate, rolling fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poodle_vllm.config import ServingConfig
from poodle_vllm.core.policy import RollingAgreement, ShadowGate, decide_after_gate, wilson_interval
from poodle_vllm.types import TaskState

CFG = ServingConfig(shadow_requests=100, shadow_min_per_label=15, gate_target=0.75, gate_confidence=0.95)


def test_wilson_known_values():
    # 0 of 10: upper bound = z^2 / (n + z^2) with z = 1.959964 (closed form)
    z2 = 1.959963984540054**2
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(z2 / (10 + z2), rel=1e-9)
    # 10 of 10 mirrors it
    assert wilson_interval(10, 10)[0] == pytest.approx(10 / (10 + z2), rel=1e-9)
    # 81 of 263 at 95%: (0.2553, 0.3662); the bounds are the roots of (p_hat - p)^2 = z^2 p (1 - p) / n
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    n, p_hat = 263, 81 / 263
    roots = sorted(np.roots([1 + z2 / n, -(2 * p_hat + z2 / n), p_hat**2]).real)
    assert (low, high) == pytest.approx(tuple(roots), rel=1e-9)
    # symmetric around 0.5 and narrower with higher n
    l50, h50 = wilson_interval(50, 100)
    assert l50 + h50 == pytest.approx(1.0)
    assert wilson_interval(500, 1000)[0] > l50
    # 90% interval is narrower than 99%
    assert wilson_interval(30, 40, 0.90)[0] > wilson_interval(30, 40, 0.99)[0]
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_majority_only_surrogate_fails_the_gate():
    gate = ShadowGate(CFG, labels=["positive", "negative"])
    # 70% of traffic is positive; the surrogate answers "positive" every time: 70% accuracy overall
    gate.record_many([("positive", "positive")] * 140 + [("negative", "positive")] * 60)
    report = gate.evaluate()
    assert report.complete and not report.passed
    assert report.agreement == pytest.approx(0.7)
    by_label = {p.label: p for p in report.per_label}
    assert by_label["positive"].passed and by_label["positive"].agreement == 1.0
    assert not by_label["negative"].passed and by_label["negative"].agreement == 0.0
    assert decide_after_gate(report, "auto") == TaskState.COLLECTING


def test_good_surrogate_passes_and_policy_decides():
    gate = ShadowGate(CFG, labels=["positive", "negative"])
    gate.record_many(
        [("positive", "positive")] * 95
        + [("positive", "negative")] * 5
        + [("negative", "negative")] * 57
        + [("negative", "positive")] * 3
    )
    gate.record(None, "positive")  # unparseable LLM answer: skipped
    report = gate.evaluate(llm_self_agreement=0.96)
    assert report.passed, report.reasons
    assert report.total == 160 and report.skipped == 1
    assert report.agreement_vs_self == pytest.approx((152 / 160) / 0.96)
    for p in report.per_label:
        assert p.lower >= 0.75 and p.lower == pytest.approx(wilson_interval(p.agree, p.n)[0])
    assert decide_after_gate(report, "offer") == TaskState.OFFERED
    assert decide_after_gate(report, "auto") == TaskState.SERVING
    assert decide_after_gate(report, "off") == TaskState.SHADOW
    with pytest.raises(ValueError, match="unknown serving policy"):
        decide_after_gate(report, "yolo")
    # the state survives a round trip through the registry's JSON
    again = ShadowGate.from_dict(gate.to_dict(), CFG).evaluate()
    assert again.passed and again.total == report.total


def test_gate_waits_for_enough_samples_per_label():
    gate = ShadowGate(CFG, labels=["positive", "negative", "neutral"])
    gate.record_many([("positive", "positive")] * 100 + [("negative", "negative")] * 20)
    report = gate.evaluate()
    assert not report.passed and not report.complete
    assert any("neutral" in r and "only 0" in r for r in report.reasons)
    assert decide_after_gate(report, "auto") == TaskState.SHADOW
    small = ShadowGate(CFG)
    small.record_many([("positive", "positive")] * 50)
    assert not small.evaluate().complete  # 50 < shadow_requests


def test_rolling_agreement_falls_back_below_target():
    roll = RollingAgreement.from_config(ServingConfig(fallback_window=50, fallback_target=0.7))
    for _ in range(10):
        roll.add("positive", "negative")
    assert not roll.decide().fall_back  # too few audits to act on
    for _ in range(50):
        roll.add("positive", "positive")
    assert roll.n == 50 and roll.agreement == 1.0  # the window forgot the early misses
    for _ in range(20):
        roll.add("positive", "negative")
    decision = roll.decide()
    assert decision.fall_back and decision.agreement == pytest.approx(30 / 50)
    assert "fallback target" in decision.reason
    roll.add(None, "positive")  # unparseable: ignored
    assert roll.n == 50
    roll.reset()
    assert roll.n == 0 and not math.isnan(roll.agreement)


def test_length_bucket_gate_decides_each_bucket_once_on_its_own():
    from poodle_vllm.core.policy import (
        FAILED,
        FIT,
        PASSED,
        PENDING,
        TRUNCATED,
        LengthBucketGate,
        length_bucket,
    )

    assert length_bucket(True) == TRUNCATED and length_bucket(False) == FIT
    gate = LengthBucketGate(CFG, ["positive", "negative"])
    good = [("positive", "positive")] * 40 + [("negative", "negative")] * 20
    for pair in good:
        gate.record(FIT, *pair)
    # 60 fit samples < shadow_requests (100): nothing decided yet, though each label has 15+.
    assert gate.settle() == {} and gate.verdicts[FIT] == PENDING
    # Truncated samples count towards the pooled total; the majority-only pattern fails that bucket.
    for pair in [("positive", "positive")] * 25 + [("negative", "positive")] * 15:
        gate.record(TRUNCATED, *pair)
    decided = gate.settle()
    assert decided[FIT].passed and not decided[TRUNCATED].passed
    assert gate.verdicts == {FIT: PASSED, TRUNCATED: FAILED}
    by_label = {p.label: p for p in decided[TRUNCATED].per_label}
    assert by_label["negative"].agreement == 0.0 and by_label["positive"].passed
    # Decided buckets ignore later samples (no optional stopping) and round-trip through JSON.
    assert not gate.record(TRUNCATED, "negative", "negative")
    again = LengthBucketGate.from_dict(gate.to_dict(), CFG)
    assert again.verdicts == gate.verdicts and again.total == gate.total == 100
    assert again.evaluate(FIT).passed and again.pooled().total == 100
    # A bucket without stored samples keeps the label space it was given.
    empty = LengthBucketGate.from_dict({}, CFG, ["positive", "negative"])
    assert any("only 0" in r for r in empty.evaluate(TRUNCATED).reasons)


def test_rolling_agreement_round_trips():
    roll = RollingAgreement(window=5, target=0.7, min_count=3)
    for llm, sur in [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("a", "a"), ("a", "b")]:
        roll.add(llm, sur)
    again = RollingAgreement(window=5, target=0.7, min_count=3).restore(roll.to_dict())
    assert again.n == 5 and again.agreement == roll.agreement == 0.6
    assert RollingAgreement().restore(None).n == 0


def test_an_inconclusive_label_keeps_shadowing_until_it_is_decided():
    cfg = ServingConfig(shadow_requests=40, shadow_min_per_label=20, gate_target=0.6, shadow_extend_factor=2.0)
    gate = ShadowGate(cfg, labels=["positive", "negative"])
    gate.record_many([("negative", "negative")] * 34)
    gate.record_many([("positive", "positive")] * 16 + [("positive", "negative")] * 4)  # 16/20: LB 0.584
    report = gate.evaluate()
    assert not report.complete and not report.passed  # inconclusive: the upper bound clears 0.6
    assert decide_after_gate(report, "auto") == TaskState.SHADOW
    assert "inconclusive" in " ".join(report.reasons)
    gate.record_many([("positive", "positive")] * 5)  # 21/25: LB 0.653
    assert gate.evaluate().passed
    # A clearly worse label fails at the minimum; one still straddling at the cap fails there.
    worse = ShadowGate(cfg, labels=["positive"])
    worse.record_many([("positive", "positive")] * 6 + [("positive", "negative")] * 34)
    assert worse.evaluate().complete and not worse.evaluate().passed
    capped = ShadowGate(cfg, labels=["positive"])
    capped.record_many([("positive", "positive")] * 26 + [("positive", "negative")] * 14)  # 26/40
    assert capped.evaluate().complete and not capped.evaluate().passed
