"""A buffered, crash-safe writer of the Arrow request log.

The engine hook calls :meth:`ArrowLogWriter.submit`, which only puts the record on a bounded
queue (never blocks; a full queue drops the record and counts it). A writer thread turns queued
records into record batches and appends them to Arrow IPC *stream* files. Each batch is flushed
(and optionally fsynced) as soon as it is written, so a process killed with SIGKILL leaves a file
whose every flushed batch is readable; at most a torn last batch is lost, and the reader skips it.

Files are named ``<prefix>-<UTC time>-<pid>-<seq>.arrows``: they sort by creation time, and the
pid keeps writers of different processes apart (exactly one writer per file).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from poodle_vllm.arrowlog.schema import LOG_SCHEMA, SCHEMA_VERSION, record_to_row, rows_to_batch
from poodle_vllm.config import LogConfig
from poodle_vllm.types import RequestRecord

logger = logging.getLogger(__name__)

LOG_SUFFIX = ".arrows"
"""Suffix of log files (the Arrow IPC stream format's conventional extension)."""
PID_KEY = b"poodle.writer_pid"
CREATED_KEY = b"poodle.created"

_STOP = object()
_WAKE = object()
_LIVE_WRITERS: weakref.WeakSet[ArrowLogWriter] = weakref.WeakSet()


def _close_live_writers() -> None:
    # NOTE: the writer thread is a daemon, so without this an orderly exit would lose the
    # rows still buffered; a crash loses at most what was not yet flushed.
    for writer in list(_LIVE_WRITERS):
        try:
            writer.close(timeout=2.0)
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


atexit.register(_close_live_writers)


def log_file_name(prefix: str, created: float, pid: int, seq: int) -> str:
    """File name that sorts by creation time: ``requests-20260101T120000.123456Z-4242-0000.arrows``."""
    stamp = _dt.datetime.fromtimestamp(created, tz=_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{prefix}-{stamp}-{pid}-{seq:04d}{LOG_SUFFIX}"


class _FileSink:
    """One open log file: the IPC stream writer over a Python file opened exclusively."""

    def __init__(self, path: Path | None, raw: Any, schema: pa.Schema, created: float, owns_raw: bool):
        self.path = path
        self.raw = raw
        self.created = created
        self.owns_raw = owns_raw
        self.bytes = 0
        self.ipc = pa.ipc.new_stream(raw, schema)

    def write(self, batch: pa.RecordBatch, fsync: bool) -> None:
        self.ipc.write_batch(batch)
        self.raw.flush()
        if fsync and self.owns_raw:
            os.fsync(self.raw.fileno())
        self.bytes = self.raw.tell()

    def close(self) -> None:
        try:
            self.ipc.close()  # writes the end-of-stream marker: a cleanly closed file
            self.raw.flush()
        finally:
            if self.owns_raw:
                self.raw.close()


class ArrowLogWriter:
    """Appends :class:`RequestRecord` rows to Arrow IPC stream files from a background thread.

    ``directory=None`` with ``sink=`` writes one stream into a caller-owned output stream
    (``pa.BufferOutputStream()`` or any writable file object) instead of files; that sink is
    never rotated or closed. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        config: LogConfig | None = None,
        *,
        name_prefix: str = "requests",
        clock: Callable[[], float] = time.time,
        sink: Any = None,
        fsync: bool = False,
        retention: bool = True,
    ) -> None:
        if (directory is None) == (sink is None):
            raise ValueError("ArrowLogWriter needs exactly one of directory or sink")
        self.config = config or LogConfig()
        self.directory = Path(directory) if directory is not None else None
        self.name_prefix = name_prefix
        self.clock = clock
        self.fsync = fsync
        self.retention = retention
        self._external_sink = sink
        self._pid = os.getpid()
        self._seq = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, self.config.queue_size))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._flush_requested = threading.Event()
        self._wake_pending = threading.Event()
        self._closed = False
        self._accepted = 0  # records put on the queue
        self._processed = 0  # records taken off the queue and written (or failed)
        self._counts = {"submitted": 0, "written": 0, "dropped": 0, "errors": 0, "lost": 0}
        self._files = 0
        self._bytes_closed = 0
        self._file: _FileSink | None = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="poodle-arrowlog-writer", daemon=True)
        self._thread.start()
        _LIVE_WRITERS.add(self)

    # ----------------------------------------------------------------- caller side

    def submit(self, record: RequestRecord) -> bool:
        """Queue ``record`` for writing; False (and counted as dropped) if the queue is full or closed.

        Never blocks and never raises. The record must not be mutated afterwards.
        """
        with self._lock:
            self._counts["submitted"] += 1
            if self._closed:
                self._counts["dropped"] += 1
                return False
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self._counts["dropped"] += 1
            return False
        with self._lock:
            self._accepted += 1
        return True

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every record submitted so far is written and flushed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._accepted
        while True:
            self._flush_requested.set()
            self._wake()
            with self._cond:
                if self._processed >= target:
                    return True
                if not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.05 if remaining is None else min(0.05, remaining))

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, close the current file cleanly and stop the thread."""
        with self._lock:
            if self._closed:
                already = True
            else:
                already = False
                self._closed = True
        if not already:
            # NOTE: put() may wait for room while the thread drains a full queue; bounded by timeout.
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                logger.warning("arrow log: queue still full at close; stopping without draining")
                self._flush_requested.set()
        self._thread.join(timeout)
        _LIVE_WRITERS.discard(self)

    def rotate(self) -> None:
        """Close the current file at the next write (e.g. before a purge rewrites old files)."""
        with self._lock:
            self._rotate_requested = True
        self.flush()

    def stats(self) -> dict[str, Any]:
        """Counters: submitted, written, dropped, errors, lost (rows in failed batches), files,
        bytes, queued, current_file."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            current = self._file
            out["files"] = self._files
            out["bytes"] = self._bytes_closed + (current.bytes if current else 0)
            out["current_file"] = str(current.path) if current and current.path else None
        out["queued"] = self._queue.qsize()
        return out

    def __enter__(self) -> ArrowLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        # NOTE: at most one wake-up token waits in the queue, so flush() polling a stalled
        # writer never takes the queue's room away from records.
        if self._wake_pending.is_set():
            return
        self._wake_pending.set()
        try:
            self._queue.put_nowait(_WAKE)
        except queue.Full:
            self._wake_pending.clear()  # the thread is busy; it checks the flush flag after every item

    # ----------------------------------------------------------------- writer thread

    _rotate_requested = False

    def _run(self) -> None:
        try:
            self._run_loop()
        except Exception:  # a bug here must not pass silently: stop accepting and say why
            logger.exception("arrow log: writer thread failed; further records are dropped")
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._abandon_file()

    def _run_loop(self) -> None:
        buffer: list[RequestRecord] = []
        first_at = 0.0
        stop = False
        interval = max(0.001, self.config.flush_interval_s)
        batch_rows = max(1, self.config.batch_rows)
        while not stop:
            timeout = None if not buffer else max(0.0, first_at + interval - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = _WAKE
            if item is _STOP:
                stop = True
            elif item is _WAKE:
                self._wake_pending.clear()
            else:
                if not buffer:
                    first_at = time.monotonic()
                buffer.append(item)
            flush_now = stop or self._flush_requested.is_set()
            if flush_now:
                self._flush_requested.clear()
                # Everything submitted before flush() was called is on the queue now: drain it.
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                    elif item is _WAKE:
                        self._wake_pending.clear()
                    else:
                        buffer.append(item)
            if flush_now or len(buffer) >= batch_rows or (buffer and time.monotonic() - first_at >= interval):
                while buffer:
                    chunk, buffer = buffer[:batch_rows], buffer[batch_rows:]
                    self._write_records(chunk)
                    with self._cond:
                        self._processed += len(chunk)
                        self._cond.notify_all()
            if flush_now:
                with self._cond:
                    self._cond.notify_all()
        self._close_file()
        with self._cond:
            self._cond.notify_all()

    def _rows_to_batch(self, records: list[RequestRecord]) -> tuple[pa.RecordBatch | None, int]:
        """Build a batch; a record that cannot be converted is skipped and counted, not fatal."""
        rows = []
        bad = 0
        for record in records:
            try:
                rows.append(record_to_row(record))
            except Exception:
                bad += 1
                logger.exception("arrow log: cannot convert record %r", getattr(record, "request_id", None))
        try:
            return rows_to_batch(rows), bad
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            # Isolate the offending rows instead of losing the whole batch.
            good = []
            for row in rows:
                try:
                    rows_to_batch([row])
                    good.append(row)
                except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                    bad += 1
                    logger.error("arrow log: dropping row %r: %s", row.get("request_id"), exc)
            if not good:
                return None, bad
            return rows_to_batch(good), bad

    def _write_records(self, records: list[RequestRecord]) -> None:
        batch, bad = self._rows_to_batch(records)
        if bad:
            with self._lock:
                self._counts["errors"] += 1
                self._counts["lost"] += bad
        if batch is None or batch.num_rows == 0:
            return
        try:
            sink = self._sink_for_write()
            sink.write(batch, self.fsync)
            with self._lock:
                self._counts["written"] += batch.num_rows
            if self.directory is not None and sink.bytes >= self.config.rotate_bytes:
                self._close_file()
        except Exception as exc:
            with self._lock:
                self._counts["errors"] += 1
                self._counts["lost"] += batch.num_rows
                errors = self._counts["errors"]
            if errors <= 3 or errors % 100 == 0:
                logger.error(
                    "arrow log: writing %d rows failed (%d errors so far): %s", batch.num_rows, errors, exc
                )
            # The file's state is unknown after a failed write: start a fresh one next time.
            self._abandon_file()

    def _sink_for_write(self) -> _FileSink:
        now = self.clock()
        current = self._file
        if current is not None and self.directory is not None:
            if self._rotate_requested or now - current.created >= self.config.rotate_age_s:
                self._close_file()
                current = None
        if current is None:
            current = self._open_file(now)
        return current

    def _schema_for_file(self, created: float) -> pa.Schema:
        metadata = dict(LOG_SCHEMA.metadata or {})
        metadata[PID_KEY] = str(self._pid).encode()
        metadata[CREATED_KEY] = repr(created).encode()
        return LOG_SCHEMA.with_metadata(metadata)

    def _open_file(self, now: float) -> _FileSink:
        with self._lock:
            self._rotate_requested = False
        if self.directory is None:
            sink = _FileSink(None, self._external_sink, self._schema_for_file(now), now, owns_raw=False)
        else:
            if self.retention:
                self._apply_retention()
            while True:
                path = self.directory / log_file_name(self.name_prefix, now, self._pid, self._seq)
                self._seq += 1
                try:
                    raw = open(path, "xb")  # exclusive: never share a file with another writer
                except FileExistsError:
                    continue
                break
            try:
                sink = _FileSink(path, raw, self._schema_for_file(now), now, owns_raw=True)
            except Exception:
                raw.close()
                raise
            logger.debug("arrow log: writing %s (schema v%d)", path, SCHEMA_VERSION)
        with self._lock:
            self._file = sink
            self._files += 1
        return sink

    def _close_file(self) -> None:
        current = self._file
        if current is None:
            return
        try:
            current.close()
            if current.owns_raw:
                current.bytes = current.path.stat().st_size if current.path else current.bytes
        except Exception as exc:
            with self._lock:
                self._counts["errors"] += 1
            logger.error("arrow log: closing %s failed: %s", current.path, exc)
        with self._lock:
            self._bytes_closed += current.bytes
            self._file = None

    def _abandon_file(self) -> None:
        current = self._file
        with self._lock:
            self._file = None
            if current is not None:
                self._bytes_closed += current.bytes
        if current is not None and current.owns_raw:
            try:
                current.raw.close()
            except Exception:
                pass

    def _apply_retention(self) -> None:
        from poodle_vllm.arrowlog.retention import apply_retention

        assert self.directory is not None
        try:
            # NOTE: retention compares file mtimes, so it uses the real clock, not the injected one.
            apply_retention(self.directory, self.config)
        except Exception as exc:
            logger.warning("arrow log: retention in %s failed: %s", self.directory, exc)
