"""Reading the Arrow request log: files of any schema version, torn tails skipped, never fatal.

A log file is an Arrow IPC stream. A file still being written, or left by a killed process,
may end in a partly written batch (a *torn tail*); its complete batches are returned and the
tail is counted in a :class:`ReadReport`. A file that is not an Arrow stream at all is reported
as corrupt and skipped; other files' rows are never lost because of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import pyarrow as pa

from poodle_vllm.arrowlog.schema import LOG_SCHEMA, conform_batch, row_to_record, schema_version_of
from poodle_vllm.arrowlog.writer import CREATED_KEY, LOG_SUFFIX, PID_KEY
from poodle_vllm.types import RequestRecord

logger = logging.getLogger(__name__)

LogSource = Union[str, os.PathLike, bytes, pa.Buffer]
"""A log directory, one log file, or an in-memory stream (``bytes`` / ``pa.Buffer``)."""

_CONTINUATION = b"\xff\xff\xff\xff"
_END_OF_STREAM = _CONTINUATION + b"\x00\x00\x00\x00"
_READ_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)


@dataclass
class ReadReport:
    """What a read saw: how many files and batches, which were torn or corrupt."""

    files: int = 0
    batches: int = 0
    rows: int = 0
    torn_files: list[str] = field(default_factory=list)
    """Files whose last batch (or schema header) was cut short; their complete batches were read."""
    torn_batches: int = 0
    corrupt_files: dict[str, str] = field(default_factory=dict)
    """Files skipped entirely (not an Arrow stream, or an incompatible schema), with the reason."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LogFileInfo:
    """One log file as ``poodle logs list`` shows it."""

    path: str
    bytes: int
    rows: int
    batches: int
    schema_version: int | None
    closed: bool
    """The file ends with the end-of-stream marker (its writer closed it)."""
    torn: bool
    writer_pid: int | None
    created: float | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_log_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Log files in ``directory``, oldest first (names sort by creation time); [] if it is missing."""
    root = Path(directory)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.endswith(LOG_SUFFIX) and p.is_file())


def _sources(source: LogSource) -> list[Path | pa.Buffer]:
    if isinstance(source, (bytes, bytearray)):
        return [pa.py_buffer(bytes(source))]
    if isinstance(source, pa.Buffer):
        return [source]
    path = Path(source)
    if path.is_dir():
        return list(list_log_files(path))
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no Arrow log at {path}")


def _label(src: Path | pa.Buffer) -> str:
    return str(src) if isinstance(src, Path) else "<memory>"


def _open(src: Path | pa.Buffer) -> Any:
    return pa.OSFile(str(src), "rb") if isinstance(src, Path) else pa.BufferReader(src)


def _head_and_tail(src: Path | pa.Buffer) -> tuple[bytes, bytes, int]:
    if isinstance(src, Path):
        size = src.stat().st_size
        with open(src, "rb") as f:
            head = f.read(4)
            f.seek(max(0, size - len(_END_OF_STREAM)))
            tail = f.read()
        return head, tail, size
    data = src.to_pybytes()
    return data[:4], data[-len(_END_OF_STREAM) :], len(data)


def iter_file_batches(
    src: Path | pa.Buffer, report: ReadReport | None = None
) -> Iterator[tuple[pa.Schema, pa.RecordBatch]]:
    """The complete batches of one stream, as written (not conformed), with the file's schema."""
    report = report if report is not None else ReadReport()
    label = _label(src)
    report.files += 1
    try:
        stream = _open(src)
    except _READ_ERRORS as exc:
        report.corrupt_files[label] = f"cannot open: {exc}"
        logger.warning("arrow log: skipping %s: cannot open (%s)", label, exc)
        return
    with stream:
        try:
            reader = pa.ipc.open_stream(stream)
        except _READ_ERRORS as exc:
            head, _, size = _head_and_tail(src)
            if size == 0 or head == _CONTINUATION[: len(head)]:
                # An Arrow stream whose schema header was cut short: a writer died at once.
                report.torn_files.append(label)
                report.torn_batches += 1
            else:
                report.corrupt_files[label] = f"not an Arrow IPC stream ({exc})"
                logger.warning("arrow log: skipping %s: not an Arrow IPC stream (%s)", label, exc)
            return
        schema = reader.schema
        complete = 0
        while True:
            try:
                batch = reader.read_next_batch()
                batch.validate()
            except StopIteration:
                return
            except _READ_ERRORS as exc:
                report.torn_files.append(label)
                report.torn_batches += 1
                logger.info(
                    "arrow log: %s ends in a torn batch after %d complete ones (%s)", label, complete, exc
                )
                return
            complete += 1
            report.batches += 1
            report.rows += batch.num_rows
            yield schema, batch


