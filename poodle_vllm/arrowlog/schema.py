"""The Arrow schema of the request log: one row per finished request (a :class:`RequestRecord`).

Schema versions (stored in the schema metadata under ``b"poodle.schema_version"``):

* ``0`` - the first sketch: request id, times, token ids, finish reason, model and texts only.
  Files without the metadata key are read as version 0.
* ``1`` - every :class:`~poodle_vllm.types.RequestRecord` field, ``sampling`` as a struct,
  ``block_hashes`` as ``list<uint64>`` and the derived columns ``tenant``,
  ``num_prompt_tokens``, ``num_output_tokens`` and ``latency_s``.

All columns are nullable so that files of any older version can be read into the current
schema (:func:`conform_batch` fills missing columns with nulls, or recomputes the derived ones).
The writer always fills the core columns (request id, times, token ids, finish reason).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from poodle_vllm.types import RequestRecord, SamplingInfo, ServedBy

SCHEMA_VERSION = 1
"""Version of :data:`LOG_SCHEMA`; bump it (and extend :func:`conform_batch`) when columns change."""
SCHEMA_VERSION_KEY = b"poodle.schema_version"
RECORD_KIND_KEY = b"poodle.record"

_UINT64_MASK = (1 << 64) - 1

SAMPLING_TYPE = pa.struct(
    [
        pa.field("temperature", pa.float64()),
        pa.field("top_p", pa.float64()),
        pa.field("top_k", pa.int32()),
        pa.field("n", pa.int32()),
        pa.field("max_tokens", pa.int32()),
        pa.field("seed", pa.int64()),
        pa.field("logprobs", pa.int32()),
        pa.field("prompt_logprobs", pa.int32()),
        pa.field("structured", pa.bool_()),
        pa.field("stop", pa.list_(pa.string())),
    ]
)

DERIVED_COLUMNS = ("tenant", "num_prompt_tokens", "num_output_tokens", "latency_s")
"""Columns computed from others (kept in the file so SQL tools can filter on them directly)."""

LOG_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field("arrival_time", pa.float64()),
        pa.field("finish_time", pa.float64()),
        pa.field("prompt_token_ids", pa.list_(pa.int32())),
        pa.field("output_token_ids", pa.list_(pa.int32())),
        pa.field("finish_reason", pa.string()),
        pa.field("block_hashes", pa.list_(pa.uint64())),
        pa.field("block_size", pa.int32()),
        pa.field("model", pa.string()),
        pa.field("cache_salt", pa.string()),
        pa.field("lora_name", pa.string()),
        pa.field("prompt_text", pa.string()),
        pa.field("output_text", pa.string()),
        pa.field("num_cached_tokens", pa.int32()),
        pa.field("sampling", SAMPLING_TYPE),
        pa.field("served_by", pa.string()),
        # Filled in by task detection and the surrogate runtime; null when unknown.
        pa.field("task_id", pa.string()),
        pa.field("slot_text", pa.string()),
        pa.field("label", pa.string()),
        pa.field("eligible", pa.bool_()),
        pa.field("ineligible_reason", pa.string()),
        pa.field("surrogate_label", pa.string()),
        pa.field("surrogate_confidence", pa.float64()),
        pa.field("surrogate_version", pa.int32()),
        pa.field("route_reason", pa.string()),
        # Derived.
        pa.field("tenant", pa.string()),
        pa.field("num_prompt_tokens", pa.int32()),
        pa.field("num_output_tokens", pa.int32()),
        pa.field("latency_s", pa.float64()),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), RECORD_KIND_KEY: b"RequestRecord"},
)
"""The current log schema (version :data:`SCHEMA_VERSION`)."""

_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(RequestRecord))
_SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingInfo))
# Defaults used when an old file has a null where the dataclass wants a value.
_NON_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "finish_reason": "",
    "block_hashes": [],
    "block_size": 0,
    "model": "",
    "num_cached_tokens": 0,
    "served_by": ServedBy.LLM.value,
    "prompt_token_ids": [],
    "output_token_ids": [],
    "arrival_time": 0.0,
    "finish_time": 0.0,
    "request_id": "",
}


def schema_version_of(schema: pa.Schema) -> int:
    """The Poodle schema version stored in ``schema``'s metadata (0 when absent)."""
    raw = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    if raw is None:
        return 0
    try:
        return int(raw.decode())
    except ValueError:
        return 0


def _sampling_to_dict(sampling: Any) -> dict[str, Any] | None:
    if sampling is None:
        return None
    if isinstance(sampling, SamplingInfo):
        # NOTE: not dataclasses.asdict, which deep-copies and costs ~15x more on the writer thread.
        d = {k: getattr(sampling, k) for k in _SAMPLING_FIELDS}
    elif isinstance(sampling, dict):
        d = {k: sampling.get(k) for k in _SAMPLING_FIELDS}
    else:
        raise TypeError(f"sampling must be SamplingInfo or dict, got {type(sampling).__name__}")
    d["stop"] = list(d.get("stop") or [])
    return d


