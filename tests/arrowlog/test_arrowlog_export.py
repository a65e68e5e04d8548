"""Parquet and JSON Lines export; DuckDB reads the Parquet."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from poodle_vllm.arrowlog import (
    LOG_SCHEMA,
    ArrowLogWriter,
    ReadReport,
    export_jsonl,
    export_parquet,
    row_to_record,
)
from poodle_vllm.config import LogConfig


@pytest.fixture
def log_dir(tmp_path, make_record):
    directory = tmp_path / "logs"
    with ArrowLogWriter(directory, LogConfig(batch_rows=4, rotate_bytes=1)) as writer:
        for i in range(10):
            writer.submit(make_record(i))
    return directory


def test_export_parquet_round_trip(log_dir, tmp_path, make_record):
    out = tmp_path / "log.parquet"
    report = ReadReport()
    assert export_parquet(log_dir, out, report=report) == 10
    assert report.files >= 3
    table = pq.read_table(out)
    assert table.schema.names == LOG_SCHEMA.names
    assert [row_to_record(r) for r in table.to_pylist()] == [make_record(i) for i in range(10)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_duckdb_queries_the_parquet_export(log_dir, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "log.parquet"
    export_parquet(log_dir, out)
    rows = duckdb.sql(
        f"SELECT task_id, count(*) AS n, sum(num_prompt_tokens) AS tokens FROM read_parquet('{out}') "
        "GROUP BY task_id ORDER BY task_id"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("task-a", 5), ("task-b", 5)]
    assert duckdb.sql(f"SELECT sampling.temperature FROM read_parquet('{out}') LIMIT 1").fetchall() == [
        (0.0,)
    ]


def test_export_jsonl(log_dir, tmp_path, make_record):
    out = tmp_path / "log.jsonl"
    assert export_jsonl(log_dir, out, columns=["request_id", "block_hashes", "sampling"]) == 10
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 10 and set(lines[0]) == {"request_id", "block_hashes", "sampling"}
    assert lines[3]["block_hashes"] == make_record(3).block_hashes
    assert lines[0]["sampling"]["stop"] == ["\n"]
