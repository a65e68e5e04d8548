"""Poodle's configuration: one typed dataclass tree with defaults and a docstring per field.

It is read from vLLM's ``--additional-config '{"poodle": {...}}'`` (which reaches every vLLM
process) or from a plain dict / JSON file with :func:`load_config`. Unknown keys raise a clear
error naming the valid ones, so a typo never silently disables a feature.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints


@dataclass
class DetectionConfig:
    """Recurring-task detection from prefix-cache blocks."""

    enabled: bool = True
    """Run detection at all (per-tenant opt-out: ``disabled_tenants``)."""
    min_requests: int = 8
    """A shared prefix chain becomes a candidate task after this many distinct requests."""
    window: int = 4096
    """Requests kept per candidate group for template and label induction (sliding window)."""
    max_nodes: int = 200_000
    """Bound on prefix-index nodes; least recently used leaves are pruned past it."""
    max_labels: int = 8
    """A task is replaceable when at most this many labels ..."""
    min_label_coverage: float = 0.8
    """... cover at least this share of its answers (unparseable answers count against it; the
    135M teacher leaves about 11% of IMDB answers unparseable, so 0.9 would refuse its task)."""
    max_prompt_tokens: int = 32_768
    """Prompts longer than this are not assigned to a task (counted as ineligible)."""
    eligible_max_temperature: float = 1.0
    """Answers sampled above this temperature are never used as labels. Temperature 1 is allowed
    because clients often send it; self-agreement on duplicates is measured instead."""
    disabled_tenants: list[str] = field(default_factory=list)
    """Tenant keys (``cache_salt|lora``) for which detection is off."""


@dataclass
class LogConfig:
    """The Arrow request log."""

    enabled: bool = True
    """Write every finished request to the log."""
    queue_size: int = 10_000
    """Bounded queue between the engine hook and the writer thread; overflow drops are counted."""
    batch_rows: int = 64
    """Rows buffered into one Arrow record batch before it is written and flushed."""
    flush_interval_s: float = 1.0
    """A partial batch is flushed after this many seconds."""
    rotate_bytes: int = 64 * 1024 * 1024
    """Start a new file past this size."""
    rotate_age_s: float = 3600.0
    """Start a new file past this age."""
    max_total_bytes: int = 2 * 1024**3
    """Retention: oldest files are deleted past this total size."""
    max_age_days: float = 30.0
    """Retention: files older than this are deleted."""


@dataclass
class ServingConfig:
    """Routing, shadow testing, monitoring and fallback."""

    policy: str = "offer"
    """``offer`` (an operator runs ``poodle accept``), ``auto`` (switch when the gate passes) or ``off``."""
    min_train_items: int = 200
    """Eligible labelled records a task needs before the worker develops a surrogate."""
    shadow_requests: int = 100
    """Shadow samples to collect before the gate is evaluated."""
    shadow_min_per_label: int = 15
    """Minimum shadow samples per label for the gate."""
    shadow_extend_factor: float = 3.0
    """A label whose Wilson interval still straddles ``gate_target`` at the minimum (inconclusive,
    not failed) keeps the shadow test going until it has this many times ``shadow_min_per_label``
    samples; then the gate decides. 1.0 decides at the minimum."""
    gate_target: float = 0.75
    """The Wilson lower bound of agreement with the LLM must clear this, for every label."""
    gate_confidence: float = 0.95
    """Confidence level of the Wilson interval."""
    confidence_threshold: float = 0.0
    """Below this calibrated confidence a request goes to the LLM (cascade); 0 = always serve."""
    audit_fraction: float = 0.1
    """While serving, this share of the task's requests is answered by the LLM and compared."""
    fallback_window: int = 50
    """Audited requests in the rolling agreement window used for fallback."""
    fallback_target: float = 0.7
    """Fall back when rolling audit agreement drops below this."""
    drift_psi: float = 0.25
    """Population-stability index of the surrogate's confidence histogram that confirms drift."""
    max_batch: int = 32
    """Dynamic batching: most requests in one surrogate forward pass."""
    batch_window_ms: float = 2.0
    """Dynamic batching: how long to wait for more requests before running a batch, once under
    load (the previous batch held more than one request); an idle batcher runs at once."""
    surrogate_timeout_s: float = 2.0
    """A surrogate prediction slower than this sends the request to the LLM."""
    allow_client_xargs: bool = False
    """Honour client ``vllm_xargs`` keys ``poodle_task`` / ``poodle``; off by default so clients
    cannot force a surrogate answer or another tenant's task."""
    registry_poll_s: float = 1.0
    """How often the engine re-reads task states and surrogate versions from the registry."""


