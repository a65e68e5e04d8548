"""Small record factories shared by the arrowlog tests."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest

from poodle_vllm.arrowlog.schema import SCHEMA_VERSION_KEY
from poodle_vllm.types import RequestRecord, SamplingInfo


def build_record(i: int, **overrides) -> RequestRecord:
    """A realistic finished request; ``i`` makes ids, times and token ids distinct."""
    fields = dict(
        request_id=f"req-{i:05d}",
        arrival_time=1_700_000_000.0 + i,
        finish_time=1_700_000_000.0 + i + 0.25,
        prompt_token_ids=[1, 2, 3, 100 + i] + [7] * (i % 5),
        output_token_ids=[31176, 30, 2],
        finish_reason="stop",
        block_hashes=[(i * 2654435761) % (1 << 64), (1 << 64) - 1 - i],
        block_size=16,
        model="SmolLM2-135M-Instruct",
        cache_salt="acme" if i % 3 else None,
        lora_name=None,
        prompt_text=f"Classify the sentiment of review {i}: great product!",
        output_text="Positive.",
        num_cached_tokens=16,
        sampling=SamplingInfo(temperature=0.0, max_tokens=8, stop=["\n"]),
        task_id="task-a" if i % 2 else "task-b",
        label="positive",
        eligible=True,
    )
    fields.update(overrides)
    return RequestRecord(**fields)


@pytest.fixture
def make_record() -> Callable[..., RequestRecord]:
    return build_record


V0_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("arrival_time", pa.float64()),
        ("finish_time", pa.float64()),
        ("prompt_token_ids", pa.list_(pa.int32())),
        ("output_token_ids", pa.list_(pa.int32())),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("prompt_text", pa.string()),
        ("output_text", pa.string()),
    ],
    metadata={SCHEMA_VERSION_KEY: b"0"},
)
"""The reduced first-sketch schema ("v0"): what an old log file holds."""


@pytest.fixture
def v0_schema() -> pa.Schema:
    return V0_SCHEMA
