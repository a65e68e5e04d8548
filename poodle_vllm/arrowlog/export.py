"""Export the request log to Parquet (for DuckDB, Spark, pandas) or JSON Lines.

The Arrow files themselves are readable by pandas without Poodle::

    import pyarrow as pa
    df = pa.ipc.open_stream("requests-....arrows").read_pandas()
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from poodle_vllm.arrowlog.reader import LogSource, ReadReport, iter_batches
from poodle_vllm.arrowlog.schema import LOG_SCHEMA


def _tmp_for(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}")


def export_parquet(
    src: LogSource,
    dest: str | os.PathLike[str],
    columns: Iterable[str] | None = None,
    *,
    report: ReadReport | None = None,
) -> int:
    """Write every readable row of ``src`` to one Parquet file; returns the row count."""
    dest = Path(dest)
    names = list(columns) if columns is not None else None
    schema = (
        LOG_SCHEMA if names is None else pa.schema([LOG_SCHEMA.field(n) for n in names], LOG_SCHEMA.metadata)
    )
    tmp = _tmp_for(dest)
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in iter_batches(src, names, report):
                writer.write_batch(batch)
                rows += batch.num_rows
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return rows


def export_jsonl(
    src: LogSource,
    dest: str | os.PathLike[str],
    columns: Iterable[str] | None = None,
    *,
    report: ReadReport | None = None,
) -> int:
    """Write every readable row of ``src`` as one JSON object per line; returns the row count."""
    dest = Path(dest)
    tmp = _tmp_for(dest)
    rows = 0
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for batch in iter_batches(src, columns, report):
                for row in batch.to_pylist():
                    out.write(json.dumps(row, ensure_ascii=False))
                    out.write("\n")
                    rows += 1
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return rows
