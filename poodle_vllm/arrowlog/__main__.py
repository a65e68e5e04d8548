"""Demo: ``python -m poodle_vllm.arrowlog [N]`` writes N simulated records and prints the cost."""

from __future__ import annotations

import sys
import tempfile
import time

from poodle_vllm.arrowlog.reader import read_log
from poodle_vllm.arrowlog.writer import ArrowLogWriter
from poodle_vllm.config import LogConfig
from poodle_vllm.types import RequestRecord


def _demo(n: int = 20_000) -> None:
    """Write ``n`` simulated records to a temporary folder and print what it cost."""
    records = [
        RequestRecord(
            request_id=f"demo-{i}",
            arrival_time=1.0 + i,
            finish_time=1.2 + i,
            prompt_token_ids=list(range(100 + i % 50)),
            output_token_ids=[31176, 30, 2],
            finish_reason="stop",
            block_hashes=[i * 7919 + k for k in range(6)],
            block_size=16,
            prompt_text="Classify the sentiment of this review: " + "good " * (i % 40),
            output_text="Positive.",
        )
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        writer = ArrowLogWriter(tmp, LogConfig(queue_size=n))
        start = time.perf_counter()
        for record in records:
            writer.submit(record)
        submitted = time.perf_counter() - start
        writer.flush(60.0)
        total = time.perf_counter() - start
        writer.close()
        stats = writer.stats()
        table, report = read_log(tmp)
    print(f"records: {n}, written: {stats['written']}, dropped: {stats['dropped']}, files: {stats['files']}")
    print(f"submit(): {submitted / n * 1e6:.2f} us per record (caller side)")
    print(f"writer throughput: {n / total:,.0f} records/s, {stats['bytes'] / n:.0f} bytes per record")
    print(f"read back: {table.num_rows} rows, torn batches: {report.torn_batches}")


if __name__ == "__main__":
    _demo(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
