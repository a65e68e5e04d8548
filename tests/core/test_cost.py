"""Cost model: break-even and savings on hand-checkable numbers."""

from __future__ import annotations

import math

import pytest

from poodle_vllm.core.cost import (
    LLM_PRICES,
    CostCurve,
    JITRAssumptions,
    LLMPrice,
    Workload,
    api_cost_curve,
    cumulative_series,
    llm_gpu_seconds_per_request,
    self_hosted_cost_curve,
    surrogate_cost_per_request,
)


def test_break_even_hand_checked():
    # $1 per 1M tokens, 1000 input tokens, no output: $0.001 per request.
    price = LLMPrice("toy", 1.0, 0.0)
    work = Workload(prompt_tokens=1000, output_tokens=0)
    # Wrapper adds 500 tokens ($0.0005) to each of 1000 collected requests = $0.50; development $4.
    # After the switch a request costs $0.0001, saving $0.0009, so the overhead of $4.50 is back
    # after 4.5 / 0.0009 = 5000 more requests: break-even at 1000 + 5000 = 6000.
    a = JITRAssumptions(switch_after=1000, wrapper_tokens=500, surrogate_cost_per_request=0.0001)
    curve = api_cost_curve(price, work, a)
    assert a.development_usd == pytest.approx(4.0)  # three hours at $4 / 3 h
    assert curve.llm_per_request == pytest.approx(0.001)
    assert curve.collect_per_request == pytest.approx(0.0015)
    assert curve.overhead == pytest.approx(4.5)
    assert curve.break_even_requests() == 6000
    assert curve.jitr_cumulative(6000) == pytest.approx(curve.llm_cumulative(6000))
    assert curve.jitr_cumulative(5999) > curve.llm_cumulative(5999)
    # Over 1M requests: LLM $1000; JITR 1.5 + 4 + 999000 * 0.0001 = $105.40
    assert curve.jitr_cumulative(1_000_000) == pytest.approx(105.4)
    assert curve.savings() == pytest.approx(894.6)
    assert curve.cost_ratio() == pytest.approx(1000 / 105.4)
    assert curve.steady_state_ratio() == pytest.approx(10.0)


def test_prefix_cache_detection_breaks_even_sooner():
    work = Workload(prompt_tokens=300, output_tokens=2)
    wrapper = JITRAssumptions(wrapper_tokens=200, surrogate_cost_per_request=1e-6)
    prefix = JITRAssumptions(wrapper_tokens=0, surrogate_cost_per_request=1e-6)
    for price in LLM_PRICES.values():
        w, p = api_cost_curve(price, work, wrapper), api_cost_curve(price, work, prefix)
        assert p.break_even_requests() < w.break_even_requests()
        assert p.savings() > w.savings()
    # cheaper LLMs take longer to pay back the development cost
    be = {k: api_cost_curve(v, work, prefix).break_even_requests() for k, v in LLM_PRICES.items()}
    assert be["gpt-4.1-nano"] > be["gpt-4.1"] > be["llama-3.1-405b-turbo"]


def test_never_breaks_even_when_surrogate_is_not_cheaper():
    curve = CostCurve(
        llm_per_request=1.0, collect_per_request=1.0, development=10.0, serve_per_request=1.0, switch_after=5
    )
    assert curve.break_even_requests() is None
    audits = api_cost_curve(
        LLMPrice("x", 1.0, 0.0),
        Workload(1000, 0),
        JITRAssumptions(audit_fraction=1.0, surrogate_cost_per_request=0.0),
    )
    assert audits.break_even_requests() is None  # auditing every request leaves nothing to save
    free = CostCurve(1.0, 1.0, 0.0, 0.5, 5)
    assert free.break_even_requests() == 0


def test_surrogate_cost_and_self_hosted_curve():
    assert surrogate_cost_per_request(100, accelerator_hour_usd=3.6) == pytest.approx(1e-5)
    with pytest.raises(ValueError):
        surrogate_cost_per_request(0)
    llm_s = llm_gpu_seconds_per_request(300, 2, prefill_tokens_per_s=30_000, decode_tokens_per_s=1000)
    assert llm_s == pytest.approx(0.012)
    curve = self_hosted_cost_curve(
        llm_s, 0.001, development_gpu_s=3 * 3600, switch_after=5000, wrapper_gpu_s_per_request=0.002
    )
    assert curve.unit == "GPU-s"
    # overhead 5000 * 0.002 + 10800 = 10810 GPU-s, saving 0.011 GPU-s per request
    assert curve.break_even_requests() == 5000 + math.ceil(10810 / 0.011)
    series = cumulative_series(curve, [0, 5000, 2_000_000])
    assert series["llm"][2] > series["jitr"][2] and series["jitr"][1] > series["llm"][1]
    summary = curve.summary()
    assert summary["break_even_requests"] == curve.break_even_requests()
