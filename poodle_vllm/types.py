"""Plain data objects that cross Poodle's layers.

None of these import torch or vllm. The vLLM glue converts engine objects into them at the
edge (``integration/vllm``), so the core, the log, the worker and the tests speak only these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class ServedBy(str, enum.Enum):
    """Who produced the answer the user received."""

    LLM = "llm"
    SURROGATE = "surrogate"


class FinishReason(str, enum.Enum):
    """Why a request ended, as Poodle records it (vLLM's reasons plus ``error``)."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


class TaskState(str, enum.Enum):
    """Lifecycle of a recurring task in the registry."""

    OBSERVING = "observing"  # recurring prefix seen, template/label space still being induced
    COLLECTING = "collecting"  # replaceable: collecting LLM-labelled records
    READY = "ready"  # enough labelled records to develop a surrogate
    SEARCHING = "searching"  # model search running
    TRAINING = "training"  # fine-tuning running
    SHADOW = "shadow"  # surrogate predicts beside the LLM; gate not passed yet
    OFFERED = "offered"  # gate passed; waiting for an operator (policy "offer")
    SERVING = "serving"  # surrogate answers the task
    FALLBACK = "fallback"  # quality dropped; the LLM answers, fresh labels are collected
    RETIRED = "retired"  # rejected or disabled by an operator
    GENERATIVE = "generative"  # recurring, but its answers are not a small label space


@dataclass
class SamplingInfo:
    """The effective sampling parameters of one request (what decides label eligibility)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    max_tokens: int | None = None
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    structured: bool = False
    stop: list[str] = field(default_factory=list)


@dataclass
class RequestRecord:
    """One finished request, as the engine hook saw it; one row of the Arrow log.

    ``block_hashes`` are vLLM's own prefix-cache block hashes of the prompt's full blocks,
    reduced to their lower 64 bits (as vLLM's KV events do), so records are comparable with
    the engine's cache and with hashes recomputed offline.
    """

    request_id: str
    arrival_time: float
    finish_time: float
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    finish_reason: str
    block_hashes: list[int] = field(default_factory=list)
    block_size: int = 0
    model: str = ""
    cache_salt: str | None = None
    lora_name: str | None = None
    prompt_text: str | None = None
    output_text: str | None = None
    num_cached_tokens: int = 0
    sampling: SamplingInfo = field(default_factory=SamplingInfo)
    served_by: str = ServedBy.LLM.value
    # Filled in by task detection and the surrogate runtime (nullable columns in the log).
    task_id: str | None = None
    slot_text: str | None = None
    label: str | None = None
    eligible: bool | None = None
    ineligible_reason: str | None = None
    surrogate_label: str | None = None
    surrogate_confidence: float | None = None
    surrogate_version: int | None = None
    route_reason: str | None = None

    @property
    def tenant(self) -> str:
        """Tenant key: requests of different tenants never share a task."""
        return f"{self.cache_salt or ''}|{self.lora_name or ''}"

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def latency_s(self) -> float:
        return max(0.0, self.finish_time - self.arrival_time)


@dataclass
class TaskTemplate:
    """A recurring prompt shape at token precision: ``prefix + SLOT + suffix``."""

    prefix_token_ids: list[int]
    suffix_token_ids: list[int]
    prefix_text: str | None = None
    suffix_text: str | None = None

    def matches(self, token_ids: list[int]) -> bool:
        """True if ``token_ids`` starts with the prefix and ends with the suffix (slot may be empty)."""
        p, s = self.prefix_token_ids, self.suffix_token_ids
        if len(token_ids) < len(p) + len(s):
            return False
        return token_ids[: len(p)] == p and (not s or token_ids[len(token_ids) - len(s) :] == s)

    def slot_token_ids(self, token_ids: list[int]) -> list[int]:
        return token_ids[len(self.prefix_token_ids) : len(token_ids) - len(self.suffix_token_ids)]


@dataclass
class LabelInfo:
    """One label of a task's output space and the exact answer the LLM uses for it."""

    label: str
    count: int = 0
    canonical_token_ids: list[int] = field(default_factory=list)
    canonical_text: str = ""
    canonical_share: float = 0.0
    """Share of this label's answers that were exactly the canonical token sequence."""


@dataclass
class TaskInfo:
    """A task as the registry holds it."""

    task_id: str
    name: str
    state: str
    tenant: str
    model: str
    template: TaskTemplate
    labels: list[LabelInfo] = field(default_factory=list)
    requests_seen: int = 0
    eligible_seen: int = 0
    unparseable: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
