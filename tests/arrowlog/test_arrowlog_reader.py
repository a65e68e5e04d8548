"""Reader: torn tails, corrupt files, old schema versions, and a writer killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from poodle_vllm.arrowlog import (
    ArrowLogWriter,
    ReadReport,
    count_records,
    describe_log_file,
    iter_records,
    list_log_files,
    read_log,
    read_log_table,
    records_to_batch,
)
from poodle_vllm.config import LogConfig
from poodle_vllm.paths import REPO_ROOT


def _write_stream(path: Path, batches: list[pa.RecordBatch]) -> list[int]:
    """Write ``batches`` as one IPC stream; returns the byte offset at which each batch ends."""
    ends = []
    with open(path, "wb") as raw:
        writer = pa.ipc.new_stream(raw, batches[0].schema)
        for batch in batches:
            writer.write_batch(batch)
            raw.flush()
            ends.append(raw.tell())
        writer.close()
    return ends


def test_every_truncation_point_yields_exactly_the_complete_batches(tmp_path, make_record):
    path = tmp_path / "requests-20260101T000000.000000Z-1-0000.arrows"
    batches = [records_to_batch([make_record(b * 5 + i) for i in range(5)]) for b in range(4)]
    ends = _write_stream(path, batches)
    data = path.read_bytes()
    cut_path = tmp_path / "cut" / path.name
    cut_path.parent.mkdir()
    for cut in list(range(0, len(data), 131)) + [e - 1 for e in ends] + ends:
        cut_path.write_bytes(data[:cut])
        table, report = read_log(cut_path)
        complete = sum(1 for e in ends if e <= cut)
        assert table.num_rows == 5 * complete, cut
        assert table.column("request_id").to_pylist() == [f"req-{i:05d}" for i in range(5 * complete)]
        assert not report.corrupt_files
        torn = cut not in ends  # a cut exactly on a batch boundary is a clean (unclosed) prefix
        assert report.torn_batches == int(torn) and report.torn_files == ([str(cut_path)] if torn else [])
        assert count_records(cut_path) == 5 * complete


def test_torn_tail_of_a_writer_file_is_skipped(tmp_path, make_record):
    with ArrowLogWriter(tmp_path, LogConfig(batch_rows=5)) as writer:
        for b in range(4):
            for i in range(5):
                writer.submit(make_record(b * 5 + i))
            writer.flush()
    [path] = list_log_files(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 8 - 100)  # drop the end-of-stream marker and part of the last batch
    report = ReadReport()
    table = read_log_table(tmp_path, report=report)
    assert table.num_rows == 15 and report.batches == 3
    assert report.torn_files == [str(path)] and report.torn_batches == 1
    info = describe_log_file(path)
    assert info.torn and not info.closed and info.rows == 15 and info.writer_pid == os.getpid()


def test_corrupt_and_empty_files_are_skipped_without_losing_others(tmp_path, make_record):
    good = tmp_path / "requests-20260101T000001.000000Z-1-0000.arrows"
    _write_stream(good, [records_to_batch([make_record(i) for i in range(3)])])
    corrupt = tmp_path / "requests-20260101T000000.000000Z-1-0000.arrows"
    corrupt.write_bytes(b"this is not an arrow stream at all" * 10)
    empty = tmp_path / "requests-20260101T000002.000000Z-1-0000.arrows"
    empty.write_bytes(b"")
    (tmp_path / "notes.txt").write_text("ignored")
    table, report = read_log(tmp_path)
    assert table.num_rows == 3 and report.files == 3
    assert list(report.corrupt_files) == [str(corrupt)]
    assert "not an Arrow IPC stream" in report.corrupt_files[str(corrupt)]
    assert report.torn_files == [str(empty)]
    assert describe_log_file(corrupt).error is not None


def test_old_schema_file_reads_beside_current_one(tmp_path, make_record, v0_schema):
    old = tmp_path / "requests-20250101T000000.000000Z-1-0000.arrows"
    rows = [
        {
            "request_id": f"old-{i}",
            "arrival_time": 1.0,
            "finish_time": 3.0,
            "prompt_token_ids": [5, 6],
            "output_token_ids": [7],
            "finish_reason": "stop",
            "model": "m",
            "prompt_text": "p",
            "output_text": "o",
        }
        for i in range(2)
    ]
    _write_stream(old, [pa.RecordBatch.from_pylist(rows, schema=v0_schema)])
    with ArrowLogWriter(tmp_path) as writer:
        writer.submit(make_record(1))
    table = read_log_table(tmp_path)
    assert table.column("request_id").to_pylist() == ["old-0", "old-1", "req-00001"]
    assert table.column("task_id").to_pylist() == [None, None, "task-a"]
    assert table.column("num_prompt_tokens").to_pylist()[:2] == [2, 2]
    records = list(iter_records(tmp_path))
    assert records[0].sampling.temperature == 1.0 and records[0].block_hashes == []
    assert records[2] == make_record(1)
    assert describe_log_file(old).schema_version == 0
    assert describe_log_file(list_log_files(tmp_path)[1]).schema_version == 1


def test_column_selection_and_unknown_column(tmp_path, make_record):
    with ArrowLogWriter(tmp_path) as writer:
        for i in range(3):
            writer.submit(make_record(i))
    table = read_log_table(tmp_path, columns=["request_id", "tenant"])
    assert table.column_names == ["request_id", "tenant"] and table.num_rows == 3
    with pytest.raises(ValueError, match="unknown log column"):
        read_log_table(tmp_path, columns=["nope"])
    with pytest.raises(FileNotFoundError):
        read_log_table(tmp_path / "missing")


def test_pandas_reads_a_log_file_directly(tmp_path, make_record):
    pytest.importorskip("pandas")
    with ArrowLogWriter(tmp_path) as writer:
        for i in range(4):
            writer.submit(make_record(i))
    [path] = list_log_files(tmp_path)
    with pa.OSFile(str(path), "rb") as f:
        df = pa.ipc.open_stream(f).read_pandas()
    assert list(df["request_id"]) == [f"req-{i:05d}" for i in range(4)]
    assert list(df["prompt_token_ids"].iloc[0]) == make_record(0).prompt_token_ids


_CHILD = textwrap.dedent(
    """
    import sys, time
    from poodle_vllm.arrowlog import ArrowLogWriter
    from poodle_vllm.config import LogConfig
    from poodle_vllm.types import RequestRecord

    def rec(i):
        return RequestRecord(f"req-{i:06d}", float(i), i + 0.5, list(range(i % 50 + 1)), [1, 2], "stop",
                             prompt_text="x" * (i % 300))

    writer = ArrowLogWriter(sys.argv[1], LogConfig(batch_rows=10, flush_interval_s=0.005))
    for i in range(25):
        writer.submit(rec(i))
    assert writer.flush(10)
    print("flushed", flush=True)
    i = 25
    while True:  # keep the writer busy so the kill lands mid-write
        if writer.submit(rec(i)):
            i += 1
        if i % 20 == 0:
            time.sleep(0.001)
    """
)


def test_rows_flushed_before_sigkill_are_readable(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    table, report = read_log(tmp_path)
    ids = table.column("request_id").to_pylist()
    assert len(ids) >= 25 and not report.corrupt_files
    assert ids == [f"req-{i:06d}" for i in range(len(ids))]  # a gap-free prefix of what was submitted
    [path] = list_log_files(tmp_path)
    assert not describe_log_file(path).closed
