"""Quality gates: when a surrogate may replace the LLM, and when it must hand the task back.

* :func:`wilson_interval` - the score interval for a binomial proportion (small-sample safe).
* :class:`ShadowGate` - while a surrogate shadows the LLM, count (LLM label, surrogate label)
  pairs; pass only when *every* label has enough samples and a Wilson lower bound of agreement
  at or above ``gate_target``. Per-label bounds are what stop a surrogate that always answers
  the majority label: its agreement on the minority label is zero. A label whose interval
  straddles the target is inconclusive: shadowing goes on (up to ``shadow_extend_factor`` times
  the per-label minimum) instead of discarding a surrogate on the fewest samples allowed.
* :func:`decide_after_gate` - the next task state for a gate report under a serving policy.
* :class:`RollingAgreement` - audited requests while serving; falls back below a target.
* :class:`LengthBucketGate` - one shadow gate per input-length bucket (inputs that fit the
  surrogate's ``max_length`` and inputs it had to truncate), each decided once on its own: the
  ``fit`` bucket decides the switch, truncated inputs are served only once their bucket passed.

Pure Python (no numpy needed); everything serialises to plain dicts for the registry.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

from poodle_vllm.config import ServingConfig
from poodle_vllm.types import TaskState

POLICIES = ("offer", "auto", "off")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` at two-sided ``confidence``; (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class LabelAgreement:
    """Agreement of the surrogate with the LLM on requests the LLM gave one label."""

    label: str
    n: int
    agree: int
    agreement: float
    lower: float
    upper: float
    passed: bool
    reason: str = ""


@dataclass
class GateReport:
    """Outcome of a shadow gate evaluation (stored with the offer)."""

    passed: bool
    complete: bool
    """Enough samples were collected to decide (total and per label); False means keep shadowing."""
    total: int
    agreement: float
    lower: float
    per_label: list[LabelAgreement]
    reasons: list[str] = field(default_factory=list)
    llm_self_agreement: float | None = None
    """How often the LLM agreed with itself on duplicate prompts (the ceiling any surrogate can reach)."""
    agreement_vs_self: float | None = None
    """Surrogate agreement divided by the LLM's self-agreement (1.0 = as consistent as the LLM)."""
    skipped: int = 0
    """Pairs without an LLM label (unparseable answers), not counted."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ShadowGate:
    """Per-label agreement between the LLM's labels and the surrogate's, with a Wilson-bound gate."""

    def __init__(self, config: ServingConfig | None = None, labels: list[str] | None = None):
        self.config = config or ServingConfig()
        self.labels = list(labels or [])
        """Known label space: a label with no shadow samples yet still blocks the gate."""
        self.confusion: dict[str, dict[str, int]] = {}
        self.skipped = 0

    def record(self, llm_label: str | None, surrogate_label: str | None) -> None:
        """One shadowed request. No LLM label (unparseable) is skipped; no surrogate label is a miss."""
        if llm_label is None:
            self.skipped += 1
            return
        row = self.confusion.setdefault(llm_label, {})
        key = surrogate_label if surrogate_label is not None else "<none>"
        row[key] = row.get(key, 0) + 1

    def record_many(self, pairs: Iterable[tuple[str | None, str | None]]) -> None:
        for llm_label, surrogate_label in pairs:
            self.record(llm_label, surrogate_label)

    @property
    def total(self) -> int:
        return sum(sum(r.values()) for r in self.confusion.values())

    def evaluate(
        self, llm_self_agreement: float | None = None, pooled_total: int | None = None
    ) -> GateReport:
        """The gate's verdict on the samples so far.

        ``pooled_total``: shadow samples of every length bucket together; when given, the
        ``shadow_requests`` requirement applies to it (a bucket then needs only its per-label
        minimum, so splitting traffic into buckets does not lengthen the shadow phase).
        """
        cfg = self.config
        labels = sorted(set(self.labels) | set(self.confusion))
        per_label: list[LabelAgreement] = []
        reasons: list[str] = []
        seen = self.total if pooled_total is None else pooled_total
        cap = math.ceil(cfg.shadow_min_per_label * max(1.0, cfg.shadow_extend_factor))
        complete = seen >= cfg.shadow_requests
        if not complete:
            reasons.append(f"{seen} of {cfg.shadow_requests} shadow samples collected")
        for label in labels:
            row = self.confusion.get(label, {})
            n, agree = sum(row.values()), row.get(label, 0)
            low, high = wilson_interval(agree, n, cfg.gate_confidence)
            ok, why = True, ""
            if n < cfg.shadow_min_per_label:
                ok, why, complete = False, f"only {n} of {cfg.shadow_min_per_label} samples", False
            elif low < cfg.gate_target:
                ok, why = False, f"Wilson lower bound {low:.3f} < target {cfg.gate_target:.3f}"
                if high >= cfg.gate_target and n < cap:
                    # Inconclusive, not failed: a few more samples decide it either way. A
                    # clearly worse label (upper bound below the target) fails at once.
                    complete = False
                    why += f" (inconclusive, upper {high:.3f}: shadowing on to {cap} samples)"
            if why:
                reasons.append(f"label '{label}': {why}")
            per_label.append(LabelAgreement(label, n, agree, agree / n if n else 0.0, low, high, ok, why))
        if not labels:
            reasons.append("no labelled shadow samples")
        total = self.total
        agree_all = sum(r.get(lab, 0) for lab, r in self.confusion.items())
        overall = agree_all / total if total else 0.0
        low_all, _ = wilson_interval(agree_all, total, cfg.gate_confidence)
        passed = bool(labels) and complete and all(p.passed for p in per_label)
        vs_self = overall / llm_self_agreement if llm_self_agreement else None
        return GateReport(
            passed,
            complete,
            total,
            overall,
            low_all,
            per_label,
            reasons,
            llm_self_agreement,
            vs_self,
            self.skipped,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "confusion": self.confusion, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: ServingConfig | None = None) -> ShadowGate:
        gate = cls(config, data.get("labels"))
        gate.confusion = {k: dict(v) for k, v in data.get("confusion", {}).items()}
        gate.skipped = int(data.get("skipped", 0))
        return gate


def decide_after_gate(report: GateReport, policy: str = "offer") -> TaskState:
    """Next task state after evaluating the shadow gate.

    * not enough samples yet -> ``SHADOW`` (keep shadowing);
    * enough samples, gate failed -> ``COLLECTING`` (collect more labels, retrain);
    * passed: ``auto`` -> ``SERVING``; ``offer`` -> ``OFFERED`` (an operator runs ``poodle accept``);
      ``off`` -> ``SHADOW`` (Poodle never switches by itself; the report stays visible).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown serving policy '{policy}'; valid: {', '.join(POLICIES)}")
    if not report.complete:
        return TaskState.SHADOW
    if not report.passed:
        return TaskState.COLLECTING
    return {"auto": TaskState.SERVING, "offer": TaskState.OFFERED, "off": TaskState.SHADOW}[policy]


