"""Cost model of just-in-time model replacement (JITR) against always calling the LLM.

The model follows the cost analysis of the JITR paper (Strassenburg, Glavic, Rabl, "Poodle:
Seamlessly Scaling Down Large Language Models with Just-in-Time Model Replacement",
arXiv:2512.05525): every request goes to the LLM until the task is replaced after
``switch_after`` requests; developing the surrogate costs a one-off amount (the paper uses $4,
its rate for three hours of accelerator time); afterwards the surrogate serves each request
for a small per-request cost.

Two detection variants differ in what the collection phase costs:

* **wrapper-prompt detection** (the paper's prototype): every LLM request carries an extra
  wrapper prompt, ``wrapper_tokens`` more input tokens per request;
* **prefix-cache detection** (this project): the task is recognised from vLLM's prefix-cache
  block hashes, so no extra tokens are sent (``wrapper_tokens = 0``).

Costs are generic: :class:`CostCurve` works in any unit, built either from API prices
(:func:`api_cost_curve`, USD) or for a self-hosted LLM in accelerator-seconds
(:func:`self_hosted_cost_curve`).

Prices (USD per million tokens, input / output) in :data:`LLM_PRICES`. The paper's Table 1
could not be retrieved from the reference search available while writing this, so these are
public list prices:

* GPT-4.1 nano $0.10 / $0.40 and GPT-4.1 $2.00 / $8.00: OpenAI API pricing
  (https://platform.openai.com/docs/pricing, model pages developers.openai.com/api/docs/models/gpt-4.1-nano;
  announced 14 April 2025);
* Llama 3.1 405B Instruct Turbo on Together AI $3.50 / $3.50 (https://www.together.ai/pricing).

Override any of them with :class:`LLMPrice`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LLMPrice:
    """API price of one LLM."""

    name: str
    input_per_m: float
    """USD per million input (prompt) tokens."""
    output_per_m: float
    """USD per million output tokens."""
    source: str = ""
    """Where the price comes from."""

    def per_request(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.input_per_m + output_tokens * self.output_per_m) / 1e6


LLM_PRICES: dict[str, LLMPrice] = {
    "gpt-4.1-nano": LLMPrice(
        "GPT-4.1 nano", 0.10, 0.40, "OpenAI API list price (platform.openai.com/docs/pricing)"
    ),
    "gpt-4.1": LLMPrice("GPT-4.1", 2.00, 8.00, "OpenAI API list price (platform.openai.com/docs/pricing)"),
    "llama-3.1-405b-turbo": LLMPrice(
        "Llama 3.1 405B Turbo",
        3.50,
        3.50,
        "Together AI list price, Meta-Llama-3.1-405B-Instruct-Turbo (together.ai/pricing)",
    ),
}


@dataclass
class Workload:
    """Mean token counts of one request of the task (measured on real prompts by the benchmark)."""

    prompt_tokens: float
    """Input tokens per request (template + slot)."""
    output_tokens: float
    """Output tokens per request (the label word plus end-of-sequence)."""


@dataclass
class JITRAssumptions:
    """What replacing the task costs; defaults are the paper's assumptions."""

    switch_after: int = 5000
    """Requests answered by the LLM (and collected as training labels) before the switch."""
    accelerator_hour_usd: float = 4.0 / 3.0
    """Price of one accelerator hour (paper: $4 for three hours)."""
    development_hours: float = 3.0
    """Accelerator hours spent on model search and fine-tuning (paper: three hours)."""
    development_cost_usd: float | None = None
    """Overrides ``development_hours * accelerator_hour_usd`` when set."""
    wrapper_tokens: float = 0.0
    """Extra input tokens per LLM request for wrapper-prompt detection (0 = prefix-cache detection)."""
    wrapper_output_tokens: float = 0.0
    """Extra output tokens per LLM request that the wrapper asks for."""
    surrogate_cost_per_request: float = 0.0
    """USD per request served by the surrogate (see :func:`surrogate_cost_per_request`)."""
    audit_fraction: float = 0.0
    """Share of requests still sent to the LLM after the switch for quality audits (paper: 0)."""

    @property
    def development_usd(self) -> float:
        if self.development_cost_usd is not None:
            return self.development_cost_usd
        return self.development_hours * self.accelerator_hour_usd


def surrogate_cost_per_request(requests_per_s: float, accelerator_hour_usd: float = 4.0 / 3.0) -> float:
    """USD per request of a surrogate that serves ``requests_per_s`` on one accelerator at full load."""
    if requests_per_s <= 0:
        raise ValueError("requests_per_s must be positive")
    return accelerator_hour_usd / 3600.0 / requests_per_s


