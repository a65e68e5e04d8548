"""Schema, record <-> row conversion and reading rows of an older schema version."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from poodle_vllm.arrowlog import (
    LOG_SCHEMA,
    SCHEMA_VERSION,
    conform_batch,
    record_to_row,
    records_to_batch,
    row_to_record,
    schema_version_of,
)
from poodle_vllm.types import RequestRecord, SamplingInfo


def test_schema_has_every_record_field_and_version():
    import dataclasses

    for f in dataclasses.fields(RequestRecord):
        assert f.name in LOG_SCHEMA.names
    for derived in ("tenant", "num_prompt_tokens", "num_output_tokens", "latency_s"):
        assert derived in LOG_SCHEMA.names
    assert LOG_SCHEMA.field("prompt_token_ids").type == pa.list_(pa.int32())
    assert LOG_SCHEMA.field("block_hashes").type == pa.list_(pa.uint64())
    assert pa.types.is_struct(LOG_SCHEMA.field("sampling").type)
    for late in ("task_id", "eligible", "surrogate_label", "surrogate_confidence", "served_by"):
        assert LOG_SCHEMA.field(late).nullable
    assert schema_version_of(LOG_SCHEMA) == SCHEMA_VERSION
    assert schema_version_of(pa.schema([("a", pa.int8())])) == 0


def test_record_row_round_trip(make_record):
    record = make_record(
        4,
        lora_name="adapter-1",
        surrogate_label="positive",
        surrogate_confidence=0.93,
        surrogate_version=2,
        route_reason="serving",
        served_by="surrogate",
        ineligible_reason=None,
        slot_text="great product!",
    )
    row = record_to_row(record)
    assert row["tenant"] == "acme|adapter-1" and row["num_prompt_tokens"] == len(record.prompt_token_ids)
    assert row["latency_s"] == pytest.approx(0.25)
    assert row_to_record(row) == record


def test_record_round_trip_through_arrow(make_record):
    records = [make_record(i) for i in range(7)]
    batch = records_to_batch(records)
    assert batch.schema.equals(LOG_SCHEMA, check_metadata=True)
    back = [row_to_record(r) for r in batch.to_pylist()]
    assert back == records
    # The largest uint64 hash survives exactly.
    assert back[0].block_hashes[1] == (1 << 64) - 1


def test_signed_block_hash_is_stored_as_its_lower_64_bits(make_record):
    row = record_to_row(make_record(0, block_hashes=[-1, 5]))
    assert row["block_hashes"] == [(1 << 64) - 1, 5]


def test_sampling_accepts_json_string_and_ignores_unknown_keys(make_record):
    row = record_to_row(make_record(1))
    row["sampling"] = json.dumps({"temperature": 0.7, "stop": ["x"], "future_knob": 3})
    record = row_to_record(row)
    assert record.sampling == SamplingInfo(temperature=0.7, stop=["x"])


def test_conform_v0_batch_fills_nulls_and_recomputes_derived_columns(v0_schema):
    v0 = pa.RecordBatch.from_pylist(
        [
            {
                "request_id": "old-1",
                "arrival_time": 10.0,
                "finish_time": 12.5,
                "prompt_token_ids": [1, 2, 3],
                "output_token_ids": [4, 5],
                "finish_reason": "length",
                "model": "m",
                "prompt_text": "p",
                "output_text": "o",
            }
        ],
        schema=v0_schema,
    )
    batch = conform_batch(v0)
    assert batch.schema.equals(LOG_SCHEMA, check_metadata=True)
    row = batch.to_pylist()[0]
    assert row["task_id"] is None and row["eligible"] is None and row["sampling"] is None
    assert (row["num_prompt_tokens"], row["num_output_tokens"], row["latency_s"], row["tenant"]) == (
        3,
        2,
        2.5,
        "|",
    )
    record = row_to_record(row)
    assert record.block_hashes == [] and record.served_by == "llm" and record.sampling == SamplingInfo()
    assert record.prompt_token_ids == [1, 2, 3] and record.finish_reason == "length"


def test_conform_widens_an_older_sampling_struct_and_drops_unknown_columns():
    old_sampling = pa.struct([("temperature", pa.float64()), ("top_p", pa.float64())])
    schema = pa.schema(
        [("request_id", pa.string()), ("sampling", old_sampling), ("from_the_future", pa.int64())]
    )
    batch = pa.RecordBatch.from_pylist(
        [
            {"request_id": "a", "sampling": {"temperature": 0.5, "top_p": 0.9}, "from_the_future": 1},
            {"request_id": "b", "sampling": None, "from_the_future": 2},
        ],
        schema=schema,
    )
    rows = conform_batch(batch).to_pylist()
    assert rows[0]["sampling"]["temperature"] == 0.5 and rows[0]["sampling"]["stop"] is None
    assert rows[1]["sampling"] is None
    assert "from_the_future" not in rows[0]
    assert row_to_record(rows[0]).sampling == SamplingInfo(temperature=0.5, top_p=0.9)