def iter_batches(
    source: LogSource, columns: Iterable[str] | None = None, report: ReadReport | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of every file in ``source``, conformed to the current schema."""
    report = report if report is not None else ReadReport()
    names = list(columns) if columns is not None else None
    if names is not None:
        unknown = sorted(set(names) - set(LOG_SCHEMA.names))
        if unknown:
            raise ValueError(f"unknown log column(s) {unknown}; valid: {LOG_SCHEMA.names}")
    for src in _sources(source):
        for _schema, batch in iter_file_batches(src, report):
            try:
                conformed = conform_batch(batch)
            except _READ_ERRORS as exc:
                label = _label(src)
                report.corrupt_files[label] = f"incompatible schema: {exc}"
                logger.warning("arrow log: skipping rest of %s: incompatible schema (%s)", label, exc)
                break
            yield conformed.select(names) if names is not None else conformed


def read_log_table(
    source: LogSource, columns: Iterable[str] | None = None, *, report: ReadReport | None = None
) -> pa.Table:
    """All rows of ``source`` (a directory, a file or an in-memory stream) as one table.

    Pass a :class:`ReadReport` to learn how many files and batches were torn or corrupt.
    """
    names = list(columns) if columns is not None else None
    batches = list(iter_batches(source, names, report))
    schema = (
        LOG_SCHEMA if names is None else pa.schema([LOG_SCHEMA.field(n) for n in names], LOG_SCHEMA.metadata)
    )
    return pa.Table.from_batches(batches, schema=schema)


def read_log(source: LogSource, columns: Iterable[str] | None = None) -> tuple[pa.Table, ReadReport]:
    """:func:`read_log_table` plus its :class:`ReadReport`."""
    report = ReadReport()
    return read_log_table(source, columns, report=report), report


def iter_records(source: LogSource, report: ReadReport | None = None) -> Iterator[RequestRecord]:
    """Every row of ``source`` as a :class:`RequestRecord`, oldest file first."""
    for batch in iter_batches(source, report=report):
        for row in batch.to_pylist():
            yield row_to_record(row)


def count_records(source: LogSource, report: ReadReport | None = None) -> int:
    """Number of readable rows in ``source`` (torn tails and corrupt files excluded)."""
    report = report if report is not None else ReadReport()
    total = 0
    for src in _sources(source):
        for _schema, batch in iter_file_batches(src, report):
            total += batch.num_rows
    return total


def describe_log_file(path: str | os.PathLike[str]) -> LogFileInfo:
    """Rows, batches, schema version and state (closed, torn, corrupt) of one log file."""
    src = Path(path)
    report = ReadReport()
    rows = batches = 0
    schema: pa.Schema | None = None
    for file_schema, batch in iter_file_batches(src, report):
        schema = file_schema
        rows += batch.num_rows
        batches += 1
    if schema is None and not report.corrupt_files:
        try:  # a file with a schema but no batch yet
            with pa.OSFile(str(src), "rb") as f:
                schema = pa.ipc.open_stream(f).schema
        except _READ_ERRORS:
            schema = None
    _, tail, size = _head_and_tail(src)
    meta = (schema.metadata or {}) if schema is not None else {}
    pid = meta.get(PID_KEY)
    created = meta.get(CREATED_KEY)
    return LogFileInfo(
        path=str(src),
        bytes=size,
        rows=rows,
        batches=batches,
        schema_version=schema_version_of(schema) if schema is not None else None,
        closed=tail == _END_OF_STREAM,
        torn=bool(report.torn_files),
        writer_pid=int(pid) if pid else None,
        created=float(created) if created else None,
        error=next(iter(report.corrupt_files.values()), None),
    )


def is_file_active(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is not closed and its writer process (pid in the name) is still alive.

    Such a file must not be rewritten or deleted: its writer still appends to it.
    """
    p = Path(path)
    _, tail, _ = _head_and_tail(p)
    if tail == _END_OF_STREAM:
        return False
    pid = writer_pid_from_name(p.name)
    return pid is not None and _pid_alive(pid)


def writer_pid_from_name(name: str) -> int | None:
    """The writer's pid encoded in a log file name (``<prefix>-<time>-<pid>-<seq>.arrows``)."""
    parts = name[: -len(LOG_SUFFIX)].split("-") if name.endswith(LOG_SUFFIX) else []
    if len(parts) < 4 or not parts[-2].isdigit():
        return None
    return int(parts[-2])


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
