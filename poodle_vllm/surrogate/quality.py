"""One task's quality bookkeeping per input-length bucket (no model here, so it is cheap to test).

Inputs longer than the surrogate's ``max_length`` are truncated before it sees them; about half
of IMDB's reviews are. Truncation is therefore treated as a property of the surrogate that is
shadow-tested on its own: every statistic here is kept separately for the ``fit`` and the
``truncated`` bucket (:data:`~poodle_vllm.core.policy.LENGTH_BUCKETS`):

* the shadow gate (:class:`~poodle_vllm.core.policy.LengthBucketGate`): ``fit`` decides the
  switch, ``truncated`` decides whether truncated inputs are answered by the surrogate;
* the audit windows and the drift monitors (confidences of truncated inputs differ from those of
  inputs seen whole, so each bucket has its own reference);
* traffic: requests, surrogate answers and LLM answers by reason, hence the share served.

It also measures the answer contract itself: how often the LLM's own answer was byte-for-byte
the canonical answer of its label, and how often it was the canonical answer of the surrogate's
label (what a surrogate answer would have been). Everything round-trips through
:meth:`TaskQuality.snapshot` / :meth:`TaskQuality.restore`, so a restart keeps it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from poodle_vllm.config import ServingConfig
from poodle_vllm.core.policy import (
    FIT,
    LENGTH_BUCKETS,
    PASSED,
    FallbackDecision,
    GateReport,
    LengthBucketGate,
    RollingAgreement,
    length_bucket,
)
from poodle_vllm.types import RequestRecord, ServedBy

MIN_DRIFT_REFERENCE = 30
"""Shadow-phase confidences of a bucket needed before its drift can be judged against them."""
MAX_REFERENCE = 2000
"""Reference confidences kept per bucket (and persisted)."""
LLM_MODES = ("shadow", "audit")
"""Routing modes whose LLM answers measure the surrogate (a low-confidence hand-over does not:
it is a sample selected by the surrogate's own doubt)."""


def _audit_dict(decision: FallbackDecision) -> dict[str, Any]:
    return {
        "n": decision.n,
        "agreement": decision.agreement,
        "lower": decision.lower,
        "fall_back": decision.fall_back,
        "reason": decision.reason,
    }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class TaskQuality:
    """Shadow gate, audits, drift, traffic and exact-answer counts of one surrogate version."""

    def __init__(
        self, config: ServingConfig, labels: list[str], canonical: dict[str, list[int]] | None = None
    ) -> None:
        self.config = config
        self.labels = list(labels)
        self.canonical = dict(canonical or {})
        self.gate = LengthBucketGate(config, self.labels)
        self.audit = RollingAgreement.from_config(config)
        """All audited requests together (display; decisions use the per-bucket windows)."""
        self.audits = {b: RollingAgreement.from_config(config) for b in LENGTH_BUCKETS}
        self.references: dict[str, list[float]] = {b: [] for b in LENGTH_BUCKETS}
        self.drift: dict[str, Any] = {b: None for b in LENGTH_BUCKETS}
        self.traffic: dict[str, Counter[str]] = {b: Counter() for b in LENGTH_BUCKETS}
        self.exact: Counter[str] = Counter()
        self.self_agreement: float | None = None
        """The LLM's self-agreement on repeated inputs, when known (reported beside the gate)."""

    # -- routing questions -----------------------------------------------------------------------

    def serves(self, bucket: str) -> bool:
        """May a serving task answer inputs of ``bucket`` with the surrogate?

        ``fit`` follows the task (its gate is the task's gate, or an operator accepted or rolled
        back the version); ``truncated`` only after its own gate passed.
        """
        return bucket == FIT or self.gate.verdicts.get(bucket) == PASSED

    # -- observation -----------------------------------------------------------------------------

    def observe(
        self, mode: str, record: RequestRecord, truncated: bool, *, serving: bool, reason: str = ""
    ) -> None:
        """Account one finished request of the task that had a surrogate prediction beside it."""
        bucket = length_bucket(truncated)
        traffic = self.traffic[bucket]
        traffic["requests"] += 1
        if serving:
            traffic["while_serving"] += 1
        conf = record.surrogate_confidence
        if record.served_by == ServedBy.SURROGATE.value:
            traffic["served"] += 1
            if conf is not None:
                self._update_drift(bucket, conf)
            return
        traffic[f"llm:{reason or mode}"] += 1
        if mode not in LLM_MODES or not record.eligible:
            return
        self._count_exact(record)
        if serving and mode == "audit" and self.serves(bucket):
            self.audit.add(record.label, record.surrogate_label)
            self.audits[bucket].add(record.label, record.surrogate_label)
        elif self.gate.record(bucket, record.label, record.surrogate_label) and conf is not None:
            ref = self.references[bucket]
            ref.append(conf)
            del ref[:-MAX_REFERENCE]

    def _count_exact(self, record: RequestRecord) -> None:
        answer = [int(t) for t in record.output_token_ids]
        self.exact["answers"] += 1
        if record.label is not None:
            self.exact["labelled"] += 1
            self.exact["canonical"] += answer == self.canonical.get(record.label)
        if record.surrogate_label is not None:
            self.exact["surrogate_label_exact"] += answer == self.canonical.get(record.surrogate_label)

    def _update_drift(self, bucket: str, confidence: float) -> None:
        monitor = self.drift[bucket]
        if monitor is None:
            reference = self.references[bucket]
            if len(reference) < MIN_DRIFT_REFERENCE:
                return
            from poodle_vllm.core.stats import DriftMonitor

            monitor = self.drift[bucket] = DriftMonitor.from_config(reference, self.config)
        monitor.update([confidence])

    # -- decisions (sync thread) ---------------------------------------------------------------

    def settle(self) -> dict[str, GateReport]:
        """Decide the buckets whose shadow gate is complete; returns the newly decided ones."""
        return self.gate.settle(self.self_agreement)

    def task_gate(self) -> GateReport:
        """The gate that decides the task's switch: the ``fit`` bucket's."""
        return self.gate.evaluate(FIT, self.self_agreement)

    def problem(self, bucket: str) -> str | None:
        """Why ``bucket`` must stop being served (audit agreement fell, drift confirmed), if so."""
        audit = self.audits[bucket].decide()
        if audit.fall_back:
            return audit.reason if bucket == FIT else f"{bucket} inputs: {audit.reason}"
        monitor = self.drift[bucket]
        if monitor is not None:
            report = monitor.report()
            if report.drifted:
                where = "" if bucket == FIT else f" on {bucket} inputs"
                return f"input drift confirmed{where}: {report.reason}"
        return None

    def hand_back_failing_buckets(self) -> list[tuple[str, str]]:
        """Stop serving passed non-``fit`` buckets whose audits or drift say so (the task goes on)."""
        out = []
        for bucket in LENGTH_BUCKETS:
            if bucket == FIT or self.gate.verdicts[bucket] != PASSED:
                continue
            why = self.problem(bucket)
            if why:
                self.gate.hand_back(bucket, why)
                out.append((bucket, why))
        return out

    # -- reporting and persistence -----------------------------------------------------------------

    def exact_summary(self) -> dict[str, Any]:
        e = self.exact
        return {
            "answers": e["answers"],
            "labelled": e["labelled"],
            "canonical_exact_rate": _share(e["canonical"], e["labelled"]),
            "exact_answer_agreement": _share(e["surrogate_label_exact"], e["answers"]),
        }

    def bucket_summary(self, bucket: str) -> dict[str, Any]:
        t = self.traffic[bucket]
        return {
            "verdict": self.gate.verdicts[bucket],
            "note": self.gate.notes[bucket],
            "requests": t["requests"],
            "requests_while_serving": t["while_serving"],
            "served": t["served"],
            "served_share": _share(t["served"], t["while_serving"]),
            "llm_by_reason": {k[4:]: v for k, v in sorted(t.items()) if k.startswith("llm:")},
        }

    def snapshot(self) -> dict[str, Any]:
        buckets = {}
        for b in LENGTH_BUCKETS:
            monitor = self.drift[b]
            buckets[b] = {
                **self.bucket_summary(b),
                "gate": self.gate.evaluate(b, self.self_agreement).to_dict(),
                "audit": _audit_dict(self.audits[b].decide()),
                "drift": monitor.report().to_dict() if monitor is not None else None,
            }
        pooled = self.audit.decide()
        fit_problem = self.problem(FIT)
        return {
            "gate": self.task_gate().to_dict(),
            "gate_pooled": self.gate.pooled(self.self_agreement).to_dict(),
            "audit": {
                **_audit_dict(pooled),
                "fall_back": fit_problem is not None,
                "reason": fit_problem or pooled.reason,
            },
            "drift": buckets[FIT]["drift"],
            "buckets": buckets,
            "exact": self.exact_summary(),
            "persisted": {
                "gate": self.gate.to_dict(),
                "audit": self.audit.to_dict(),
                "audits": {b: self.audits[b].to_dict() for b in LENGTH_BUCKETS},
                "traffic": {b: dict(self.traffic[b]) for b in LENGTH_BUCKETS},
                "exact": dict(self.exact),
                "references": {b: self.references[b][-MAX_REFERENCE:] for b in LENGTH_BUCKETS},
            },
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot` output (other keys, e.g. an older format, are ignored)."""
        state = snapshot.get("persisted") or {}
        if not state:
            return
        self.gate = LengthBucketGate.from_dict(state.get("gate") or {}, self.config, self.labels)
        self.audit.restore(state.get("audit"))
        for b in LENGTH_BUCKETS:
            self.audits[b].restore((state.get("audits") or {}).get(b))
            self.traffic[b] = Counter((state.get("traffic") or {}).get(b) or {})
            self.references[b] = [float(c) for c in (state.get("references") or {}).get(b) or []]
        self.exact = Counter(state.get("exact") or {})


def summarize_live(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The operator's view of a stored live snapshot: per bucket verdict and share served."""
    keys = ("verdict", "requests", "requests_while_serving", "served", "served_share", "llm_by_reason")
    buckets = snapshot.get("buckets") or {}
    return {
        "version": snapshot.get("version"),
        "buckets": {b: {k: (buckets.get(b) or {}).get(k) for k in keys} for b in LENGTH_BUCKETS},
        "exact": snapshot.get("exact"),
    }