@dataclass
class FallbackDecision:
    fall_back: bool
    agreement: float
    n: int
    lower: float
    upper: float
    reason: str


class RollingAgreement:
    """Agreement of audited requests (LLM vs surrogate) over the last ``window`` audits."""

    def __init__(
        self, window: int = 50, target: float = 0.7, min_count: int | None = None, confidence: float = 0.95
    ):
        self.window = window
        self.target = target
        self.min_count = min_count if min_count is not None else max(1, min(window, 20))
        """Fewer audits than this never trigger a fallback (one early miss is noise)."""
        self.confidence = confidence
        self._hits: deque[bool] = deque(maxlen=window)

    @classmethod
    def from_config(cls, config: ServingConfig) -> RollingAgreement:
        return cls(config.fallback_window, config.fallback_target, confidence=config.gate_confidence)

    def add(self, llm_label: str | None, surrogate_label: str | None) -> None:
        if llm_label is None:
            return  # an unparseable LLM answer says nothing about the surrogate
        self._hits.append(llm_label == surrogate_label)

    def add_result(self, agree: bool) -> None:
        self._hits.append(bool(agree))

    @property
    def n(self) -> int:
        return len(self._hits)

    @property
    def agreement(self) -> float:
        return sum(self._hits) / len(self._hits) if self._hits else 1.0

    def decide(self) -> FallbackDecision:
        agree = sum(self._hits)
        low, high = wilson_interval(agree, self.n, self.confidence)
        if self.n < self.min_count:
            return FallbackDecision(
                False, self.agreement, self.n, low, high, f"{self.n} of {self.min_count} audits"
            )
        if self.agreement < self.target:
            why = f"rolling agreement {self.agreement:.3f} < fallback target {self.target:.3f} over {self.n} audits"
            return FallbackDecision(True, self.agreement, self.n, low, high, why)
        return FallbackDecision(False, self.agreement, self.n, low, high, "ok")

    def reset(self) -> None:
        self._hits.clear()

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [int(h) for h in self._hits]}

    def restore(self, data: dict[str, Any] | None) -> RollingAgreement:
        """Refill the window from :meth:`to_dict` output (the newest ``window`` audits are kept)."""
        self._hits.clear()
        self._hits.extend(bool(h) for h in (data or {}).get("hits", []))
        return self