@dataclass
class DevelopmentConfig:
    """The background development worker: model search and training."""

    base_model: str | None = None
    """Fixed base model (store id or folder) for every task; None runs a model search."""
    search_items: int = 500
    """Labelled items the model search scores candidates on (the paper's 500)."""
    max_items: int = 5000
    """Most labelled items used to train a surrogate."""
    max_latency_ms: float | None = None
    """Search constraint: measured CPU latency per item (batch 32, 128 tokens). Off by default: the
    store's latencies measured on a busy 2-core host varied 3x; run ``poodle store measure`` on a
    quiet machine before relying on it."""
    max_parameters: int | None = 60_000_000
    """Search constraint: encoder parameters (60M keeps the MiniLM family, leaves out MPNet-base,
    which is 5x slower on these cores)."""
    search_kinds: list[str] | None = field(default_factory=lambda: ["base", "finetuned"])
    """Store entries the search may pick (None = all). Layer truncations are left out by default:
    their frozen features score well, but fine-tuned they stayed near chance here (0.55 vs 0.80 for
    their untruncated parent on rotten_tomatoes, benchmarks/results/model_search.json; on the
    demo's IMDB labels the search's truncated pick reached 0.71 validation agreement and collapsed
    onto the majority label, while all-MiniLM-L6 reached 0.89 held-out agreement)."""
    max_length: int = 128
    """Surrogate input length in tokens; longer inputs are truncated (recorded per request)."""
    epochs: int = 3
    """Most training epochs (early stopping on validation agreement may stop sooner)."""
    time_budget_s: float | None = 600.0
    """Training stops after this many seconds."""
    poll_s: float = 2.0
    """How often the worker looks for ready tasks."""
    num_threads: int = 1
    """Torch threads of the worker (it shares the cores with the LLM)."""


@dataclass
class PoodleConfig:
    """Everything Poodle reads at start-up."""

    enabled: bool = True
    """Master switch; with Poodle installed but not enabled nothing changes in vLLM."""
    home: str | None = None
    """Override ``POODLE_HOME`` (shared models)."""
    state_dir: str | None = None
    """Override ``POODLE_STATE_DIR`` (registry, logs, surrogates)."""
    worker: bool = True
    """Start the background development worker with the server."""
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    """Task detection."""
    log: LogConfig = field(default_factory=LogConfig)
    """Arrow log."""
    serving: ServingConfig = field(default_factory=ServingConfig)
    """Routing and quality control."""
    development: DevelopmentConfig = field(default_factory=DevelopmentConfig)
    """Model search and training in the background worker."""


T = TypeVar("T")


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    if not isinstance(data, dict):
        raise ValueError(f"poodle config: {where} must be an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"poodle config: unknown key(s) {unknown} in {where}; valid: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}")  # type: ignore[arg-type]
        else:
            kwargs[key] = value
    return cls(**kwargs)


def load_config(data: dict[str, Any] | str | None = None) -> PoodleConfig:
    """Build a :class:`PoodleConfig` from a dict, a JSON string, or ``POODLE_CONFIG`` (JSON)."""
    if data is None:
        data = os.environ.get("POODLE_CONFIG") or {}
    if isinstance(data, str):
        data = json.loads(data) if data.strip() else {}
    assert isinstance(data, dict)
    return _build(PoodleConfig, data, "poodle")


def config_from_additional(additional_config: dict[str, Any] | None) -> PoodleConfig | None:
    """Poodle's section of vLLM's ``additional_config``; None when Poodle is not configured."""
    if not additional_config or "poodle" not in additional_config:
        return None
    return load_config(additional_config["poodle"])


def config_to_dict(cfg: PoodleConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
