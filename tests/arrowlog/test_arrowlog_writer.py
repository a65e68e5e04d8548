"""ArrowLogWriter: batching, flushing, rotation, bounded queue and error isolation."""

from __future__ import annotations

import io
import threading
import time

import pyarrow as pa
import pytest

from poodle_vllm.arrowlog import ArrowLogWriter, describe_log_file, list_log_files, read_log, read_log_table
from poodle_vllm.arrowlog.writer import log_file_name
from poodle_vllm.config import LogConfig


def _ids(table: pa.Table) -> list[str]:
    return table.column("request_id").to_pylist()


def test_in_memory_round_trip_in_bounded_batches(make_record):
    sink = pa.BufferOutputStream()
    records = [make_record(i) for i in range(10)]
    with ArrowLogWriter(None, LogConfig(batch_rows=4), sink=sink) as writer:
        assert all(writer.submit(r) for r in records)
        assert writer.flush(5.0)
        stats = writer.stats()
    assert stats["submitted"] == 10 and stats["written"] == 10 and stats["dropped"] == 0
    assert stats["errors"] == 0 and stats["bytes"] > 0 and stats["current_file"] is None
    table, report = read_log(sink.getvalue())
    assert _ids(table) == [r.request_id for r in records]
    assert report.torn_batches == 0 and report.rows == 10
    reader = pa.ipc.open_stream(sink.getvalue())
    assert all(b.num_rows <= 4 for b in reader)


def test_partial_batch_is_written_after_flush_interval(make_record):
    sink = pa.BufferOutputStream()
    writer = ArrowLogWriter(None, LogConfig(batch_rows=1000, flush_interval_s=0.05), sink=sink)
    try:
        for i in range(3):
            writer.submit(make_record(i))
        deadline = time.monotonic() + 3.0
        while writer.stats()["written"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.stats()["written"] == 3  # no flush() call was needed
    finally:
        writer.close()


def test_files_rotate_by_size_and_keep_order(tmp_path, make_record):
    config = LogConfig(batch_rows=2, rotate_bytes=1)  # every batch fills a file
    with ArrowLogWriter(tmp_path, config) as writer:
        for i in range(6):
            writer.submit(make_record(i))
            if i % 2:
                writer.flush()
    files = list_log_files(tmp_path)
    assert len(files) == 3 and writer.stats()["files"] == 3
    assert all(describe_log_file(f).closed for f in files)
    assert writer.stats()["bytes"] == sum(f.stat().st_size for f in files)
    assert _ids(read_log_table(tmp_path)) == [f"req-{i:05d}" for i in range(6)]


def test_files_rotate_by_age_with_injected_clock(tmp_path, make_record):
    now = [1_000_000.0]
    config = LogConfig(rotate_age_s=60.0)
    with ArrowLogWriter(tmp_path, config, clock=lambda: now[0]) as writer:
        writer.submit(make_record(0))
        writer.flush()
        now[0] += 30.0
        writer.submit(make_record(1))
        writer.flush()
        assert len(list_log_files(tmp_path)) == 1
        now[0] += 31.0
        writer.submit(make_record(2))
        writer.flush()
        assert writer.stats()["current_file"].endswith(".arrows")
    files = list_log_files(tmp_path)
    assert [f.name[:32] for f in files] == [
        "requests-19700112T134640.000000Z",
        "requests-19700112T134741.000000Z",
    ]
    assert [describe_log_file(f).rows for f in files] == [2, 1]


def test_two_writers_in_one_process_never_share_a_file(tmp_path, make_record):
    clock = lambda: 5.0  # noqa: E731 - identical names on purpose
    a = ArrowLogWriter(tmp_path, clock=clock)
    b = ArrowLogWriter(tmp_path, clock=clock)
    a.submit(make_record(0))
    b.submit(make_record(1))
    a.close()
    b.close()
    files = list_log_files(tmp_path)
    assert len(files) == 2
    assert sorted(_ids(read_log_table(tmp_path))) == ["req-00000", "req-00001"]


def test_file_name_sorts_by_time_and_carries_pid():
    early = log_file_name("requests", 1_700_000_000.5, 42, 0)
    late = log_file_name("requests", 1_700_000_001.0, 7, 0)
    assert early < late and "-42-0000" in early


class _StalledSink(io.BytesIO):
    """An output stream whose writes wait until ``release`` is set (a very slow disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, data) -> int:  # type: ignore[override]
        self.entered.set()
        self.release.wait(10.0)
        return super().write(data)


def test_full_queue_drops_and_counts_without_blocking(make_record):
    sink = _StalledSink()
    writer = ArrowLogWriter(None, LogConfig(queue_size=8, batch_rows=1), sink=sink)
    try:
        assert writer.submit(make_record(0))
        assert sink.entered.wait(5.0)  # the writer thread is now stuck in write()
        results, slowest = [], 0.0
        for i in range(1, 41):
            start = time.perf_counter()
            results.append(writer.submit(make_record(i)))
            slowest = max(slowest, time.perf_counter() - start)
        assert slowest < 0.05
        accepted = sum(results)
        assert accepted <= 8 and results.count(False) == 40 - accepted >= 32
        assert writer.stats()["dropped"] == 40 - accepted
        assert not writer.flush(0.1)  # cannot finish while the disk is stalled
        sink.release.set()
        assert writer.flush(5.0)
        stats = writer.stats()
        assert stats["written"] == 1 + accepted and stats["submitted"] == 41
    finally:
        sink.release.set()
        writer.close()


class _BrokenSink(io.BytesIO):
    def write(self, data) -> int:  # type: ignore[override]
        raise OSError(28, "No space left on device")


def test_write_errors_are_counted_never_raised(make_record, caplog):
    writer = ArrowLogWriter(None, LogConfig(batch_rows=2), sink=_BrokenSink())
    try:
        for i in range(4):
            assert writer.submit(make_record(i)) is True
        assert writer.flush(5.0)
        stats = writer.stats()
        assert stats["errors"] >= 1 and stats["written"] == 0 and stats["lost"] == 4
    finally:
        writer.close()
    assert "No space left on device" in caplog.text


def test_unconvertible_record_is_dropped_alone(make_record):
    sink = pa.BufferOutputStream()
    with ArrowLogWriter(None, LogConfig(batch_rows=8), sink=sink) as writer:
        writer.submit(make_record(0))
        writer.submit(make_record(1, prompt_token_ids=[1 << 40]))  # does not fit int32
        writer.submit(make_record(2))
        writer.flush()
        stats = writer.stats()
    assert stats["written"] == 2 and stats["lost"] == 1 and stats["errors"] == 1
    assert _ids(read_log_table(sink.getvalue())) == ["req-00000", "req-00002"]


def test_submit_after_close_is_dropped(make_record, tmp_path):
    writer = ArrowLogWriter(tmp_path)
    writer.close()
    writer.close()  # idempotent
    assert writer.submit(make_record(0)) is False
    assert writer.stats()["dropped"] == 1
    assert list_log_files(tmp_path) == []  # no empty files


def test_threads_submit_concurrently(tmp_path, make_record):
    with ArrowLogWriter(tmp_path, LogConfig(batch_rows=16)) as writer:

        def work(base: int) -> None:
            for i in range(50):
                writer.submit(make_record(base + i))

        threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert writer.flush(5.0)
    assert len(set(_ids(read_log_table(tmp_path)))) == 200


def test_needs_exactly_one_destination():
    with pytest.raises(ValueError):
        ArrowLogWriter(None)