FIT, TRUNCATED = "fit", "truncated"
LENGTH_BUCKETS = (FIT, TRUNCATED)
"""Input-length buckets: the surrogate saw the whole input, or it truncated it to ``max_length``."""
PENDING, PASSED, FAILED, HANDED_BACK = "pending", "passed", "failed", "handed_back"
"""A bucket's verdict: still shadowing; gate passed; gate failed; passed, then audits fell below target."""


def length_bucket(truncated: bool) -> str:
    return TRUNCATED if truncated else FIT


class LengthBucketGate:
    """A :class:`ShadowGate` per length bucket, each with the full per-label Wilson rule.

    A bucket is decided once, when its gate is complete (the pooled sample total has reached
    ``shadow_requests`` and each of its labels has ``shadow_min_per_label`` samples); its
    samples are frozen from then on, so later traffic cannot talk a failed bucket into passing
    (no optional stopping). ``fit`` decides the task's switch; ``truncated`` only decides
    whether truncated inputs may be answered by the surrogate.
    """

    def __init__(self, config: ServingConfig | None = None, labels: list[str] | None = None):
        self.config = config or ServingConfig()
        self.gates = {b: ShadowGate(self.config, labels) for b in LENGTH_BUCKETS}
        self.verdicts = {b: PENDING for b in LENGTH_BUCKETS}
        self.notes = {b: "" for b in LENGTH_BUCKETS}
        """Why a bucket has its verdict (the failing labels, the audit that fell)."""

    def record(self, bucket: str, llm_label: str | None, surrogate_label: str | None) -> bool:
        """Add one shadow pair to ``bucket``; False (ignored) once the bucket is decided."""
        if self.verdicts.get(bucket) != PENDING:
            return False
        self.gates[bucket].record(llm_label, surrogate_label)
        return True

    @property
    def total(self) -> int:
        return sum(g.total for g in self.gates.values())

    def evaluate(self, bucket: str, llm_self_agreement: float | None = None) -> GateReport:
        return self.gates[bucket].evaluate(llm_self_agreement, pooled_total=self.total)

    def pooled(self, llm_self_agreement: float | None = None) -> GateReport:
        """All buckets together (what the gate looked like before buckets; for display)."""
        merged = ShadowGate(self.config, self.gates[FIT].labels)
        for gate in self.gates.values():
            merged.skipped += gate.skipped
            for llm_label, row in gate.confusion.items():
                dst = merged.confusion.setdefault(llm_label, {})
                for sur, n in row.items():
                    dst[sur] = dst.get(sur, 0) + n
        return merged.evaluate(llm_self_agreement)

    def settle(self, llm_self_agreement: float | None = None) -> dict[str, GateReport]:
        """Decide every pending bucket whose gate is complete; returns the newly decided ones."""
        decided = {}
        for bucket in LENGTH_BUCKETS:
            if self.verdicts[bucket] != PENDING:
                continue
            report = self.evaluate(bucket, llm_self_agreement)
            if report.complete:
                self.verdicts[bucket] = PASSED if report.passed else FAILED
                self.notes[bucket] = "; ".join(report.reasons)
                decided[bucket] = report
        return decided

    def hand_back(self, bucket: str, why: str) -> None:
        self.verdicts[bucket] = HANDED_BACK
        self.notes[bucket] = why

    def to_dict(self) -> dict[str, Any]:
        return {
            b: {"gate": self.gates[b].to_dict(), "verdict": self.verdicts[b], "note": self.notes[b]}
            for b in LENGTH_BUCKETS
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], config: ServingConfig | None = None, labels: list[str] | None = None
    ) -> LengthBucketGate:
        out = cls(config, labels)
        for bucket in LENGTH_BUCKETS:
            item = data.get(bucket) or {}
            if item.get("gate"):
                out.gates[bucket] = ShadowGate.from_dict(item["gate"], out.config)
            out.verdicts[bucket] = str(item.get("verdict") or PENDING)
            out.notes[bucket] = str(item.get("note") or "")
        return out


if __name__ == "__main__":
    gate = ShadowGate(ServingConfig(shadow_requests=100, shadow_min_per_label=15), ["positive", "negative"])
    gate.record_many([("positive", "positive")] * 70 + [("negative", "positive")] * 30)
    rep = gate.evaluate()
    print("majority-only surrogate:", rep.passed, rep.reasons)
