"""The Arrow request log: one row per finished request, written off the engine's hot path.

* :mod:`~poodle_vllm.arrowlog.schema` - the versioned Arrow schema and record <-> row conversion;
* :mod:`~poodle_vllm.arrowlog.writer` - :class:`ArrowLogWriter`, a bounded-queue, crash-safe writer;
* :mod:`~poodle_vllm.arrowlog.reader` - reading files of any schema version, torn tails skipped;
* :mod:`~poodle_vllm.arrowlog.retention` - retention by size / age, purge by tenant / task;
* :mod:`~poodle_vllm.arrowlog.export` - Parquet and JSON Lines export.

Imports neither torch nor vllm.
"""

from poodle_vllm.arrowlog.export import export_jsonl, export_parquet
from poodle_vllm.arrowlog.reader import (
    LogFileInfo,
    ReadReport,
    count_records,
    describe_log_file,
    is_file_active,
    iter_batches,
    iter_records,
    list_log_files,
    read_log,
    read_log_table,
)
from poodle_vllm.arrowlog.retention import PurgeReport, apply_retention, purge_log, purge_records
from poodle_vllm.arrowlog.schema import (
    LOG_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    conform_batch,
    record_to_row,
    records_to_batch,
    row_to_record,
    schema_version_of,
)
from poodle_vllm.arrowlog.writer import LOG_SUFFIX, ArrowLogWriter

__all__ = [
    "LOG_SCHEMA",
    "LOG_SUFFIX",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "ArrowLogWriter",
    "LogFileInfo",
    "PurgeReport",
    "ReadReport",
    "apply_retention",
    "conform_batch",
    "count_records",
    "describe_log_file",
    "export_jsonl",
    "export_parquet",
    "is_file_active",
    "iter_batches",
    "iter_records",
    "list_log_files",
    "purge_log",
    "purge_records",
    "read_log",
    "read_log_table",
    "record_to_row",
    "records_to_batch",
    "row_to_record",
    "schema_version_of",
]