def record_to_row(record: RequestRecord) -> dict[str, Any]:
    """One log row (a dict keyed by :data:`LOG_SCHEMA` column names) for ``record``."""
    row: dict[str, Any] = {name: getattr(record, name) for name in _RECORD_FIELDS}
    row["prompt_token_ids"] = list(record.prompt_token_ids)
    row["output_token_ids"] = list(record.output_token_ids)
    # NOTE: vLLM hashes are reduced to 64 bits; masking also maps a signed value onto uint64.
    row["block_hashes"] = [int(h) & _UINT64_MASK for h in record.block_hashes]
    row["sampling"] = _sampling_to_dict(record.sampling)
    served_by = record.served_by
    row["served_by"] = served_by.value if isinstance(served_by, ServedBy) else served_by
    row["tenant"] = record.tenant
    row["num_prompt_tokens"] = record.num_prompt_tokens
    row["num_output_tokens"] = record.num_output_tokens
    row["latency_s"] = record.latency_s
    return row


def row_to_record(row: dict[str, Any]) -> RequestRecord:
    """The :class:`RequestRecord` of a log row (derived and unknown columns are ignored)."""
    kwargs: dict[str, Any] = {}
    for name in _RECORD_FIELDS:
        value = row.get(name)
        if value is None and name in _NON_OPTIONAL_DEFAULTS:
            default = _NON_OPTIONAL_DEFAULTS[name]
            value = list(default) if isinstance(default, list) else default
        kwargs[name] = value
    sampling = row.get("sampling")
    if isinstance(sampling, (str, bytes)):
        sampling = json.loads(sampling)  # tolerate a JSON-string sampling column
    if isinstance(sampling, dict):
        known = {k: v for k, v in sampling.items() if k in _SAMPLING_FIELDS and v is not None}
        known["stop"] = list(known.get("stop") or [])
        kwargs["sampling"] = SamplingInfo(**known)
    else:
        kwargs["sampling"] = SamplingInfo()
    kwargs["prompt_token_ids"] = list(kwargs["prompt_token_ids"])
    kwargs["output_token_ids"] = list(kwargs["output_token_ids"])
    kwargs["block_hashes"] = list(kwargs["block_hashes"])
    return RequestRecord(**kwargs)


def rows_to_batch(rows: list[dict[str, Any]], schema: pa.Schema = LOG_SCHEMA) -> pa.RecordBatch:
    """A record batch of log rows, built column by column (about 4x faster than ``from_pylist``).

    Raises (``pa.ArrowException``, ``OverflowError``, ...) on a value the schema cannot hold.
    """
    arrays = [pa.array([row.get(f.name) for row in rows], type=f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def records_to_batch(records: list[RequestRecord], schema: pa.Schema = LOG_SCHEMA) -> pa.RecordBatch:
    """A record batch of ``records`` in ``schema`` (raises on values the schema cannot hold)."""
    return rows_to_batch([record_to_row(r) for r in records], schema)


def _conform_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast ``array`` to ``target``; structs are matched child by child so old structs widen."""
    if array.type.equals(target):
        return array
    if pa.types.is_struct(target) and pa.types.is_struct(array.type):
        present = {array.type.field(i).name: child for i, child in enumerate(array.flatten())}
        children = []
        for i in range(target.num_fields):
            field = target.field(i)
            child = present.get(field.name)
            children.append(
                pa.nulls(len(array), field.type) if child is None else _conform_array(child, field.type)
            )
        mask = array.is_null() if array.null_count else None
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    return array.cast(target)


def _derived_column(name: str, columns: dict[str, pa.Array], length: int) -> pa.Array:
    """Recompute a derived column for a file written before it existed."""
    if name in ("num_prompt_tokens", "num_output_tokens"):
        source = columns.get("prompt_token_ids" if name == "num_prompt_tokens" else "output_token_ids")
        if source is not None:
            return pc.list_value_length(source).cast(pa.int32())
    elif name == "latency_s":
        arrival, finish = columns.get("arrival_time"), columns.get("finish_time")
        if arrival is not None and finish is not None:
            return pc.max_element_wise(pc.subtract(finish, arrival), 0.0)
    elif name == "tenant":
        empty = pa.array([""] * length, pa.string())
        salt = columns.get("cache_salt")
        lora = columns.get("lora_name")
        salt = empty if salt is None else pc.fill_null(salt, "")
        lora = empty if lora is None else pc.fill_null(lora, "")
        return pc.binary_join_element_wise(salt, lora, "|")
    return pa.nulls(length, LOG_SCHEMA.field(name).type)


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema = LOG_SCHEMA) -> pa.RecordBatch:
    """``batch`` (of any schema version) in the current ``schema``.

    Missing columns become nulls (derived ones are recomputed from their sources); columns the
    current schema does not know (written by a newer Poodle) are dropped.
    """
    if batch.schema.equals(schema, check_metadata=False):
        return batch.replace_schema_metadata(schema.metadata)
    length = batch.num_rows
    columns: dict[str, pa.Array] = {}
    for field in schema:
        if field.name in batch.schema.names:
            columns[field.name] = _conform_array(batch.column(field.name), field.type)
    arrays = []
    for field in schema:
        if field.name in columns:
            arrays.append(columns[field.name])
        elif field.name in DERIVED_COLUMNS:
            arrays.append(_derived_column(field.name, columns, length))
        else:
            arrays.append(pa.nulls(length, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
