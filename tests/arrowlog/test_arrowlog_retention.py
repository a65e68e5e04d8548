"""Retention by size and age, and purge of a tenant's or a task's rows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

from poodle_vllm.arrowlog import (
    ArrowLogWriter,
    apply_retention,
    describe_log_file,
    list_log_files,
    purge_log,
    purge_records,
    read_log_table,
)
from poodle_vllm.config import LogConfig


def _write_files(directory: Path, make_record, n_files: int, rows_per_file: int = 3) -> list[Path]:
    now = [1_000.0]
    config = LogConfig(batch_rows=rows_per_file, rotate_bytes=1)  # one batch per file
    with ArrowLogWriter(directory, config, clock=lambda: now[0], retention=False) as writer:
        for f in range(n_files):
            for i in range(rows_per_file):
                writer.submit(make_record(f * rows_per_file + i))
            writer.flush()
            now[0] += 1.0
    files = list_log_files(directory)
    assert len(files) == n_files
    return files


def test_retention_deletes_oldest_files_past_the_size_budget(tmp_path, make_record):
    files = _write_files(tmp_path, make_record, 5)
    keep_bytes = sum(f.stat().st_size for f in files[-2:])
    deleted = apply_retention(tmp_path, LogConfig(max_total_bytes=keep_bytes))
    assert deleted == files[:3]
    assert list_log_files(tmp_path) == files[3:]


def test_retention_deletes_files_past_the_age_limit(tmp_path, make_record):
    files = _write_files(tmp_path, make_record, 4)
    now = time.time()
    for f in files[:2]:
        os.utime(f, (now - 3 * 86400, now - 3 * 86400))
    deleted = apply_retention(tmp_path, LogConfig(max_age_days=2.0), now=now)
    assert deleted == files[:2]
    assert apply_retention(tmp_path, LogConfig(max_age_days=2.0), now=now) == []


def test_retention_spares_a_file_still_being_written(tmp_path, make_record):
    old = _write_files(tmp_path, make_record, 2)
    writer = ArrowLogWriter(tmp_path, retention=False)
    try:
        writer.submit(make_record(99))
        writer.flush()
        active = Path(writer.stats()["current_file"])
        assert apply_retention(tmp_path, LogConfig(max_total_bytes=0)) == old
        assert list_log_files(tmp_path) == [active]
    finally:
        writer.close()


def test_writer_applies_retention_when_it_opens_a_file(tmp_path, make_record):
    config = LogConfig(batch_rows=1, rotate_bytes=1, max_total_bytes=1)
    with ArrowLogWriter(tmp_path, config) as writer:
        for i in range(4):
            writer.submit(make_record(i))
            writer.flush()
    # Each new file deleted its closed predecessors: only the newest survives.
    assert read_log_table(tmp_path).column("request_id").to_pylist() == ["req-00003"]


def test_purge_by_task_rewrites_files_atomically(tmp_path, make_record):
    files = _write_files(tmp_path, make_record, 3, rows_per_file=4)
    mtimes = [f.stat().st_mtime for f in files]
    before = read_log_table(tmp_path)
    expected = sum(1 for t in before.column("task_id").to_pylist() if t == "task-a")
    assert purge_records(tmp_path, task_id="task-a") == expected > 0
    after = read_log_table(tmp_path)
    assert "task-a" not in after.column("task_id").to_pylist()
    assert after.num_rows == before.num_rows - expected
    assert list_log_files(tmp_path) == files  # same names, same order
    assert [f.stat().st_mtime for f in files] == pytest.approx(mtimes)  # retention age kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in files)  # no temp files
    assert all(describe_log_file(f).closed for f in files)


def test_purge_by_tenant_deletes_files_left_empty(tmp_path, make_record):
    rows = [make_record(i, cache_salt="acme" if i < 3 else "other") for i in range(6)]
    now = [1.0]
    with ArrowLogWriter(tmp_path, LogConfig(batch_rows=3, rotate_bytes=1), clock=lambda: now[0]) as writer:
        for r in rows:
            writer.submit(r)
            if r.request_id.endswith("2"):
                writer.flush()
                now[0] += 1
    first, second = list_log_files(tmp_path)
    report = purge_log(tmp_path, tenant="acme|")
    assert report.rows_removed == 3 and report.files_deleted == [str(first)] and not report.files_rewritten
    assert list_log_files(tmp_path) == [second]
    assert purge_records(tmp_path, tenant="acme|") == 0


def test_purge_keeps_an_old_files_schema_version(tmp_path, v0_schema):
    path = tmp_path / "requests-20250101T000000.000000Z-1-0000.arrows"
    rows = [
        {
            "request_id": f"old-{i}",
            "arrival_time": 0.0,
            "finish_time": 1.0,
            "prompt_token_ids": [1],
            "output_token_ids": [2],
            "finish_reason": "stop",
            "model": "m",
            "prompt_text": None,
            "output_text": None,
        }
        for i in range(3)
    ]
    with open(path, "wb") as raw, pa.ipc.new_stream(raw, v0_schema) as w:
        w.write_batch(pa.RecordBatch.from_pylist(rows, schema=v0_schema))
    # v0 rows have no salt and no LoRA: tenant "|".
    assert purge_records(tmp_path, tenant="|") == 3
    assert not path.exists()


def test_purge_skips_active_files_and_needs_a_filter(tmp_path, make_record):
    writer = ArrowLogWriter(tmp_path, retention=False)
    try:
        writer.submit(make_record(1))
        writer.flush()
        report = purge_log(tmp_path, task_id="task-a")
        assert report.rows_removed == 0 and report.skipped_active == [writer.stats()["current_file"]]
        writer.rotate()  # closes the file at the next write; the purge can then proceed
        writer.submit(make_record(3))
        writer.flush()
        report = purge_log(tmp_path, task_id="task-a")
        assert report.rows_removed == 1 and len(report.skipped_active) == 1
    finally:
        writer.close()
    assert read_log_table(tmp_path).column("request_id").to_pylist() == ["req-00003"]
    assert purge_records(tmp_path, task_id="task-a") == 1  # req-00003 is task-a too, file closed now
    with pytest.raises(ValueError):
        purge_records(tmp_path)
