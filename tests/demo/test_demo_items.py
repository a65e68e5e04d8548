"""The demo's replay pool: short texts first, then a reserve of the next-shortest, never repeated."""

from __future__ import annotations

import json

from poodle_vllm.demo.runner import DemoSettings, load_items


def test_quick_pool_puts_short_texts_first_and_keeps_a_reserve(tmp_path) -> None:
    rows = [{"text": "x" * n, "label": "positive"} for n in (900, 50, 700, 2000, 300, 701)]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_items(DemoSettings(input_file=str(path), max_chars=700))
    lengths = [len(it.text) for it in items]
    assert sorted(lengths[:3]) == [50, 300, 700]  # the short ones, shuffled
    assert lengths[3:] == [701, 900, 2000]  # then the reserve, shortest first
    assert len(set(map(id, items))) == len(rows)  # every text once
