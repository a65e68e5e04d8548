"""Which requests are assigned to a task, and which answers may serve as labels.

Two questions, two functions, each returning a reason string (counted per reason) or None.

:func:`prompt_rejection` -- is the prompt usable for detection at all?

* ``detection_disabled`` / ``tenant_disabled``: opted out by configuration.
* ``empty_prompt``; ``prompt_shorter_than_block``: no full block, so vLLM's prefix cache (and
  this detector) cannot see it recur; ``prompt_too_long``: over ``max_prompt_tokens``.

:func:`label_ineligibility` -- may the LLM's answer be used as a training label?

* ``finish_<reason>``: the answer did not end with a stop (``length``: capped by max_tokens,
  ``abort``: cancelled by the client, ``error``): it may be cut off.
* ``served_by_surrogate``: the answer came from the surrogate; learning from it is circular.
* ``n_gt_1``: the client asked for several samples; one logged answer is not "the" answer.
* ``high_temperature``: sampled above ``eligible_max_temperature`` (noisy labels). Temperature
  up to that limit is accepted; self-agreement on repeated slots measures the noise instead.
* ``structured_output``: a client grammar/JSON schema shaped the answer; the label space would
  be the client's, not the task's.
* ``empty_answer``: nothing to learn from.

Decided as eligible (documented so nobody "fixes" them): ``logprobs`` / ``prompt_logprobs``
requests (the answer is still the model's answer; such requests are only never *served* by a
surrogate), client ``stop`` strings and ``seed`` (the answer text is still what the model said,
the normaliser strips trailing punctuation a stop may remove), ``top_p`` / ``top_k``.
"""

from __future__ import annotations

from poodle_vllm.config import DetectionConfig
from poodle_vllm.types import FinishReason, RequestRecord, ServedBy


def prompt_rejection(record: RequestRecord, config: DetectionConfig, block_size: int) -> str | None:
    """Why a prompt is not assigned to any task, or None."""
    if not config.enabled:
        return "detection_disabled"
    if record.tenant in config.disabled_tenants:
        return "tenant_disabled"
    n = len(record.prompt_token_ids or ())
    if n == 0:
        return "empty_prompt"
    if n < block_size:
        return "prompt_shorter_than_block"
    if n > config.max_prompt_tokens:
        return "prompt_too_long"
    return None


_STOP = FinishReason.STOP.value
_LLM = ServedBy.LLM.value


def label_ineligibility(record: RequestRecord, config: DetectionConfig) -> str | None:
    """Why the record's answer is not a usable label, or None when it is."""
    reason = record.finish_reason
    if reason != _STOP:
        reason = str(getattr(reason, "value", reason) or "").lower()
        if reason != _STOP:
            return f"finish_{reason or 'unknown'}"
    if record.served_by != _LLM:
        return "served_by_surrogate"
    s = record.sampling
    if s.n > 1:
        return "n_gt_1"
    if s.temperature > config.eligible_max_temperature:
        return "high_temperature"
    if s.structured:
        return "structured_output"
    if not record.output_token_ids and not (record.output_text or "").strip():
        return "empty_answer"
    return None
