"""Retention (delete the oldest log files past a size or age budget) and purge (remove rows).

Both leave alone a file whose writer is still appending to it (not closed, writer pid alive):
deleting or replacing it would send the writer's later rows into an unlinked file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from poodle_vllm.arrowlog.reader import ReadReport, is_file_active, iter_file_batches, list_log_files
from poodle_vllm.arrowlog.schema import conform_batch
from poodle_vllm.config import LogConfig

logger = logging.getLogger(__name__)


def apply_retention(
    directory: str | os.PathLike[str], config: LogConfig | None = None, *, now: float | None = None
) -> list[Path]:
    """Delete the oldest log files while the total exceeds ``max_total_bytes``, and every file
    last written more than ``max_age_days`` ago. Returns the deleted paths."""
    config = config or LogConfig()
    now = time.time() if now is None else now
    cutoff = now - config.max_age_days * 86400.0
    entries = []
    for path in list_log_files(directory):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # deleted meanwhile (another process applied retention)
        entries.append((path, st.st_size, st.st_mtime))
    total = sum(size for _, size, _ in entries)
    deleted: list[Path] = []
    for path, size, mtime in entries:  # oldest first
        expired = mtime < cutoff
        if not expired and total <= config.max_total_bytes:
            continue
        if is_file_active(path):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("arrow log retention: cannot delete %s: %s", path, exc)
            continue
        total -= size
        deleted.append(path)
        logger.info(
            "arrow log retention: deleted %s (%s)", path.name, "expired" if expired else "over budget"
        )
    return deleted


@dataclass
class PurgeReport:
    """What :func:`purge_log` did."""

    rows_removed: int = 0
    files_rewritten: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    """Files that held only matching rows."""
    skipped_active: list[str] = field(default_factory=list)
    """Files still being written by a live process; rotate or stop the writer and purge again."""
    skipped_corrupt: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _matches(batch: pa.RecordBatch, tenant: str | None, task_id: str | None) -> pa.Array:
    conformed = conform_batch(batch)
    mask = pa.array([True] * batch.num_rows, pa.bool_())
    if tenant is not None:
        mask = pc.and_(mask, pc.fill_null(pc.equal(conformed.column("tenant"), tenant), False))
    if task_id is not None:
        mask = pc.and_(mask, pc.fill_null(pc.equal(conformed.column("task_id"), task_id), False))
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _purge_file(path: Path, tenant: str | None, task_id: str | None, report: PurgeReport) -> None:
    read = ReadReport()
    kept: list[pa.RecordBatch] = []
    schema: pa.Schema | None = None
    removed = 0
    for file_schema, batch in iter_file_batches(path, read):
        schema = file_schema
        mask = _matches(batch, tenant, task_id)
        hits = pc.sum(mask).as_py() or 0
        if hits:
            removed += hits
            batch = batch.filter(pc.invert(mask))
        if batch.num_rows:
            kept.append(batch)
    if read.corrupt_files:
        report.skipped_corrupt.append(str(path))
        return
    if not removed:
        return
    if not kept:
        path.unlink()
        report.files_deleted.append(str(path))
    else:
        assert schema is not None
        # Keep the file's own schema (its version and any newer columns); replace atomically.
        tmp = path.with_name(f".{path.name}.purge-tmp")
        st = path.stat()
        with open(tmp, "wb") as raw:
            with pa.ipc.new_stream(raw, schema) as writer:
                for batch in kept:
                    writer.write_batch(batch)
            raw.flush()
            os.fsync(raw.fileno())
        os.utime(tmp, (st.st_atime, st.st_mtime))  # retention age follows the rows, not the purge
        os.replace(tmp, path)
        report.files_rewritten.append(str(path))
    _fsync_dir(path.parent)
    report.rows_removed += removed


def purge_log(
    directory: str | os.PathLike[str],
    tenant: str | None = None,
    task_id: str | None = None,
    *,
    include_active: bool = False,
) -> PurgeReport:
    """Remove every row matching all given filters (``tenant`` key ``cache_salt|lora``, ``task_id``).

    Each affected file is rewritten to a temporary file and atomically replaced (or deleted when
    nothing is left). Files a live writer still appends to are skipped unless ``include_active``.
    """
    if tenant is None and task_id is None:
        raise ValueError("purge needs a tenant or a task id")
    report = PurgeReport()
    for path in list_log_files(directory):
        if not include_active and is_file_active(path):
            report.skipped_active.append(str(path))
            logger.warning("arrow log purge: %s is still being written; skipped", path.name)
            continue
        try:
            _purge_file(path, tenant, task_id, report)
        except (pa.ArrowException, OSError, ValueError) as exc:
            # One unreadable file must not stop the purge of the others; it is reported instead.
            logger.error("arrow log purge: cannot rewrite %s: %s", path.name, exc)
            report.skipped_corrupt.append(str(path))
    return report


def purge_records(
    directory: str | os.PathLike[str], tenant: str | None = None, task_id: str | None = None
) -> int:
    """:func:`purge_log` returning only the number of rows removed."""
    return purge_log(directory, tenant=tenant, task_id=task_id).rows_removed