@dataclass
class CostCurve:
    """Cumulative cost of answering ``n`` requests of one task: LLM only vs JITR (one unit)."""

    llm_per_request: float
    """Cost of one request answered by the LLM without Poodle."""
    collect_per_request: float
    """Cost of one request before the switch (LLM plus any detection overhead)."""
    development: float
    """One-off cost of search and training, paid at the switch."""
    serve_per_request: float
    """Cost of one request after the switch (surrogate plus audited LLM calls)."""
    switch_after: int
    unit: str = "USD"
    label: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    def llm_cumulative(self, n: float) -> float:
        return n * self.llm_per_request

    def jitr_cumulative(self, n: float) -> float:
        if n <= self.switch_after:
            return n * self.collect_per_request
        return (
            self.switch_after * self.collect_per_request
            + self.development
            + (n - self.switch_after) * self.serve_per_request
        )

    @property
    def overhead(self) -> float:
        """What JITR spends beyond the LLM-only cost up to and including the switch."""
        return self.switch_after * (self.collect_per_request - self.llm_per_request) + self.development

    def break_even_requests(self) -> int | None:
        """Smallest request count from which JITR's cumulative cost stays at or below the LLM's.

        None when the surrogate (plus audits) costs as much per request as the LLM: it never pays off.
        """
        saving = self.llm_per_request - self.serve_per_request
        if self.overhead <= 0:
            return 0
        if saving <= 0:
            return None
        return self.switch_after + math.ceil(self.overhead / saving - 1e-9)

    def savings(self, n: float = 1_000_000) -> float:
        return self.llm_cumulative(n) - self.jitr_cumulative(n)

    def cost_ratio(self, n: float = 1_000_000) -> float:
        """How many times cheaper JITR is over ``n`` requests (LLM cost / JITR cost)."""
        j = self.jitr_cumulative(n)
        return self.llm_cumulative(n) / j if j > 0 else math.inf

    def steady_state_ratio(self) -> float:
        """LLM cost per request / surrogate cost per request, once development is amortised."""
        return self.llm_per_request / self.serve_per_request if self.serve_per_request > 0 else math.inf

    def summary(self, n: float = 1_000_000) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "llm_per_request": self.llm_per_request,
            "collect_per_request": self.collect_per_request,
            "serve_per_request": self.serve_per_request,
            "development": self.development,
            "switch_after": self.switch_after,
            "break_even_requests": self.break_even_requests(),
            "requests": n,
            "llm_cost": self.llm_cumulative(n),
            "jitr_cost": self.jitr_cumulative(n),
            "savings": self.savings(n),
            "cost_ratio": self.cost_ratio(n),
            "steady_state_ratio": self.steady_state_ratio(),
            "notes": self.notes,
        }


def api_cost_curve(
    price: LLMPrice, workload: Workload, assumptions: JITRAssumptions | None = None
) -> CostCurve:
    """USD cost curve for an LLM behind a priced API."""
    a = assumptions or JITRAssumptions()
    llm = price.per_request(workload.prompt_tokens, workload.output_tokens)
    collect = price.per_request(
        workload.prompt_tokens + a.wrapper_tokens, workload.output_tokens + a.wrapper_output_tokens
    )
    serve = a.surrogate_cost_per_request + a.audit_fraction * llm
    return CostCurve(
        llm,
        collect,
        a.development_usd,
        serve,
        a.switch_after,
        "USD",
        price.name,
        {"price": asdict(price), "workload": asdict(workload), "assumptions": asdict(a)},
    )


def self_hosted_cost_curve(
    llm_gpu_s_per_request: float,
    surrogate_gpu_s_per_request: float,
    development_gpu_s: float,
    switch_after: int,
    wrapper_gpu_s_per_request: float = 0.0,
    audit_fraction: float = 0.0,
    label: str = "self-hosted",
) -> CostCurve:
    """Cost curve in accelerator-seconds for an LLM the operator runs itself (e.g. with vLLM).

    ``wrapper_gpu_s_per_request`` is the extra prefill time of a wrapper prompt (0 with
    prefix-cache detection, which reads hashes vLLM computes anyway).
    """
    return CostCurve(
        llm_gpu_s_per_request,
        llm_gpu_s_per_request + wrapper_gpu_s_per_request,
        development_gpu_s,
        surrogate_gpu_s_per_request + audit_fraction * llm_gpu_s_per_request,
        switch_after,
        "GPU-s",
        label,
    )


def llm_gpu_seconds_per_request(
    prompt_tokens: float, output_tokens: float, prefill_tokens_per_s: float, decode_tokens_per_s: float
) -> float:
    """Accelerator-seconds of one request from measured prefill and decode throughputs (batched)."""
    return prompt_tokens / prefill_tokens_per_s + output_tokens / decode_tokens_per_s


def cumulative_series(curve: CostCurve, points: list[float]) -> dict[str, list[float]]:
    """LLM and JITR cumulative costs at ``points`` (for plots)."""
    return {
        "requests": list(points),
        "llm": [curve.llm_cumulative(n) for n in points],
        "jitr": [curve.jitr_cumulative(n) for n in points],
    }


if __name__ == "__main__":
    work = Workload(prompt_tokens=300, output_tokens=2)
    wrap = JITRAssumptions(wrapper_tokens=150, surrogate_cost_per_request=surrogate_cost_per_request(100))
    for key, p in LLM_PRICES.items():
        c = api_cost_curve(p, work, wrap)
        print(
            f"{key:22s} break-even {c.break_even_requests()} requests, {c.cost_ratio():.0f}x cheaper per 1M"
        )
